pub mod alg;
pub mod der;
pub mod foreign_wire;
pub mod known_answer;
pub mod public_key;
pub mod pure;
pub mod rsa;
pub mod verifier;
