//! Signature verification behind one small trait, so the request path does not care whether
//! Envoy's BoringSSL (through a foreign function) or pure Rust does the work.

use crate::core::crypto::alg::Alg;
use crate::core::crypto::public_key::PublicKey;

/// What a signature covers and claims, in the shape every verifier needs.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub alg: Alg,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    pub signature: &'a [u8],
    /// The whole compact JWS: jwt-simple only verifies whole tokens.
    pub compact: &'a str,
    /// The token's `exp`, to pin jwt-simple's clock (claims are checked elsewhere).
    pub exp: u64,
}

pub trait SignatureVerifier {
    /// True only when `signed`'s signature verifies with `key` under `signed.alg`. The caller
    /// has already checked that the key fits the algorithm.
    fn verify(&self, key: &PublicKey, signed: &Signed<'_>) -> bool;

    /// Short name for logs and stats.
    fn name(&self) -> &'static str;
}
