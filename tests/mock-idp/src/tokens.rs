//! Compact JWS encoding and verification, the signature algorithms the mock can mint with,
//! and opaque tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer, Verifier};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::keys::SigningKey;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    None,
    Hs256,
}

impl Alg {
    /// JOSE names are case-sensitive (RFC 7515), so only the exact spellings are accepted.
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "none" => Alg::None,
            "HS256" => Alg::Hs256,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::None => "none",
            Alg::Hs256 => "HS256",
        }
    }
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Builds `b64(header).b64(claims).b64(signature)`; the header is used as given, so it may
/// disagree with `alg` on purpose.
pub fn encode(
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
    alg: Alg,
    key: &SigningKey,
) -> Result<String, String> {
    let header = serde_json::to_vec(header).map_err(|e| e.to_string())?;
    let claims = serde_json::to_vec(claims).map_err(|e| e.to_string())?;
    let signing_input = format!("{}.{}", b64url(&header), b64url(&claims));
    let signature = sign(signing_input.as_bytes(), alg, key)?;
    Ok(format!("{signing_input}.{}", b64url(&signature)))
}

pub fn sign(input: &[u8], alg: Alg, key: &SigningKey) -> Result<Vec<u8>, String> {
    use rsa::{pkcs1v15, pss};
    let private = key.private().clone();
    let mut rng = rand::thread_rng();
    let sig = match alg {
        Alg::Rs256 => pkcs1v15::SigningKey::<Sha256>::new(private)
            .try_sign(input)
            .map(|s| s.to_vec()),
        Alg::Rs384 => pkcs1v15::SigningKey::<Sha384>::new(private)
            .try_sign(input)
            .map(|s| s.to_vec()),
        Alg::Rs512 => pkcs1v15::SigningKey::<Sha512>::new(private)
            .try_sign(input)
            .map(|s| s.to_vec()),
        // `pss::SigningKey::new` uses salt length = hash length, as RFC 7518 §3.5 requires.
        Alg::Ps256 => pss::SigningKey::<Sha256>::new(private)
            .try_sign_with_rng(&mut rng, input)
            .map(|s| s.to_vec()),
        Alg::Ps384 => pss::SigningKey::<Sha384>::new(private)
            .try_sign_with_rng(&mut rng, input)
            .map(|s| s.to_vec()),
        Alg::Ps512 => pss::SigningKey::<Sha512>::new(private)
            .try_sign_with_rng(&mut rng, input)
            .map(|s| s.to_vec()),
        Alg::None => Ok(Vec::new()),
        Alg::Hs256 => {
            let secret = key.public_spki_pem();
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|e| format!("HMAC key: {e}"))?;
            mac.update(input);
            return Ok(mac.finalize().into_bytes().to_vec());
        }
    };
    sig.map_err(|e| format!("signing failed: {e}"))
}

/// Verifies an RS*/PS* compact JWS (the algorithm its header names) with one of `keys`, and
/// returns its claims. `none`, `HS256` and anything undecodable are refused.
pub fn verify(token: &str, keys: &[std::sync::Arc<SigningKey>]) -> Option<Map<String, Value>> {
    use rsa::{pkcs1v15, pss};
    let (header, claims, sig) = decode_unverified(token)?;
    let alg = Alg::parse(header.get("alg")?.as_str()?)?;
    let (input, _) = token.rsplit_once('.')?;
    let input = input.as_bytes();
    let ok = |key: &SigningKey| {
        let public = key.public();
        macro_rules! check {
            ($module:ident, $digest:ty) => {
                $module::Signature::try_from(sig.as_slice()).is_ok_and(|s| {
                    $module::VerifyingKey::<$digest>::new(public)
                        .verify(input, &s)
                        .is_ok()
                })
            };
        }
        match alg {
            Alg::Rs256 => check!(pkcs1v15, Sha256),
            Alg::Rs384 => check!(pkcs1v15, Sha384),
            Alg::Rs512 => check!(pkcs1v15, Sha512),
            Alg::Ps256 => check!(pss, Sha256),
            Alg::Ps384 => check!(pss, Sha384),
            Alg::Ps512 => check!(pss, Sha512),
            Alg::None | Alg::Hs256 => false,
        }
    };
    if !keys.iter().any(|k| ok(k)) {
        return None;
    }
    match claims {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

/// An opaque access token: 32 random bytes as base64url (43 characters, never a `.`), so it is
/// no compact JWS and long enough that a log scan cannot match it by chance.
pub fn new_opaque() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    b64url(&bytes)
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `AT.` plus random base64url, like Okta's access-token `jti`.
pub fn new_jti() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("AT.{}", b64url(&bytes))
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Okta access-token claims, in Okta's order.
pub struct OktaClaims<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub lifetime_s: i64,
    pub cid: &'a str,
    pub uid: Option<&'a str>,
    pub sub: &'a str,
    pub scp: &'a [String],
}

impl OktaClaims<'_> {
    pub fn to_map(&self) -> Map<String, Value> {
        let iat = now_s();
        let mut m = Map::new();
        m.insert("ver".into(), 1.into());
        m.insert("jti".into(), new_jti().into());
        m.insert("iss".into(), self.issuer.into());
        m.insert("aud".into(), self.audience.into());
        m.insert("iat".into(), iat.into());
        m.insert("exp".into(), iat.saturating_add(self.lifetime_s).into());
        m.insert("cid".into(), self.cid.into());
        if let Some(uid) = self.uid {
            m.insert("uid".into(), uid.into());
        }
        m.insert("scp".into(), self.scp.to_vec().into());
        m.insert("sub".into(), self.sub.into());
        m
    }
}

/// Applies overrides: each value replaces or adds a member, `null` removes it.
pub fn merge(base: &mut Map<String, Value>, overrides: Map<String, Value>) {
    for (name, value) in overrides {
        if value.is_null() {
            base.shift_remove(&name);
        } else {
            base.insert(name, value);
        }
    }
}

/// Decodes a compact JWS into (header, claims, signature bytes) without verifying it.
pub fn decode_unverified(token: &str) -> Option<(Value, Value, Vec<u8>)> {
    let mut parts = token.split('.');
    let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let json = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    };
    Some((json(h)?, json(c)?, URL_SAFE_NO_PAD.decode(s).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{decode_part, test_keys};

    #[test]
    fn alg_names_round_trip() {
        for name in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "none", "HS256",
        ] {
            assert_eq!(Alg::parse(name).unwrap().name(), name);
        }
        assert_eq!(Alg::parse("rs256"), None);
        assert_eq!(Alg::parse("ES256"), None);
    }

    #[test]
    fn merge_replaces_adds_and_removes() {
        let mut base = Map::new();
        base.insert("a".into(), 1.into());
        base.insert("b".into(), 2.into());
        base.insert("c".into(), 3.into());
        let overrides = serde_json::json!({"a": "x", "b": null, "d": [1]});
        merge(&mut base, overrides.as_object().unwrap().clone());
        assert_eq!(
            Value::Object(base).to_string(),
            r#"{"a":"x","c":3,"d":[1]}"#
        );
    }

    #[test]
    fn verify_accepts_own_rsa_signatures_only() {
        let keys: Vec<_> = test_keys()
            .iter()
            .cloned()
            .map(std::sync::Arc::new)
            .collect();
        let mut claims = Map::new();
        claims.insert("sub".into(), "x".into());
        for alg in [Alg::Rs256, Alg::Rs512, Alg::Ps256, Alg::Ps384] {
            let mut header = Map::new();
            header.insert("alg".into(), alg.name().into());
            let token = encode(&header, &claims, alg, &test_keys()[1]).unwrap();
            assert_eq!(verify(&token, &keys).unwrap()["sub"], "x", "{alg:?}");
            assert!(
                verify(&token, &keys[..1]).is_none(),
                "{alg:?} with the wrong key"
            );
            // A header naming another algorithm than the one signed with fails.
            let mut lying = header.clone();
            lying.insert("alg".into(), "RS384".into());
            let token = encode(&lying, &claims, alg, &test_keys()[1]).unwrap();
            assert!(verify(&token, &keys).is_none(), "{alg:?} as RS384");
        }
        for alg in [Alg::None, Alg::Hs256] {
            let mut header = Map::new();
            header.insert("alg".into(), alg.name().into());
            let token = encode(&header, &claims, alg, &test_keys()[0]).unwrap();
            assert!(verify(&token, &keys).is_none(), "{alg:?}");
        }
        assert!(verify("a.b.c", &keys).is_none());
        assert!(verify(&new_opaque(), &keys).is_none());
    }

    #[test]
    fn opaque_tokens_are_long_random_and_not_jws() {
        let (a, b) = (new_opaque(), new_opaque());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(
            hex(&token_hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn none_has_empty_signature_segment() {
        let mut header = Map::new();
        header.insert("alg".into(), "none".into());
        let mut claims = Map::new();
        claims.insert("sub".into(), "x".into());
        let token = encode(&header, &claims, Alg::None, &test_keys()[0]).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert!(token.ends_with('.'));
        assert_eq!(decode_part(parts[0])["alg"], "none");
        assert_eq!(decode_part(parts[1])["sub"], "x");
        assert!(!token.contains('='));
    }
}
