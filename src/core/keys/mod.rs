//! Verification keys: JWK Set parsing, where a provider's keys come from, and their fetch
//! lifecycle shared by every VM through the store. From the rest of the core it may import
//! only `crypto` (algorithms, public keys) and `store`.

pub mod jwk_set;
pub mod lifecycle;
pub mod source;
pub mod state;
