//! JWKS parsing (keys/jwk_set.rs) and RFC 7638 thumbprints of each key object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::crypto::alg::ALL;
use okta_jwt_filter::core::crypto::public_key::{KeyMaterial, PublicKey};
use okta_jwt_filter::core::keys::jwk_set::{self, JwksError};
use okta_jwt_filter::core::token::thumbprint;

fuzz_target!(|data: &[u8]| {
    let parsed = jwk_set::parse(data);
    // The same document as a JSON value parses the same way.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if data.len() <= jwk_set::MAX_JWKS_BYTES {
            let again = jwk_set::parse_value(&value);
            // (A repeated member is an error for one and the last value for the other.)
            if let (Ok(a), Ok(b)) = (&parsed, &again) {
                assert_eq!(a.set, b.set);
            }
        }
        if let Some(keys) = value.get("keys").and_then(|k| k.as_array()) {
            for key in keys.iter().filter_map(|k| k.as_object()) {
                if let Some(t) = thumbprint::sha256(key) {
                    assert_eq!(t.len(), 43, "base64url of 32 bytes");
                }
            }
        }
    }
    match parsed {
        Ok(p) => {
            assert!(!p.set.keys.is_empty());
            assert!(p.set.keys.len() <= jwk_set::MAX_KEYS);
            for key in &p.set.keys {
                // The prepared forms are what the material gives.
                let again = PublicKey::new(key.key.material.clone()).expect("material re-prepares");
                assert_eq!(again, key.key);
                if let KeyMaterial::Rsa { .. } = key.key.material {
                    let bits = key.key.rsa.as_ref().expect("prepared RSA").0.bits();
                    assert!((jwk_set::MIN_RSA_BITS..=jwk_set::MAX_RSA_BITS).contains(&bits));
                }
                assert!(ALL.iter().any(|a| key.fits(*a)) || key.alg.is_some());
                if let Some(kid) = &key.kid {
                    assert!(p.set.has_kid(kid));
                }
                assert!(p.set.has_fingerprint(key.fingerprint));
            }
        }
        Err(JwksError::TooLarge) => assert!(data.len() > jwk_set::MAX_JWKS_BYTES),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
