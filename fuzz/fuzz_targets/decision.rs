//! The whole decision (decision/pipeline.rs `decide`, then `charge_failure`) for a request
//! built from the fuzz input, against the fixture configuration and keys. Tokens and DPoP
//! proofs are either raw fuzz strings or signed with the fixture keys over fuzzed claims, then
//! optionally changed byte by byte, so the fuzzer reaches every stage behind the signature.
//!
//! Invariants:
//! - every signature verdict agrees with a reference implementation;
//! - a request is allowed with an identity only after a signature check under one of the
//!   provider keys passed in this decision (or a cache hit on a token verified earlier);
//! - a changed token is never allowed with an identity;
//! - when the token is not forwarded, it appears nowhere in what goes upstream;
//! - deciding never panics, and a later decision of the same request (with the cache) allows
//!   an identity only after a signature passed in an earlier one.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::crypto::alg::Alg;
use okta_jwt_filter::core::crypto::public_key::{KeyMaterial, PublicKey};
use okta_jwt_filter::core::crypto::pure::PureVerifier;
use okta_jwt_filter::core::crypto::verifier::{SignatureVerifier, Signed};
use okta_jwt_filter::core::decision::env::{Env, Incoming};
use okta_jwt_filter::core::decision::outcome::{Decision, HeaderOp, Outcome};
use okta_jwt_filter::core::decision::pipeline;
use okta_jwt_filter::core::introspection::answers::NoAnswers;
use okta_jwt_filter::core::ratelimit::charge::{ensure_records, KeyHasher};
use okta_jwt_filter::core::request::view::ClientCert;
use okta_jwt_filter::core::token::cache::TokenCache;
use okta_jwt_filter::core::token::{dpop, replay};
use okta_jwt_filter_fuzz::{
    fixture, good_claims, reference_verify, CloneStore, InlineKeys, Overlay, SignAlg, ISS,
    ISS_MTLS, ISS_STRICT, NOW, ORIGIN,
};
use serde_json::{json, Value};

/// The client certificate thumbprint the fuzzer may present, and bind tokens to.
const CERT: &str = "q3PvJxXbbSV6WTQ7tBM2WqBVCtK8WTCkvXnN1RWGUXA";

#[derive(Debug, Arbitrary)]
enum Method<'a> {
    Get,
    Post,
    Options,
    Other(&'a str),
}

#[derive(Debug, Arbitrary)]
enum PathChoice<'a> {
    Known(u8, &'a str),
    Raw(&'a str),
}

const PATHS: [&str; 12] = [
    "/",
    "/healthz",
    "/public/x",
    "/orders",
    "/users/00u1",
    "/users/00u2",
    "/admin/x",
    "/limited",
    "/login",
    "/strict/a",
    "/mtls",
    "/hdr",
];

#[derive(Debug, Arbitrary)]
enum Json<'a> {
    Remove,
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    Strs(Vec<&'a str>),
    Object(Vec<(&'a str, &'a str)>),
}

impl Json<'_> {
    fn value(&self) -> Option<Value> {
        Some(match self {
            Json::Remove => return None,
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(i) => json!(i),
            Json::Float(f) => json!(f),
            Json::Str(s) => json!(s),
            Json::Strs(v) => json!(v),
            Json::Object(kv) => {
                Value::Object(kv.iter().map(|(k, v)| (k.to_string(), json!(v))).collect())
            }
        })
    }
}

#[derive(Debug, Arbitrary)]
enum ClaimName<'a> {
    Iss,
    Aud,
    Exp,
    Nbf,
    Iat,
    Sub,
    Cid,
    Uid,
    Scp,
    Groups,
    Org,
    Nonce,
    Other(&'a str),
}

impl ClaimName<'_> {
    fn name(&self) -> &str {
        match self {
            ClaimName::Iss => "iss",
            ClaimName::Aud => "aud",
            ClaimName::Exp => "exp",
            ClaimName::Nbf => "nbf",
            ClaimName::Iat => "iat",
            ClaimName::Sub => "sub",
            ClaimName::Cid => "cid",
            ClaimName::Uid => "uid",
            ClaimName::Scp => "scp",
            ClaimName::Groups => "groups",
            ClaimName::Org => "org",
            ClaimName::Nonce => "nonce",
            ClaimName::Other(s) => s,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Issuer {
    Okta,
    Strict,
    Mtls,
}

#[derive(Debug, Arbitrary)]
enum Cnf<'a> {
    None,
    Jkt,
    Cert,
    Both,
    Raw(Json<'a>),
}

#[derive(Debug, Arbitrary)]
struct SignedToken<'a> {
    alg: SignAlg,
    issuer: Issuer,
    /// A kid other than the key's.
    kid: Option<Option<&'a str>>,
    typ: Option<&'a str>,
    header: Vec<(&'a str, Json<'a>)>,
    claims: Vec<(ClaimName<'a>, Json<'a>)>,
    cnf: Cnf<'a>,
    flips: Vec<(u16, u8)>,
}

#[derive(Debug, Arbitrary)]
enum TokenChoice<'a> {
    None,
    Raw(&'a str),
    Signed(SignedToken<'a>),
}

#[derive(Debug, Arbitrary)]
enum Place<'a> {
    Bearer,
    BearerOddCase,
    Dpop,
    Query,
    Cookie,
    XToken,
    Twice,
    Header(&'a str, &'a str),
}

#[derive(Debug, Arbitrary)]
enum ProofChoice<'a> {
    None,
    Raw(&'a str),
    Signed {
        htm: Option<&'a str>,
        htu: Option<&'a str>,
        iat_offset: i16,
        jti: &'a str,
        ath_wrong: bool,
        flips: Vec<(u16, u8)>,
    },
}

#[derive(Debug, Arbitrary)]
enum Ip<'a> {
    Inside,
    Denied,
    Outside,
    V6,
    Raw(&'a str),
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    method: Method<'a>,
    path: PathChoice<'a>,
    token: TokenChoice<'a>,
    place: Place<'a>,
    proof: ProofChoice<'a>,
    headers: Vec<(&'a str, &'a str)>,
    ip: Option<Ip<'a>>,
    xff: Option<&'a str>,
    cert: Option<bool>,
    may_wait: bool,
    /// Decisions of the same request after the first (up to three more): cache hits, DPoP
    /// replays, rate limits running out.
    again: u8,
}

/// One signature check the pipeline asked for.
struct Call {
    issuer_key: bool,
    verified: bool,
}

/// The pure verifier, each verdict checked against the reference and recorded.
struct Recording<'a> {
    calls: RefCell<Vec<Call>>,
    is_issuer_key: &'a dyn Fn(&KeyMaterial) -> bool,
}

impl SignatureVerifier for Recording<'_> {
    fn verify(&self, key: &PublicKey, signed: &Signed<'_>) -> bool {
        let verified = PureVerifier.verify(key, signed);
        if let Some(want) = reference(key, signed.alg, signed.signing_input, signed.signature) {
            assert_eq!(
                verified, want,
                "verdict differs from the reference for {:?}",
                signed.alg
            );
        }
        self.calls.borrow_mut().push(Call {
            issuer_key: (self.is_issuer_key)(&key.material),
            verified,
        });
        verified
    }
    fn name(&self) -> &'static str {
        "recording"
    }
}

/// Modulus, signing input and signature.
type Verdict = (Vec<u8>, Vec<u8>, Vec<u8>);

thread_local! {
    /// RSA and ECDSA tokens by signing input: signing them is slow under instrumentation, so
    /// only EdDSA tokens take the fuzzer's claim and header edits; the others come from a few
    /// claim sets, each signed once.
    static SLOW: RefCell<HashMap<String, String>> = RefCell::new(HashMap::new());
    /// Reference verdicts on RSA signatures, by key, input and signature.
    static VERDICTS: RefCell<HashMap<Verdict, bool>> = RefCell::new(HashMap::new());
}

fn token_of(t: &SignedToken<'_>) -> (String, String) {
    let f = fixture();
    let fast = t.alg == SignAlg::EdDSA;
    let mut claims = good_claims();
    claims["iss"] = json!(match t.issuer {
        Issuer::Okta => ISS,
        Issuer::Strict => ISS_STRICT,
        Issuer::Mtls => ISS_MTLS,
    });
    match &t.cnf {
        Cnf::None => {}
        Cnf::Jkt => claims["cnf"] = json!({"jkt": f.dpop_jkt}),
        Cnf::Cert => claims["cnf"] = json!({"x5t#S256": CERT}),
        Cnf::Both => claims["cnf"] = json!({"jkt": f.dpop_jkt, "x5t#S256": CERT}),
        Cnf::Raw(j) => {
            if let Some(v) = j.value().filter(|_| fast) {
                claims["cnf"] = v;
            }
        }
    }
    let mut header = json!({"kid": t.alg.kid()});
    if fast {
        for (name, value) in t.claims.iter().take(6) {
            match value.value() {
                Some(v) => claims[name.name()] = v,
                None => {
                    claims.as_object_mut().map(|c| c.remove(name.name()));
                }
            }
        }
        if let Some(kid) = t.kid {
            match kid {
                Some(k) => header["kid"] = json!(k),
                None => {
                    header.as_object_mut().map(|h| h.remove("kid"));
                }
            }
        }
        if let Some(typ) = t.typ {
            header["typ"] = json!(typ);
        }
        for (name, value) in t.header.iter().take(3) {
            if *name == "alg" {
                continue;
            }
            if let Some(v) = value.value() {
                header[*name] = v;
            }
        }
    }
    let signed = if fast {
        f.jws(t.alg, header, &claims)
    } else {
        let key = format!("{}{header}{claims}", t.alg.name());
        SLOW.with(|slow| {
            slow.borrow_mut()
                .entry(key)
                .or_insert_with(|| f.jws(t.alg, header, &claims))
                .clone()
        })
    };
    let mut bytes = signed.clone().into_bytes();
    for (at, x) in t.flips.iter().take(4) {
        let at = usize::from(*at) % bytes.len();
        bytes[at] ^= x;
    }
    (signed, String::from_utf8_lossy(&bytes).into_owned())
}

/// `reference_verify`, remembered for RSA keys.
fn reference(key: &PublicKey, alg: Alg, input: &[u8], sig: &[u8]) -> Option<bool> {
    let KeyMaterial::Rsa { n, .. } = &key.material else {
        return reference_verify(key, alg, input, sig);
    };
    let k = (n.clone(), input.to_vec(), sig.to_vec());
    if let Some(v) = VERDICTS.with(|v| v.borrow().get(&k).copied()) {
        return Some(v);
    }
    let v = reference_verify(key, alg, input, sig)?;
    VERDICTS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() > 4096 {
            m.clear();
        }
        m.insert(k, v);
    });
    Some(v)
}

fn proof_of(p: &ProofChoice<'_>, method: &str, path: &str, token: &str) -> Option<String> {
    match p {
        ProofChoice::None => None,
        ProofChoice::Raw(s) => Some(s.to_string()),
        ProofChoice::Signed {
            htm,
            htu,
            iat_offset,
            jti,
            ath_wrong,
            flips,
        } => {
            let path = path.split(['?', '#']).next().unwrap_or_default();
            let ath = if *ath_wrong {
                dpop::ath("another token")
            } else {
                dpop::ath(token)
            };
            let claims = json!({
                "htm": htm.unwrap_or(method),
                "htu": htu.map_or_else(|| format!("{ORIGIN}{path}"), str::to_string),
                "iat": NOW.saturating_add_signed(i64::from(*iat_offset)),
                "jti": jti,
                "ath": ath,
            });
            let mut bytes = fixture().proof(&claims).into_bytes();
            for (at, x) in flips.iter().take(2) {
                let at = usize::from(*at) % bytes.len();
                bytes[at] ^= x;
            }
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
    }
}

thread_local! {
    /// The prepared store: every record the fixture configuration needs, created once.
    static TEMPLATE: CloneStore = {
        let config = &fixture().config;
        let store = CloneStore::default();
        for (i, rule) in config.rules.iter().enumerate() {
            ensure_records(&store, i, &rule.rate_limits).expect("rate-limit records");
        }
        for i in 0..config.providers.len() {
            replay::ensure_records(&store, i).expect("replay records");
        }
        store
    };
}

/// What goes upstream: the request's headers with the decision's changes, and its path.
fn upstream(headers: &[(String, String)], path: &str, d: &Decision) -> Vec<String> {
    let mut out: Vec<(String, String)> = headers.to_vec();
    for op in &d.ops {
        match op {
            HeaderOp::Remove(n) => out.retain(|(k, _)| k != n),
            HeaderOp::Set(n, v) => {
                out.retain(|(k, _)| k != n);
                out.push((n.clone(), v.clone()));
            }
        }
    }
    let mut all: Vec<String> = out.into_iter().map(|(_, v)| v).collect();
    all.push(d.path.clone().unwrap_or_else(|| path.to_string()));
    all
}

/// With `FUZZ_DECISION_STATS` set, how the decisions ended (printed every 500 inputs), to see
/// how deep a corpus reaches: `cargo fuzz run decision corpus/decision -- -runs=0`.
fn count(d: &Decision) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ON.get_or_init(|| std::env::var_os("FUZZ_DECISION_STATS").is_some()) {
        return;
    }
    thread_local!(static N: RefCell<HashMap<String, u64>> = RefCell::new(HashMap::new()));
    let kind = match &d.outcome {
        Outcome::Allow if d.cache_hit.is_some() => "allow_identity".to_string(),
        Outcome::Allow => "allow_anonymous".to_string(),
        Outcome::Deny { reason, .. } => format!("deny_{}", reason.as_str()),
        Outcome::Wait { .. } => "wait".to_string(),
        _ => "other".to_string(),
    };
    N.with(|n| {
        let mut n = n.borrow_mut();
        *n.entry(kind).or_default() += 1;
        let total: u64 = n.values().sum();
        if total.is_multiple_of(500) {
            let mut all: Vec<_> = n.iter().collect();
            all.sort();
            eprintln!("decision stats after {total}: {all:?}");
        }
    });
}

fn allowed_with_identity(d: &Decision) -> bool {
    d.outcome == Outcome::Allow && d.cache_hit.is_some()
}

fuzz_target!(|input: Input<'_>| {
    let f = fixture();
    let config = &f.config;
    let method = match input.method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Options => "OPTIONS",
        Method::Other(m) => m,
    };
    let path = match input.path {
        PathChoice::Known(i, suffix) => format!("{}{suffix}", PATHS[usize::from(i) % PATHS.len()]),
        PathChoice::Raw(p) => p.to_string(),
    };
    let (signed, token) = match &input.token {
        TokenChoice::None => (None, None),
        TokenChoice::Raw(t) => (None, Some(t.to_string())),
        TokenChoice::Signed(t) => {
            let (signed, sent) = token_of(t);
            (Some(signed), Some(sent))
        }
    };
    let mut headers: Vec<(String, String)> = vec![
        (":scheme".into(), "https".into()),
        (":authority".into(), "api.example".into()),
    ];
    let mut path = path;
    if let Some(t) = &token {
        match input.place {
            Place::Bearer => headers.push(("authorization".into(), format!("Bearer {t}"))),
            Place::BearerOddCase => headers.push(("authorization".into(), format!("bEaReR  {t} "))),
            Place::Dpop => headers.push(("authorization".into(), format!("DPoP {t}"))),
            Place::Query => {
                let sep = if path.contains('?') { '&' } else { '?' };
                path = format!("{path}{sep}access_token={t}");
            }
            Place::Cookie => headers.push(("cookie".into(), format!("a=b; at={t}"))),
            Place::XToken => headers.push(("x-token".into(), t.clone())),
            Place::Twice => {
                headers.push(("authorization".into(), format!("Bearer {t}")));
                headers.push(("cookie".into(), format!("at={t}")));
            }
            Place::Header(name, prefix) => {
                headers.push((name.to_ascii_lowercase(), format!("{prefix}{t}")))
            }
        }
    }
    if let Some(proof) = proof_of(&input.proof, method, &path, token.as_deref().unwrap_or("")) {
        headers.push(("dpop".into(), proof));
    }
    for (n, v) in input.headers.iter().take(8) {
        headers.push((n.to_ascii_lowercase(), v.to_string()));
    }
    if let Some(xff) = input.xff {
        headers.push(("x-forwarded-for".into(), xff.to_string()));
    }
    let ip = input.ip.as_ref().map(|ip| match ip {
        Ip::Inside => "10.1.2.3",
        Ip::Denied => "10.9.1.1",
        Ip::Outside => "192.0.2.7",
        Ip::V6 => "::1",
        Ip::Raw(s) => s,
    });
    let cert = input
        .cert
        .map(|right| if right { CERT } else { "bm90LXRoZS1jZXJ0" });

    let is_issuer_key = |m: &KeyMaterial| f.is_issuer_key(m);
    let verifier = Recording {
        calls: RefCell::new(Vec::new()),
        is_issuer_key: &is_issuer_key,
    };
    let keys = InlineKeys::new(config, input.may_wait);
    let mut cache = TokenCache::new(16);
    TEMPLATE.with(|template| {
        let store = Overlay::new(template);
        let mut incoming = Incoming {
            method,
            path: &path,
            headers: &headers,
            client_ip: ip,
            client_cert: ClientCert::Unread,
        };
        let mut first_verified = false;
        for round in 0..=u64::from(input.again % 4) {
            verifier.calls.borrow_mut().clear();
            let mut env = Env {
                config,
                cache: Some(&mut cache),
                keys: &keys,
                answers: &NoAnswers,
                verifier: &verifier,
                now: NOW,
                now_ms: NOW * 1000 + round,
                store: Some(&store),
                limit_hasher: KeyHasher::new(1, 2),
                trace: round == 0,
            };
            // As the gate does: the certificate is read only when the decision asks for it,
            // and the request decided again from the start.
            incoming.client_cert = ClientCert::Unread;
            let mut d = pipeline::decide(&mut env, &incoming);
            if d.outcome == Outcome::NeedClientCert {
                incoming.client_cert = ClientCert::from_option(cert);
                d = pipeline::decide(&mut env, &incoming);
                assert_ne!(d.outcome, Outcome::NeedClientCert, "asked twice");
            }
            let d = pipeline::charge_failure(&env, &incoming, d);
            count(&d);
            let verified = verifier
                .calls
                .borrow()
                .iter()
                .any(|c| c.issuer_key && c.verified);
            if allowed_with_identity(&d) {
                let cached = d.cache_hit == Some(true) && first_verified;
                assert!(verified || cached, "allowed without a verified signature");
                // A changed token never verifies (the signature covers every byte that counts).
                if let (Some(signed), Some(sent)) = (&signed, &token) {
                    let same = sent.trim() == signed;
                    let other_copy = headers.iter().any(|(_, v)| v.contains(signed.as_str()))
                        || path.contains(signed.as_str());
                    assert!(same || other_copy, "a changed token was allowed");
                }
                let provider = d.provider.and_then(|p| config.providers.get(p));
                if let (Some(p), Some(t)) = (provider, &token) {
                    if !p.forward_token && t.trim().len() > 16 {
                        for value in upstream(&headers, &path, &d) {
                            assert!(!value.contains(t.trim()), "the token goes upstream");
                        }
                    }
                }
            }
            first_verified |= verified;
        }
    });
});
