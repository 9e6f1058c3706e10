//! Signatures: the accepted algorithms, public keys (DER, prepared RSA), the verifier trait with
//! its pure-Rust implementation, and the host function's wire format and known-answer test.
//! A leaf of the core: it imports nothing from the rest of it.

pub mod alg;
pub mod der;
pub mod foreign_wire;
pub mod known_answer;
pub mod public_key;
pub mod pure;
pub mod rsa;
pub mod verifier;
