//! The signature check: the keys a token may name, tried with the configured verifier.

use crate::core::crypto::verifier::SignatureVerifier;
use crate::core::denial::{Denial, Reason};
use crate::core::keys::jwk_set::KeySet;
use crate::core::token::jws::Token;

/// The fingerprint of the key that verified `token`. With a `kid`, only keys with that kid
/// are tried; without one, every key that fits the algorithm.
pub fn verify(
    verifier: &dyn SignatureVerifier,
    set: &KeySet,
    token: &Token<'_>,
) -> Result<u64, Denial> {
    let mut tried = false;
    let candidates: Box<dyn Iterator<Item = _>> = match &token.kid {
        Some(kid) => Box::new(set.by_kid(kid)),
        None => Box::new(set.keys.iter()),
    };
    let signed = token.signed();
    for key in candidates.filter(|k| k.fits(token.alg)) {
        tried = true;
        if verifier.verify(&key.key, &signed) {
            return Ok(key.fingerprint);
        }
    }
    Err(if tried {
        Denial::new(Reason::BadSignature, "signature does not verify")
    } else if token.kid.is_some() {
        Denial::new(
            Reason::UnknownKid,
            "no key with the token's kid fits its alg",
        )
    } else {
        Denial::new(Reason::UnknownKid, "no key fits the token's alg")
    })
}
