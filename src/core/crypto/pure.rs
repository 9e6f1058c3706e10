//! The pure-Rust signature path. Used for algorithms Envoy's foreign function cannot do (PSS,
//! EdDSA) and on hosts that do not offer it at all. RS256/384/512 go through this crate's own
//! Montgomery verifier (`crypto::rsa`, checked against Wycheproof), several times faster in
//! wasm than the bignum code under jwt-simple; ES256, ES384 and EdDSA go to the curve crates
//! jwt-simple itself uses, on the signing input (jwt-simple parses the header again and cannot
//! read one holding a `jwk` object, as a DPoP proof's does); PS* go to the `rsa` crate's
//! RSASSA-PSS on the signing input, for the same reason.

use jwt_simple::prelude::*;

use crate::core::crypto::alg::Alg;
use crate::core::crypto::public_key::{KeyMaterial, PublicKey, MAX_RSA_BITS};
use crate::core::crypto::verifier::{SignatureVerifier, Signed};

#[derive(Debug, Default, Clone, Copy)]
pub struct PureVerifier;

/// jwt-simple checks claims as part of verifying; the filter checks claims itself (with its
/// own skew and reasons), so jwt-simple's clock is pinned to the token's own `exp` and future
/// tokens are accepted. Only its signature check can then fail.
fn options(signed: &Signed<'_>) -> VerificationOptions {
    let exp = signed.exp;
    VerificationOptions {
        accept_future: true,
        time_tolerance: None,
        max_validity: None,
        max_token_length: None,
        artificial_time: Some(UnixTimeStamp::from_secs(exp)),
        ..Default::default()
    }
}

/// ES256, ES384 and EdDSA on `signed.signing_input`; `None` for other algorithms.
fn curve(key: &PublicKey, signed: &Signed<'_>) -> Option<bool> {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use sha2::{Digest, Sha256, Sha384};
    let input = signed.signing_input;
    let sig = signed.signature;
    Some(match (&key.material, signed.alg) {
        (KeyMaterial::Ec { x, y, .. }, Alg::ES256) => {
            let k = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(x, y)).ok();
            let s = p256::ecdsa::Signature::from_slice(sig).ok();
            matches!((k, s), (Some(k), Some(s))
                if k.verify_prehash(&Sha256::digest(input), &s).is_ok())
        }
        (KeyMaterial::Ec { x, y, .. }, Alg::ES384) => {
            let k = p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(x, y)).ok();
            let s = p384::ecdsa::Signature::from_slice(sig).ok();
            matches!((k, s), (Some(k), Some(s))
                if k.verify_prehash(&Sha384::digest(input), &s).is_ok())
        }
        (KeyMaterial::Ed25519 { x }, Alg::EdDSA) => {
            let k = ed25519_compact::PublicKey::from_slice(x).ok();
            let s = ed25519_compact::Signature::from_slice(sig).ok();
            matches!((k, s), (Some(k), Some(s)) if k.verify(input, &s).is_ok())
        }
        _ => return None,
    })
}

/// PS256, PS384 and PS512 on `signed.signing_input` (RSASSA-PSS with MGF1 and a salt as long
/// as the hash, RFC 7518 section 3.5); `None` for other algorithms.
fn pss(key: &PublicKey, signed: &Signed<'_>) -> Option<bool> {
    use rsa::signature::Verifier;
    use sha2::{Sha256, Sha384, Sha512};
    let KeyMaterial::Rsa { n, e } = &key.material else {
        return None;
    };
    if !matches!(signed.alg, Alg::PS256 | Alg::PS384 | Alg::PS512) {
        return None;
    }
    let (n, e) = (
        rsa::BigUint::from_bytes_be(n),
        rsa::BigUint::from_bytes_be(e),
    );
    // The key set already bounds moduli to MAX_RSA_BITS; the crate's own default is lower.
    let key = rsa::RsaPublicKey::new_with_max_size(n, e, MAX_RSA_BITS).ok();
    let sig = rsa::pss::Signature::try_from(signed.signature).ok();
    let (Some(key), Some(sig)) = (key, sig) else {
        return Some(false);
    };
    let input = signed.signing_input;
    Some(match signed.alg {
        Alg::PS256 => rsa::pss::VerifyingKey::<Sha256>::new(key)
            .verify(input, &sig)
            .is_ok(),
        Alg::PS384 => rsa::pss::VerifyingKey::<Sha384>::new(key)
            .verify(input, &sig)
            .is_ok(),
        _ => rsa::pss::VerifyingKey::<Sha512>::new(key)
            .verify(input, &sig)
            .is_ok(),
    })
}

/// An uncompressed SEC1 point.
fn sec1(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(0x04);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    point
}

impl SignatureVerifier for PureVerifier {
    fn verify(&self, key: &PublicKey, token: &Signed<'_>) -> bool {
        if let (Some(prepared), Alg::RS256 | Alg::RS384 | Alg::RS512) = (&key.rsa, token.alg) {
            return prepared.0.verify_pkcs1v15(
                token.alg.hash(),
                token.signing_input,
                token.signature,
            );
        }
        if let Some(verified) = curve(key, token).or_else(|| pss(key, token)) {
            return verified;
        }
        let opts = Some(options(token));
        let raw = token.compact;
        type Claims = JWTClaims<serde_json::Value>;
        let result: Result<Claims, _> =
            match (&key.material, token.alg) {
                (KeyMaterial::Rsa { n, e }, alg) => match alg {
                    Alg::RS256 => RS256PublicKey::from_components(n, e)
                        .and_then(|k| k.verify_token(raw, opts)),
                    Alg::RS384 => RS384PublicKey::from_components(n, e)
                        .and_then(|k| k.verify_token(raw, opts)),
                    Alg::RS512 => RS512PublicKey::from_components(n, e)
                        .and_then(|k| k.verify_token(raw, opts)),
                    _ => return false,
                },
                _ => return false,
            };
        result.is_ok()
    }

    fn name(&self) -> &'static str {
        "pure"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::jwk_set as jwks;
    use crate::core::keys::jwk_set::Jwk;
    use crate::core::test_keys;
    use crate::core::token::jws;

    fn key(jwk: &str) -> Jwk {
        let set = format!("{{\"keys\":[{jwk}]}}");
        jwks::parse(set.as_bytes()).unwrap().set.keys.remove(0)
    }

    fn flip_last_sig_char(token: &str) -> String {
        let mut t = token.to_string();
        let last = t.pop().unwrap();
        t.push(if last == 'A' { 'Q' } else { 'A' });
        t
    }

    #[test]
    fn rfc7515_a2_rs256_and_a3_es256_verify() {
        for (jwk, raw) in [
            (test_keys::RFC7515_A2_JWK, test_keys::RFC7515_A2_TOKEN),
            (test_keys::RFC7515_A3_JWK, test_keys::RFC7515_A3_TOKEN),
        ] {
            let k = key(jwk);
            let t = jws::parse(raw).unwrap();
            assert!(PureVerifier.verify(&k.key, &t.signed()), "{raw}");
            let bad = flip_last_sig_char(raw);
            if let Ok(t) = jws::parse(&bad) {
                assert!(!PureVerifier.verify(&k.key, &t.signed()));
            }
        }
    }

    #[test]
    fn wrong_key_or_tampered_payload_fails() {
        let rsa = key(test_keys::RFC7520_RSA_JWK);
        let t = jws::parse(test_keys::RFC7515_A2_TOKEN).unwrap();
        assert!(
            !PureVerifier.verify(&rsa.key, &t.signed()),
            "A.2 token with RFC 7520's key"
        );
        let (h, rest) = test_keys::RFC7515_A2_TOKEN.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let forged = format!(
            "{h}.{}.{s}",
            jws::tests::b64(&serde_json::json!({"iss": "joe", "exp": 1300819380, "admin": true}))
        );
        let t = jws::parse(&forged).unwrap();
        assert!(!PureVerifier.verify(&key(test_keys::RFC7515_A2_JWK).key, &t.signed()));
    }

    /// Every algorithm, signed by jwt-simple's own signers with fresh keys.
    #[test]
    fn every_supported_algorithm_round_trips() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let claims = || Claims::create(Duration::from_hours(1)).with_audience("api://default");
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);

        let rsa = RS256KeyPair::generate(2048).unwrap();
        let c = rsa.public_key().to_components();
        let rsa_jwk = format!(r#"{{"kty":"RSA","n":"{}","e":"{}"}}"#, b(&c.n), b(&c.e));
        let der = rsa.to_der().unwrap();
        let tokens = [
            (Alg::RS256, rsa.sign(claims()).unwrap()),
            (
                Alg::RS384,
                RS384KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
            (
                Alg::RS512,
                RS512KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
            (
                Alg::PS256,
                PS256KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
            (
                Alg::PS384,
                PS384KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
            (
                Alg::PS512,
                PS512KeyPair::from_der(&der)
                    .unwrap()
                    .sign(claims())
                    .unwrap(),
            ),
        ];
        let k = key(&rsa_jwk);
        for (alg, raw) in &tokens {
            let t = jws::parse(raw).unwrap();
            assert_eq!(t.alg, *alg);
            assert!(PureVerifier.verify(&k.key, &t.signed()), "{alg:?}");
            let tampered = flip_last_sig_char(raw);
            let t = jws::parse(&tampered).unwrap();
            assert!(
                !PureVerifier.verify(&k.key, &t.signed()),
                "{alg:?} tampered"
            );
        }

        let es256 = ES256KeyPair::generate();
        let pk = es256.public_key().public_key().to_bytes_uncompressed();
        let jwk = format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
            b(&pk[1..33]),
            b(&pk[33..])
        );
        let t_raw = es256.sign(claims()).unwrap();
        assert!(PureVerifier.verify(&key(&jwk).key, &jws::parse(&t_raw).unwrap().signed()));

        let es384 = ES384KeyPair::generate();
        let pk = es384.public_key().public_key().to_bytes_uncompressed();
        let jwk = format!(
            r#"{{"kty":"EC","crv":"P-384","x":"{}","y":"{}"}}"#,
            b(&pk[1..49]),
            b(&pk[49..])
        );
        let t_raw = es384.sign(claims()).unwrap();
        assert!(PureVerifier.verify(&key(&jwk).key, &jws::parse(&t_raw).unwrap().signed()));

        let ed = Ed25519KeyPair::generate();
        let jwk = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#,
            b(&ed.public_key().to_bytes())
        );
        let t_raw = ed.sign(claims()).unwrap();
        assert!(PureVerifier.verify(&key(&jwk).key, &jws::parse(&t_raw).unwrap().signed()));
    }
    /// RS* must use the key prepared at JWKS load (the fast verifier), not jwt-simple: with
    /// another key's preparation swapped in, a genuine token must fail; with none, jwt-simple
    /// still verifies it.
    #[test]
    fn rsa_pkcs1_goes_through_the_prepared_key() {
        let t = jws::parse(test_keys::RFC7515_A2_TOKEN).unwrap();
        let mut k = key(test_keys::RFC7515_A2_JWK);
        assert!(PureVerifier.verify(&k.key, &t.signed()));
        k.key.rsa = key(test_keys::RFC7520_RSA_JWK).key.rsa;
        assert!(
            !PureVerifier.verify(&k.key, &t.signed()),
            "prepared key ignored"
        );
        k.key.rsa = None;
        assert!(
            PureVerifier.verify(&k.key, &t.signed()),
            "fallback without preparation"
        );
    }

    /// What a proof's signature covers, without the compact form jwt-simple would need.
    fn signed<'a>(alg: Alg, input: &'a str, sig: &'a [u8]) -> Signed<'a> {
        Signed {
            alg,
            signing_input: input.as_bytes(),
            signature: sig,
            compact: "",
            exp: 0,
        }
    }

    /// A JWS whose header holds a `jwk` object (a DPoP proof), which jwt-simple cannot parse,
    /// verifies by its signing input; a changed input does not.
    #[test]
    fn es256_with_a_jwk_object_in_the_header() {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        use sha2::{Digest, Sha256};
        let pair = ES256KeyPair::generate();
        let pk = pair.public_key().public_key().to_bytes_uncompressed();
        let b =
            |d: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, d);
        let jwk = format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
            b(&pk[1..33]),
            b(&pk[33..])
        );
        let header = format!(r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{jwk}}}"#);
        let input = format!("{}.{}", b(header.as_bytes()), b(br#"{"htm":"GET"}"#));
        let signing_key: &p256::ecdsa::SigningKey = pair.key_pair().as_ref();
        let sig: p256::ecdsa::Signature = signing_key
            .sign_prehash(&Sha256::digest(input.as_bytes()))
            .unwrap();
        let sig = sig.to_bytes();
        let k = key(&jwk);
        assert!(PureVerifier.verify(&k.key, &signed(Alg::ES256, &input, &sig)));
        let changed = format!("{input}x");
        assert!(!PureVerifier.verify(&k.key, &signed(Alg::ES256, &changed, &sig)));
    }

    /// A PS256 JWS with a `jwk` object in its header (a DPoP proof) verifies by its signing
    /// input; another input, or a signature with the wrong salt length, does not.
    #[test]
    fn ps256_with_a_jwk_object_in_the_header() {
        use rsa::signature::{RandomizedSigner, SignatureEncoding};
        use rsa::traits::PublicKeyParts;
        use sha2::Sha256;
        let mut rng = crate::core::test_keys::TestRng(9);
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let b =
            |d: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, d);
        let jwk = format!(
            r#"{{"kty":"RSA","n":"{}","e":"{}"}}"#,
            b(&private.n().to_bytes_be()),
            b(&private.e().to_bytes_be())
        );
        let header = format!(r#"{{"typ":"dpop+jwt","alg":"PS256","jwk":{jwk}}}"#);
        let input = format!("{}.{}", b(header.as_bytes()), b(br#"{"htm":"GET"}"#));
        let signer = rsa::pss::SigningKey::<Sha256>::new(private.clone());
        let sig = signer.sign_with_rng(&mut rng, input.as_bytes()).to_vec();
        let short_salt = rsa::pss::SigningKey::<Sha256>::new_with_salt_len(private, 8)
            .sign_with_rng(&mut rng, input.as_bytes())
            .to_vec();
        let k = key(&jwk);
        assert!(PureVerifier.verify(&k.key, &signed(Alg::PS256, &input, &sig)));
        let changed = format!("{input}x");
        assert!(!PureVerifier.verify(&k.key, &signed(Alg::PS256, &changed, &sig)));
        assert!(!PureVerifier.verify(&k.key, &signed(Alg::PS256, &input, &short_salt)));
    }
}
