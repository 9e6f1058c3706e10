//! JWK Set parsing: turns an IdP's key document into verification keys, skipping any key that
//! cannot safely be used for signature verification.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use crate::core::crypto::alg::{Alg, KeyFamily};
use crate::core::crypto::der::EcCurve;
use crate::core::crypto::public_key::{KeyMaterial, PublicKey};
use crate::core::store::stable_hash;

/// A JWKS body larger than this is refused (an Okta key set is a few KiB).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// More keys than this in one set is refused: it bounds the work a kid-less token can cause.
pub const MAX_KEYS: usize = 64;
/// RFC 7518 §3.3: RSA keys shorter than this are not used.
pub const MIN_RSA_BITS: usize = 2048;
pub use crate::core::crypto::public_key::MAX_RSA_BITS;

/// One usable verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The `alg` the JWK pins, if any.
    pub alg: Option<Alg>,
    pub key: PublicKey,
    /// Identifies this exact key (kid and material) across refreshes, so that what it verified
    /// can be forgotten when the IdP drops it.
    pub fingerprint: u64,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg` (kty, crv and the key's own `alg`).
    pub fn fits(&self, alg: Alg) -> bool {
        if let Some(pinned) = self.alg {
            if pinned != alg {
                return false;
            }
        }
        match (&self.key.material, alg.family()) {
            (KeyMaterial::Rsa { .. }, KeyFamily::Rsa) => true,
            (KeyMaterial::Ec { curve, .. }, KeyFamily::Ec) => {
                matches!(
                    (curve, alg),
                    (EcCurve::P256, Alg::ES256) | (EcCurve::P384, Alg::ES384)
                )
            }
            (KeyMaterial::Ed25519 { .. }, KeyFamily::Okp) => true,
            _ => false,
        }
    }
}

/// A parsed key set. Shared by reference so a refresh swaps it atomically for readers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Jwk>,
}

pub type SharedKeySet = Arc<KeySet>;

impl KeySet {
    pub fn by_kid<'a>(&'a self, kid: &'a str) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.kid.as_deref() == Some(kid))
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid(kid).next().is_some()
    }

    pub fn has_fingerprint(&self, fingerprint: u64) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    TooLarge,
    Malformed(String),
    TooManyKeys,
    NoUsableKey { skipped: Vec<String> },
}

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksError::TooLarge => write!(f, "JWKS larger than {MAX_JWKS_BYTES} bytes"),
            JwksError::Malformed(m) => write!(f, "malformed JWKS: {m}"),
            JwksError::TooManyKeys => write!(f, "JWKS has more than {MAX_KEYS} keys"),
            JwksError::NoUsableKey { skipped } if skipped.is_empty() => {
                write!(f, "JWKS has no keys")
            }
            JwksError::NoUsableKey { skipped } => {
                write!(f, "JWKS has no usable key ({})", skipped.join("; "))
            }
        }
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    d: Option<String>,
}

/// The outcome of a parse: the usable keys, and why each other key was skipped (for logs).
#[derive(Debug)]
pub struct Parsed {
    pub set: KeySet,
    pub skipped: Vec<String>,
}

pub fn parse(body: &[u8]) -> Result<Parsed, JwksError> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    let raw: RawSet =
        serde_json::from_slice(body).map_err(|e| JwksError::Malformed(e.to_string()))?;
    from_values(&raw.keys)
}

pub fn parse_value(value: &serde_json::Value) -> Result<Parsed, JwksError> {
    let raw: RawSet =
        serde_json::from_value(value.clone()).map_err(|e| JwksError::Malformed(e.to_string()))?;
    from_values(&raw.keys)
}

fn from_values(values: &[serde_json::Value]) -> Result<Parsed, JwksError> {
    if values.len() > MAX_KEYS {
        return Err(JwksError::TooManyKeys);
    }
    let mut set = KeySet::default();
    let mut skipped = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match parse_key(value) {
            Ok(jwk) => set.keys.push(jwk),
            Err(why) => {
                let kid = value
                    .get("kid")
                    .and_then(|k| k.as_str())
                    .map(|k| format!("kid {k:?}"))
                    .unwrap_or_else(|| format!("key #{i}"));
                skipped.push(format!("{kid}: {why}"));
            }
        }
    }
    if set.keys.is_empty() {
        return Err(JwksError::NoUsableKey { skipped });
    }
    Ok(Parsed { set, skipped })
}

fn b64(field: &str, value: Option<&String>) -> Result<Vec<u8>, String> {
    let value = value.ok_or_else(|| format!("missing {field}"))?;
    URL_SAFE_NO_PAD
        .decode(value)
        .map_err(|_| format!("{field} is not base64url"))
}

fn parse_key(value: &serde_json::Value) -> Result<Jwk, String> {
    let raw: RawJwk = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    check_purpose(&raw)?;
    let alg = match &raw.alg {
        None => None,
        Some(name) => Some(Alg::parse(name).ok_or_else(|| format!("unsupported alg {name:?}"))?),
    };
    let kty = raw.kty.as_deref().ok_or("missing kty")?;
    let material = match kty {
        "RSA" => rsa_material(&raw)?,
        "EC" => ec_material(&raw)?,
        "OKP" => okp_material(&raw)?,
        other => return Err(format!("unsupported kty {other:?}")),
    };
    let jwk_kty_fits_alg = alg.is_none_or(|a| {
        matches!(
            (&material, a.family()),
            (KeyMaterial::Rsa { .. }, KeyFamily::Rsa)
                | (KeyMaterial::Ec { .. }, KeyFamily::Ec)
                | (KeyMaterial::Ed25519 { .. }, KeyFamily::Okp)
        )
    });
    if !jwk_kty_fits_alg {
        return Err(format!("alg {:?} does not fit kty {kty}", raw.alg));
    }
    let fingerprint = fingerprint(raw.kid.as_deref(), &material);
    Ok(Jwk {
        kid: raw.kid,
        alg,
        key: PublicKey::new(material)?,
        fingerprint,
    })
}

/// A public key meant for verifying signatures: no private part, `use` and `key_ops` (when
/// given) say so.
fn check_purpose(raw: &RawJwk) -> Result<(), String> {
    if raw.d.is_some() {
        // A private key published in a JWKS is a misconfiguration; refuse to touch it.
        return Err("contains private key material".into());
    }
    if let Some(use_) = &raw.use_ {
        if use_ != "sig" {
            return Err(format!("use is {use_:?}, not \"sig\""));
        }
    }
    if let Some(ops) = &raw.key_ops {
        if !ops.iter().any(|op| op == "verify") {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    Ok(())
}

fn rsa_material(raw: &RawJwk) -> Result<KeyMaterial, String> {
    let n = strip_leading_zeros(b64("n", raw.n.as_ref())?);
    let e = strip_leading_zeros(b64("e", raw.e.as_ref())?);
    let bits = bit_length(&n);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA modulus of {bits} bits is below {MIN_RSA_BITS}"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "RSA modulus of {bits} bits is above {MAX_RSA_BITS}"
        ));
    }
    if e.is_empty() || e.len() > 4 || e.last().is_none_or(|b| b & 1 == 0) {
        return Err("RSA exponent is not a small odd number".into());
    }
    Ok(KeyMaterial::Rsa { n, e })
}

fn ec_material(raw: &RawJwk) -> Result<KeyMaterial, String> {
    let curve = match raw.crv.as_deref() {
        Some("P-256") => EcCurve::P256,
        Some("P-384") => EcCurve::P384,
        other => return Err(format!("unsupported EC curve {other:?}")),
    };
    let x = b64("x", raw.x.as_ref())?;
    let y = b64("y", raw.y.as_ref())?;
    if x.len() != curve.coordinate_len() || y.len() != curve.coordinate_len() {
        return Err("EC coordinates have the wrong length".into());
    }
    Ok(KeyMaterial::Ec { curve, x, y })
}

fn okp_material(raw: &RawJwk) -> Result<KeyMaterial, String> {
    if raw.crv.as_deref() != Some("Ed25519") {
        return Err(format!("unsupported OKP curve {:?}", raw.crv));
    }
    let x = b64("x", raw.x.as_ref())?;
    if x.len() != 32 {
        return Err("Ed25519 key is not 32 bytes".into());
    }
    Ok(KeyMaterial::Ed25519 { x })
}

/// The kid and the key material, hashed: the same key across refreshes, another after a change.
fn fingerprint(kid: Option<&str>, material: &KeyMaterial) -> u64 {
    let mut id = kid.unwrap_or_default().as_bytes().to_vec();
    id.push(0);
    match material {
        KeyMaterial::Rsa { n, e } => {
            id.extend_from_slice(n);
            id.extend_from_slice(e);
        }
        KeyMaterial::Ec { x, y, .. } => {
            id.extend_from_slice(x);
            id.extend_from_slice(y);
        }
        KeyMaterial::Ed25519 { x } => id.extend_from_slice(x),
    }
    stable_hash(&id)
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.drain(..first);
    bytes
}

fn bit_length(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(top) => n.len() * 8 - top.leading_zeros() as usize,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::test_keys;

    #[test]
    fn parses_rfc7517_a1_and_skips_its_encryption_key() {
        let parsed = parse(test_keys::RFC7517_A1_SET.as_bytes()).unwrap();
        // A.1's EC key is published with "use": "enc", so it must not verify signatures.
        assert_eq!(parsed.set.keys.len(), 1, "skipped: {:?}", parsed.skipped);
        assert!(parsed.skipped[0].contains("kid \"1\": use is \"enc\""));
        let rsa = &parsed.set.keys[0];
        assert_eq!(rsa.kid.as_deref(), Some("2011-04-29"));
        assert_eq!(rsa.alg, Some(Alg::RS256));
        assert!(rsa.fits(Alg::RS256));
        assert!(!rsa.fits(Alg::PS256), "alg pinned to RS256");
        assert!(!rsa.fits(Alg::ES256));
        assert!(parsed.set.has_kid("2011-04-29"));
        assert!(!parsed.set.has_kid("1"));
    }

    fn one(jwk: &str) -> Result<Jwk, JwksError> {
        parse(format!("{{\"keys\":[{jwk}]}}").as_bytes()).map(|mut p| p.set.keys.remove(0))
    }

    #[test]
    fn parses_rfc_ec_and_okp_keys() {
        let ec = one(test_keys::RFC7515_A3_JWK).unwrap();
        assert!(matches!(
            ec.key.material,
            KeyMaterial::Ec {
                curve: EcCurve::P256,
                ..
            }
        ));
        assert!(ec.fits(Alg::ES256));
        assert!(!ec.fits(Alg::ES384));
        assert!(!ec.fits(Alg::RS256));
        let ed = one(test_keys::RFC8037_ED25519_JWK).unwrap();
        assert!(ed.fits(Alg::EdDSA));
        assert!(!ed.fits(Alg::ES256));
        let rsa = one(test_keys::RFC7520_RSA_JWK).unwrap();
        assert!(rsa.fits(Alg::PS384));
        // P-521 (ES512) is not among the supported algorithms.
        assert!(matches!(
            one(test_keys::RFC7520_EC_JWK),
            Err(JwksError::NoUsableKey { .. })
        ));
    }

    #[test]
    fn skips_keys_that_do_not_fit_and_says_why() {
        let doc = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": test_keys::RSA_2048_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "ops", "key_ops": ["encrypt"], "n": test_keys::RSA_2048_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "weak", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": test_keys::RSA_2048_N, "e": "AQAB"},
            {"kty": "RSA", "kid": "priv", "n": test_keys::RSA_2048_N, "e": "AQAB", "d": "AQAB"},
            {"kty": "EC", "kid": "curve", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "ok", "use": "sig", "key_ops": ["verify"], "n": test_keys::RSA_2048_N, "e": "AQAB"}
        ]});
        let parsed = parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.set.keys.len(), 1);
        assert_eq!(parsed.set.keys[0].kid.as_deref(), Some("ok"));
        assert_eq!(parsed.skipped.len(), 7, "{:?}", parsed.skipped);
        let all = parsed.skipped.join("\n");
        for needle in [
            "use is \"enc\"",
            "key_ops",
            "below 2048",
            "unsupported kty \"oct\"",
            "unsupported alg \"HS256\"",
            "private key",
            "P-521",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in {all}");
        }
    }

    #[test]
    fn refuses_empty_malformed_and_oversized_sets() {
        assert!(matches!(
            parse(br#"{"keys":[]}"#),
            Err(JwksError::NoUsableKey { .. })
        ));
        assert!(matches!(
            parse(br#"{"keys": ["#),
            Err(JwksError::Malformed(_))
        ));
        assert!(matches!(parse(b"[]"), Err(JwksError::Malformed(_))));
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert_eq!(parse(&big).unwrap_err(), JwksError::TooLarge);
        let many: Vec<_> = (0..=MAX_KEYS)
            .map(|i| serde_json::json!({"kty":"RSA","kid":i.to_string(),"n":test_keys::RSA_2048_N,"e":"AQAB"}))
            .collect();
        let doc = serde_json::json!({ "keys": many }).to_string();
        assert_eq!(parse(doc.as_bytes()).unwrap_err(), JwksError::TooManyKeys);
    }

    #[test]
    fn rsa_der_is_precomputed() {
        let doc = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k", "n": test_keys::RSA_2048_N, "e": "AQAB"}]});
        let parsed = parse(doc.to_string().as_bytes()).unwrap();
        let der = &parsed.set.keys[0].key.spki_der;
        // SEQUENCE with a two-byte long-form length, then the rsaEncryption OID.
        assert_eq!(&der[..2], &[0x30, 0x82]);
        assert!(der
            .windows(9)
            .any(|w| w == [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]));
    }
}
