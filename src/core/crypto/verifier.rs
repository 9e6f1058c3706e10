//! Signature verification behind one small trait, so the request path does not care whether
//! Envoy's BoringSSL (through a foreign function) or pure Rust does the work.

use crate::core::keys::jwk_set::Jwk;
use crate::core::token::jws::Token;

pub trait SignatureVerifier {
    /// True only when `token`'s signature over its signing input verifies with `key` under
    /// `token.alg`. The caller has already checked that the key fits the algorithm.
    fn verify(&self, key: &Jwk, token: &Token<'_>) -> bool;

    /// Short name for logs and stats.
    fn name(&self) -> &'static str;
}
