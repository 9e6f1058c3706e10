//! What the fuzz targets share: fixed test-only keys, the JWKS and configuration they appear
//! in, signing helpers for valid tokens and proofs, stores, a key source, and reference
//! verifiers for differential checks. Nothing here is used by the filter itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use okta_jwt_filter::core::config::compile;
use okta_jwt_filter::core::config::model::Config;
use okta_jwt_filter::core::crypto::alg::Alg;
use okta_jwt_filter::core::crypto::public_key::{KeyMaterial, PublicKey};
use okta_jwt_filter::core::keys::jwk_set::KeySet;
use okta_jwt_filter::core::keys::source::JwksSource;
use okta_jwt_filter::core::keys::state::{KeySource, KeyState};
use okta_jwt_filter::core::store::{Cas, SharedStore, WriteError};

/// The decision targets' clock (seconds since the epoch).
pub const NOW: u64 = 1_700_000_000;
pub const ISS: &str = "https://idp.example/oauth2/default";
pub const ISS_STRICT: &str = "https://idp.example/oauth2/strict";
pub const ISS_MTLS: &str = "https://idp.example/oauth2/mtls";
pub const AUD: &str = "api://default";
/// The origin the `strict` provider's DPoP proofs name (`dpop_origin`).
pub const ORIGIN: &str = "https://api.example";

/// Test-only keys, fixed so that crashes reproduce. Never used outside the fuzz targets.
pub struct Fixture {
    pub rsa: rsa::RsaPrivateKey,
    pub ed: ed25519_compact::KeyPair,
    pub ec: p256::ecdsa::SigningKey,
    /// The client's DPoP key, and its JWK and RFC 7638 thumbprint.
    pub dpop: ed25519_compact::KeyPair,
    pub dpop_jwk: Value,
    pub dpop_jkt: String,
    pub jwks: Value,
    pub config_json: String,
    pub config: Config,
}

/// The input up to its first newline, and what follows it.
pub fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let rsa =
        rsa::RsaPrivateKey::from_pkcs8_pem(include_str!("../fixtures/rsa-2048-test-only.pem"))
            .expect("fixture RSA key");
    let ed = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7u8; 32]));
    let ec = p256::ecdsa::SigningKey::from_slice(&[0x42u8; 32]).expect("fixture EC key");
    let dpop = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([9u8; 32]));
    let point = ec.verifying_key().to_sec1_point(false);
    let (x, y) = (point.x().expect("x"), point.y().expect("y"));
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa1", "use": "sig", "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be())},
        {"kty": "OKP", "kid": "ed1", "crv": "Ed25519", "x": b64(ed.pk.as_ref())},
        {"kty": "EC", "kid": "ec1", "crv": "P-256", "x": b64(x), "y": b64(y), "alg": "ES256"}
    ]});
    let dpop_jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(dpop.pk.as_ref())});
    let dpop_jkt =
        okta_jwt_filter::core::token::thumbprint::sha256(dpop_jwk.as_object().expect("object"))
            .expect("thumbprint");
    let config_json = config_json(&jwks).to_string();
    let config = compile::parse(config_json.as_bytes()).expect("fixture configuration");
    Fixture {
        rsa,
        ed,
        ec,
        dpop,
        dpop_jwk,
        dpop_jkt,
        jwks,
        config_json,
        config,
    }
}

/// Three providers over the same inline keys, and rules that reach every stage.
pub fn config_json(jwks: &Value) -> Value {
    json!({
        "providers": {
            "okta": {
                "issuer": ISS, "audiences": [AUD, "api://other"],
                "jwks": {"inline": jwks},
                "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
                "from": [{"header": "authorization", "prefix": "Bearer "},
                         {"query": "access_token"}, {"cookie": "at"}],
                "claims_to_headers": [{"claim": "sub", "header": "x-jwt-sub"},
                                      {"claim": "scp", "header": "x-jwt-scopes"}],
                "payload_header": "x-jwt-payload",
                "dpop": "allowed", "dpop_algorithms": ["EdDSA", "ES256", "RS256"]
            },
            "strict": {
                "issuer": ISS_STRICT, "audiences": [AUD],
                "jwks": {"inline": jwks},
                "algorithms": ["EdDSA", "RS256"],
                "max_lifetime_s": 7200, "client_ids": ["0oa1"], "require_at_jwt": true,
                "forward_token": true, "dpop": "required", "dpop_algorithms": ["EdDSA"],
                "dpop_max_age_s": 120, "dpop_origin": ORIGIN
            },
            "mtls": {
                "issuer": ISS_MTLS, "audiences": [AUD],
                "jwks": {"inline": jwks},
                "algorithms": ["EdDSA"],
                "from": [{"header": "x-token"}],
                "mtls_binding": "required"
            }
        },
        "rules": [
            {"match": {"prefix": "/healthz"}, "auth": "none"},
            {"match": {"prefix": "/public"}, "auth": "optional"},
            {"match": {"prefix": "/orders", "methods": ["POST"]}, "scopes": {"all": ["orders:write"]}},
            {"match": {"template": "/users/{id}"}, "claims": [{"claim": "uid", "equals_param": "id"}]},
            {"match": {"prefix": "/admin"}, "ip": {"allow": ["10.0.0.0/8", "::1/128"], "deny": ["10.9.0.0/16"]},
             "claims": [{"claim": "groups", "contains": "admin"}, {"claim": "org.tier", "in": ["gold", 3]}]},
            {"match": {"prefix": "/limited"}, "rate_limits": [
                {"key": "claim:sub", "requests": 2, "per_s": 60, "max_keys": 16},
                {"key": "ip", "requests": 5, "per_s": 1, "burst": 6, "max_keys": 16}]},
            {"match": {"prefix": "/login"}, "auth": "optional", "rate_limits": [
                {"key": "header:x-api-key", "requests": 3, "per_s": 60, "count": "denied",
                 "max_keys": 16},
                {"key": "route", "requests": 50, "per_s": 1, "max_keys": 1}]},
            {"match": {"prefix": "/strict"}, "providers": ["strict"], "scopes": {"any": ["a", "b"]}},
            {"match": {"prefix": "/mtls"}, "providers": ["mtls"]},
            {"match": {"exact": "/hdr", "headers": [{"name": "x-tenant", "exact": "t1"},
                                                     {"name": "x-debug", "present": false}]},
             "auth": "optional"}
        ],
        "realm": "api",
        "client_ip": {"xff_trusted_hops": 1},
        "log": {"allowed": true, "claims": ["sub", "org.tier"]}
    })
}

/// The algorithms the fixture can sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, arbitrary::Arbitrary)]
pub enum SignAlg {
    RS256,
    PS256,
    ES256,
    EdDSA,
}

impl SignAlg {
    pub fn name(self) -> &'static str {
        match self {
            SignAlg::RS256 => "RS256",
            SignAlg::PS256 => "PS256",
            SignAlg::ES256 => "ES256",
            SignAlg::EdDSA => "EdDSA",
        }
    }
    pub fn kid(self) -> &'static str {
        match self {
            SignAlg::RS256 | SignAlg::PS256 => "rsa1",
            SignAlg::ES256 => "ec1",
            SignAlg::EdDSA => "ed1",
        }
    }
}

/// A deterministic generator for PSS salts (splitmix64): reproducible, never secret.
struct Splitmix(u64);

impl rsa::rand_core::RngCore for Splitmix {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for Splitmix {}

impl Fixture {
    /// The signature of `input` under the fixture key for `alg`.
    pub fn sign(&self, alg: SignAlg, input: &[u8]) -> Vec<u8> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
        match alg {
            SignAlg::RS256 => rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(self.rsa.clone())
                .sign(input)
                .to_vec(),
            SignAlg::PS256 => rsa::pss::SigningKey::<sha2::Sha256>::new(self.rsa.clone())
                .sign_with_rng(&mut Splitmix(input.len() as u64), input)
                .to_vec(),
            SignAlg::ES256 => {
                use p256::ecdsa::signature::Signer as _;
                let sig: p256::ecdsa::Signature = self.ec.sign(input);
                sig.to_bytes().to_vec()
            }
            SignAlg::EdDSA => self.ed.sk.sign(input, None).to_vec(),
        }
    }

    /// A compact JWS of `header` (with `alg` set) and `claims`, signed with the fixture key.
    pub fn jws(&self, alg: SignAlg, mut header: Value, claims: &Value) -> String {
        header["alg"] = json!(alg.name());
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.sign(alg, input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// A DPoP proof signed with the client's key.
    pub fn proof(&self, claims: &Value) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": self.dpop_jwk});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.dpop.sk.sign(input.as_bytes(), None);
        format!("{input}.{}", b64(sig.as_ref()))
    }

    /// Whether `material` is one of the fixture JWKS keys (as opposed to a proof's own key).
    pub fn is_issuer_key(&self, material: &KeyMaterial) -> bool {
        use rsa::traits::PublicKeyParts;
        match material {
            KeyMaterial::Rsa { n, .. } => *n == self.rsa.n().to_bytes_be(),
            KeyMaterial::Ed25519 { x } => x.as_slice() == self.ed.pk.as_ref(),
            KeyMaterial::Ec { x, .. } => {
                let point = self.ec.verifying_key().to_sec1_point(false);
                point.x().is_some_and(|px| px.as_slice() == x.as_slice())
            }
        }
    }
}

/// Claims that pass every check of the `okta` provider at [`NOW`].
pub fn good_claims() -> Value {
    json!({"iss": ISS, "aud": AUD, "iat": NOW - 5, "exp": NOW + 3600, "sub": "alice",
           "cid": "0oa1", "uid": "00u1", "scp": ["orders:write", "a"], "groups": ["admin"],
           "org": {"tier": "gold"}})
}

/// Independent signature verification (the `rsa`, `p256` and `ed25519-compact` crates):
/// `None` for an algorithm or key it does not cover.
pub fn reference_verify(key: &PublicKey, alg: Alg, input: &[u8], sig: &[u8]) -> Option<bool> {
    use rsa::signature::Verifier;
    match (&key.material, alg) {
        (KeyMaterial::Rsa { n, e }, Alg::RS256 | Alg::RS384 | Alg::RS512) => {
            let key = rsa::RsaPublicKey::new_with_max_size(
                rsa::BigUint::from_bytes_be(n),
                rsa::BigUint::from_bytes_be(e),
                8192,
            )
            .ok()?;
            let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
                return Some(false);
            };
            Some(match alg {
                Alg::RS256 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
                    .verify(input, &sig)
                    .is_ok(),
                Alg::RS384 => rsa::pkcs1v15::VerifyingKey::<sha2::Sha384>::new(key)
                    .verify(input, &sig)
                    .is_ok(),
                _ => rsa::pkcs1v15::VerifyingKey::<sha2::Sha512>::new(key)
                    .verify(input, &sig)
                    .is_ok(),
            })
        }
        (KeyMaterial::Ed25519 { x }, Alg::EdDSA) => {
            let k = ed25519_compact::PublicKey::from_slice(x).ok()?;
            Some(
                ed25519_compact::Signature::from_slice(sig)
                    .is_ok_and(|s| k.verify(input, &s).is_ok()),
            )
        }
        _ => None,
    }
}

/// A shared store with Envoy's CAS semantics that can be cloned from a prepared template, so
/// every fuzz input starts from the same state.
#[derive(Clone, Default)]
pub struct CloneStore {
    map: RefCell<HashMap<String, (Vec<u8>, Cas)>>,
    /// The value a key holds until written, when set: stored records from elsewhere.
    pub seed: Option<Vec<u8>>,
}

impl SharedStore for CloneStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
        match self.map.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => match &self.seed {
                Some(seed) => (Some(seed.clone()), Some(1)),
                None => (None, None),
            },
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
        let mut map = self.map.borrow_mut();
        let current = map
            .get(key)
            .map(|(_, c)| *c)
            .or(self.seed.as_ref().map(|_| 1));
        if let (Some(current), Some(cas)) = (current, cas) {
            if current != cas {
                return Err(WriteError::Conflict);
            }
        }
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        map.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }
}

impl CloneStore {
    /// A store whose every key holds `seed` until written.
    pub fn seeded(seed: &[u8]) -> CloneStore {
        CloneStore {
            map: RefCell::default(),
            seed: Some(seed.to_vec()),
        }
    }
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.map.borrow().get(key).map(|(v, _)| v.clone())
    }
    pub fn written(&self) -> Vec<(String, Vec<u8>)> {
        self.map
            .borrow()
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }
}

/// A store read through to a prepared `base` and written to its own overlay: a fresh copy of
/// the base for each fuzz input at the cost of an empty map.
pub struct Overlay<'b> {
    base: &'b CloneStore,
    over: RefCell<HashMap<String, (Vec<u8>, Cas)>>,
}

impl<'b> Overlay<'b> {
    pub fn new(base: &'b CloneStore) -> Overlay<'b> {
        Overlay {
            base,
            over: RefCell::default(),
        }
    }
}

impl SharedStore for Overlay<'_> {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
        match self.over.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => self.base.get(key),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
        let current = self.get(key).1;
        if let (Some(current), Some(cas)) = (current, cas) {
            if current != cas {
                return Err(WriteError::Conflict);
            }
        }
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        self.over
            .borrow_mut()
            .insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }
}

/// The inline keys of each provider; an empty set for the others.
pub struct InlineKeys<'c> {
    pub config: &'c Config,
    pub empty: KeySet,
    /// What `unknown_kid_may_wait` answers (a refetch could run).
    pub may_wait: bool,
}

impl<'c> InlineKeys<'c> {
    pub fn new(config: &'c Config, may_wait: bool) -> InlineKeys<'c> {
        InlineKeys {
            config,
            empty: KeySet::default(),
            may_wait,
        }
    }
}

impl KeySource for InlineKeys<'_> {
    fn keys(&self, provider: usize) -> KeyState<'_> {
        match self.config.providers.get(provider).map(|p| &p.jwks.source) {
            Some(JwksSource::Inline(set)) => KeyState::Ready(set),
            Some(_) if self.may_wait => KeyState::Pending,
            Some(_) => KeyState::Ready(&self.empty),
            None => KeyState::Unavailable,
        }
    }

    fn unknown_kid_may_wait(&self, _provider: usize) -> bool {
        self.may_wait
    }
}
