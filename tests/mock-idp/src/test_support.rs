//! Shared fixtures: RSA key generation is slow in debug builds, so tests share a few keys.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::keys::SigningKey;
use crate::state::{App, Config};

pub fn test_keys() -> &'static [SigningKey] {
    static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..2)
            .map(|_| SigningKey::generate().expect("keygen"))
            .collect()
    })
}

/// An app with server `default` holding the shared keys and a 3600 s lifetime.
pub fn test_app() -> Arc<App> {
    test_app_with_key_dir(None)
}

pub fn test_app_with_key_dir(key_dir: Option<PathBuf>) -> Arc<App> {
    let app = App::new(
        Config {
            public_url: "http://idp.test".into(),
            key_dir,
            lifetime_s: 3600,
        },
        300,
    );
    app.add_server("default", test_keys().to_vec());
    Arc::new(app)
}

pub fn decode_part(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

/// Rebuilds the public key from a published JWK, as a relying party would.
pub fn jwk_public_key(jwk: &Value) -> rsa::RsaPublicKey {
    let uint = |name: &str| {
        let raw = URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().expect("jwk member"))
            .expect("base64url");
        rsa::BigUint::from_bytes_be(&raw)
    };
    rsa::RsaPublicKey::new(uint("n"), uint("e")).expect("valid RSA key")
}

/// Verifies an RS*/PS* compact JWS against a JWK with the rsa crate.
pub fn verify_rsa(token: &str, jwk: &Value, alg: &str) -> bool {
    use rsa::signature::Verifier;
    use rsa::{pkcs1v15, pss};
    use sha2::{Sha256, Sha384, Sha512};
    let Some((input, sig)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(sig) = URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let key = jwk_public_key(jwk);
    let input = input.as_bytes();
    macro_rules! check {
        ($module:ident, $digest:ty) => {{
            let Ok(sig) = $module::Signature::try_from(sig.as_slice()) else {
                return false;
            };
            $module::VerifyingKey::<$digest>::new(key)
                .verify(input, &sig)
                .is_ok()
        }};
    }
    match alg {
        "RS256" => check!(pkcs1v15, Sha256),
        "RS384" => check!(pkcs1v15, Sha384),
        "RS512" => check!(pkcs1v15, Sha512),
        // VerifyingKey::new expects salt length = hash length, so this also checks the salt.
        "PS256" => check!(pss, Sha256),
        "PS384" => check!(pss, Sha384),
        "PS512" => check!(pss, Sha512),
        _ => false,
    }
}
