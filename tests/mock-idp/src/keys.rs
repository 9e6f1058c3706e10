//! RSA-2048 signing keys and their JWK / PEM forms.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const KEY_BITS: usize = 2048;

#[derive(Clone, Debug)]
pub struct SigningKey {
    kid: String,
    private: RsaPrivateKey,
}

impl SigningKey {
    pub fn generate() -> Result<Self, String> {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), KEY_BITS)
            .map_err(|e| format!("RSA key generation failed: {e}"))?;
        Ok(Self::from_private(private))
    }

    /// Accepts PKCS#8 ("BEGIN PRIVATE KEY") and, as a courtesy, PKCS#1 ("BEGIN RSA PRIVATE KEY").
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let private = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|e| format!("not a PKCS#8 RSA private key: {e}"))?;
        Ok(Self::from_private(private))
    }

    /// The kid is derived from the public key so that keys loaded from `--key-dir` keep their
    /// kid across restarts; generated keys are random, so their kids are too.
    pub fn from_private(private: RsaPrivateKey) -> Self {
        let der = spki_der(&private.to_public_key());
        let digest = Sha256::digest(&der);
        let kid = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        SigningKey { kid, private }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn private(&self) -> &RsaPrivateKey {
        &self.private
    }

    pub fn public(&self) -> RsaPublicKey {
        self.private.to_public_key()
    }

    pub fn to_pkcs8_pem(&self) -> Result<String, String> {
        self.private
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| format!("PKCS#8 encoding failed: {e}"))
    }

    /// The public key as an SPKI PEM document with a trailing newline: the HMAC secret a
    /// confused verifier would use in the RS/HS forgery.
    pub fn public_spki_pem(&self) -> String {
        let mut pem = self
            .public()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default();
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem
    }

    pub fn jwk(&self) -> Value {
        let public = self.public();
        json!({
            "kty": "RSA",
            "alg": "RS256",
            "kid": self.kid,
            "use": "sig",
            "e": b64_uint(&public.e().to_bytes_be()),
            "n": b64_uint(&public.n().to_bytes_be()),
        })
    }
}

fn spki_der(public: &RsaPublicKey) -> Vec<u8> {
    public
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default()
}

/// JWK integers are unsigned big-endian with no leading zero octets.
fn b64_uint(be: &[u8]) -> String {
    let first = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    URL_SAFE_NO_PAD.encode(&be[first..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test_keys;

    #[test]
    fn jwk_has_okta_shape() {
        let key = &test_keys()[0];
        let jwk = key.jwk();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["e"], "AQAB");
        assert_eq!(jwk["kid"], key.kid());
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256);
        assert_ne!(n[0], 0);
        assert_eq!(key.kid().len(), 16);
        assert!(key.kid().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn pem_round_trip_keeps_kid() {
        let key = &test_keys()[0];
        let pem = key.to_pkcs8_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert!(SigningKey::from_pem("garbage").is_err());
    }

    #[test]
    fn spki_pem_is_a_public_key_document() {
        let pem = test_keys()[0].public_spki_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
    }

    #[test]
    fn b64_uint_strips_leading_zeros() {
        assert_eq!(
            b64_uint(&[0, 0, 1, 0, 1]),
            URL_SAFE_NO_PAD.encode([1, 0, 1])
        );
    }
}
