//! The decision for one request: path, rule, token, provider, key, signature, claims, policy.
//! Pure: the shell supplies the keys it holds, a signature verifier and the clock.

use std::borrow::Cow;
use std::cell::RefCell;

use serde_json::{Map, Value};

use crate::core::config::model::Auth;

use crate::core::config::model::Config;

use crate::core::config::model::Provider;

use crate::core::config::model::Rule;

use crate::core::crypto::verifier::SignatureVerifier;
use crate::core::denial::Reason;
use crate::core::keys::jwk_set::KeySet;
pub use crate::core::keys::state::{KeySource, KeyState};
use crate::core::policy::forward;
use crate::core::policy::requirements as policy;
use crate::core::ratelimit::charge::{self as ratelimit, LimitState, Verdict};
use crate::core::ratelimit::limits::LimitKey;
use crate::core::request::cookie;
use crate::core::request::extract::Source;
use crate::core::request::extract::{self, Extracted};
use crate::core::request::path;
use crate::core::request::query;
use crate::core::request::view::{Headers, Request};
use crate::core::store::SharedStore;
use crate::core::token::cache::{TokenCache, Verified};
use crate::core::token::claims as validate;
use crate::core::token::jws::{self, Token};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    Remove(String),
    Set(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny {
        reason: Reason,
        /// For `insufficient_scope`: the scopes to name in `WWW-Authenticate`.
        scope: Option<String>,
    },
    /// Decide again once the provider's next fetch ends: its first fetch is in flight
    /// (`refetch: false`), or the token's kid is unknown and a refetch may find it
    /// (`refetch: true`).
    Wait {
        provider: usize,
        refetch: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Header changes to apply when the request is allowed.
    pub ops: Vec<HeaderOp>,
    /// A new `:path` to send upstream (normalized, or with a query token removed).
    pub path: Option<String>,
    /// The query once a query-parameter token is taken out of it, for `decide` to put back
    /// together with the path.
    query_without_token: Option<String>,
    pub rule: Option<usize>,
    pub provider: Option<usize>,
    /// `sub` and client id, for the log.
    pub sub: Option<String>,
    pub cid: Option<String>,
    /// False when `sub` and `cid` come from a token refused before its signature was
    /// checked (its claims failed): they are only what the token claims.
    pub identity_verified: bool,
    /// Precise reason for the log; never token bytes.
    pub detail: &'static str,
    /// Whether the verified-token cache answered (`None`: no token was verified).
    pub cache_hit: Option<bool>,
    /// The most restrictive rate limit that applied, for the `RateLimit-*` headers.
    pub rate: Option<LimitState>,
    /// For 429: whole seconds until a token is available.
    pub retry_after_s: Option<u64>,
}

impl Decision {
    fn new(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            ops: Vec::new(),
            path: None,
            query_without_token: None,
            rule: None,
            provider: None,
            sub: None,
            cid: None,
            identity_verified: true,
            detail: "",
            cache_hit: None,
            rate: None,
            retry_after_s: None,
        }
    }

    /// A denial decided before any rule applies.
    pub fn rejected(reason: Reason, detail: &'static str) -> Decision {
        Decision::new(Outcome::Allow).deny(reason, detail)
    }

    /// Who the claims name, for the log.
    fn identify(&mut self, claims: &Map<String, Value>) {
        self.sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        self.cid = validate::client_id(claims).map(str::to_owned);
    }

    fn deny(mut self, reason: Reason, detail: &'static str) -> Decision {
        self.outcome = Outcome::Deny {
            reason,
            scope: None,
        };
        self.detail = detail;
        self
    }
}

pub struct Env<'a> {
    pub config: &'a Config,
    /// Tokens verified earlier by this VM; `None` disables the shortcut.
    pub cache: Option<&'a RefCell<TokenCache>>,
    pub keys: &'a dyn KeySource,
    pub verifier: &'a dyn SignatureVerifier,
    /// Seconds since the Unix epoch.
    pub now: u64,
    /// The same instant in milliseconds, for rate-limit refill.
    pub now_ms: u64,
    /// Where rate-limit buckets live (shared by every worker); `None` disables limits.
    pub store: Option<&'a dyn SharedStore>,
    /// The fleet's key for placing rate-limit key values in buckets.
    pub limit_hasher: ratelimit::KeyHasher,
}

pub fn decide(
    env: &Env<'_>,
    method: &str,
    raw_path: &str,
    headers: &Headers,
    client_ip: Option<&str>,
) -> Decision {
    let cfg = env.config;
    let normalized = match path::normalize(raw_path) {
        Ok(p) => p,
        Err(e) => return Decision::rejected(Reason::BadPath, e.as_str()),
    };
    let req = Request {
        method,
        path: &normalized.path,
        query: normalized.query,
        headers,
        client_ip,
    };
    let mut d = Decision::new(Outcome::Allow);
    // Anti-spoofing comes first and applies to every request, whatever the rule.
    for h in &cfg.protected_headers {
        if req.header(h).is_some() {
            d.ops.push(HeaderOp::Remove(h.clone()));
        }
    }
    let mut upstream_query = normalized.query.map(Cow::Borrowed);
    let mut path_changed = normalized.changed;

    if cfg.bypass_cors_preflight && req.is_cors_preflight() {
        d.detail = "cors preflight";
    } else {
        let (rule, params) = cfg
            .rules
            .iter()
            .find_map(|r| r.matcher.matches(&req).map(|p| (r, p)))
            .unwrap_or((&cfg.default_rule, Vec::new()));
        if rule.index != usize::MAX {
            d.rule = Some(rule.index);
        }
        if rule.auth != Auth::None {
            d = authenticate(env, rule, &params, &req, d);
            if d.outcome != Outcome::Allow {
                return d;
            }
        }
        if d.cache_hit.is_none() {
            // No token was verified (auth none, or optional without one): limits still apply,
            // with claim keys empty. Verified requests were limited in `authorize`.
            d = rate_limit(env, rule, None, &req, d);
            if d.outcome != Outcome::Allow {
                return d;
            }
        }
        if let Some(source_query) = d.query_without_token.take() {
            upstream_query = (!source_query.is_empty()).then_some(Cow::Owned(source_query));
            path_changed = true;
        }
    }
    if path_changed {
        d.path = Some(match &upstream_query {
            Some(q) => format!("{}?{}", normalized.path, q),
            None => normalized.path.into_owned(),
        });
    }
    d
}

fn authenticate(
    env: &Env<'_>,
    rule: &Rule,
    params: &[(&str, &str)],
    req: &Request<'_>,
    mut d: Decision,
) -> Decision {
    let cfg = env.config;
    let Some(Extracted { token, source }) = extract::extract(&rule.sources, req) else {
        return match rule.auth {
            Auth::Optional => {
                d.detail = "no token on an optional rule";
                d
            }
            _ => d.deny(Reason::MissingToken, "no token in any configured source"),
        };
    };
    if let Some(cache) = env.cache {
        let mut cache = cache.borrow_mut();
        if let Some(hit) = cache.get(&token, env.now) {
            let usable = rule.providers.contains(&hit.provider)
                && cfg.providers[hit.provider].from.contains(source)
                && matches!(env.keys.keys(hit.provider),
                            KeyState::Ready(set) if set.has_fingerprint(hit.key));
            if usable {
                d.cache_hit = Some(true);
                d.provider = Some(hit.provider);
                let payload_b64 = token.split('.').nth(1).unwrap_or_default();
                return authorize(
                    env,
                    rule,
                    params,
                    req,
                    source,
                    hit.provider,
                    &hit.claims,
                    payload_b64,
                    d,
                );
            }
        }
    }
    let parsed = match jws::parse(&token) {
        Ok(t) => t,
        Err(e) => return d.deny(e.reason, e.detail),
    };
    let iss = parsed.claims.get("iss").and_then(Value::as_str);
    let provider = rule.providers.iter().copied().find(|&p| {
        let prov = &cfg.providers[p];
        Some(prov.issuer.as_str()) == iss && prov.from.contains(source)
    });
    let Some(pi) = provider else {
        return d.deny(
            Reason::WrongIssuer,
            "no provider of this rule has the token's issuer and source",
        );
    };
    d.provider = Some(pi);
    let p = &cfg.providers[pi];
    if !p.algorithms.contains(parsed.alg) {
        return d.deny(
            Reason::UnsupportedAlg,
            "alg is not in the provider's algorithms",
        );
    }
    // Claims first, as jwt_authn does: a token that is expired or meant for someone else
    // costs no signature check and never waits for keys (so replayed expired tokens cannot
    // buy RSA work or refetches). Who the token claims to be is still logged, marked so.
    if let Err(e) = validate::check(&p.expected(), &parsed.claims, env.now) {
        d.identify(&parsed.claims);
        d.identity_verified = false;
        return d.deny(e.reason, e.detail);
    }
    let set = match env.keys.keys(pi) {
        KeyState::Ready(set) => set,
        KeyState::Pending => {
            d.outcome = Outcome::Wait {
                provider: pi,
                refetch: false,
            };
            return d;
        }
        KeyState::Unavailable => {
            return d.deny(
                Reason::JwksUnavailable,
                "no key set was ever fetched for the provider",
            )
        }
    };
    let key = match verify_signature(env.verifier, set, &parsed) {
        Ok(key) => key,
        Err((reason, detail)) => {
            let kid_unknown = parsed.kid.as_deref().is_some_and(|k| !set.has_kid(k));
            if kid_unknown && env.keys.unknown_kid_may_wait(pi) {
                d.outcome = Outcome::Wait {
                    provider: pi,
                    refetch: true,
                };
                d.detail = "kid not in the key set; waiting for a refetch";
                return d;
            }
            return d.deny(reason, detail);
        }
    };
    d.cache_hit = Some(false);
    if let Some(cache) = env.cache {
        // `check` passed, so exp is a finite number.
        let exp = parsed
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        cache.borrow_mut().insert(
            &token,
            Verified {
                provider: pi,
                key,
                usable_until: exp + p.clock_skew_s as f64,
                claims: parsed.claims.clone(),
            },
        );
    }
    authorize(
        env,
        rule,
        params,
        req,
        source,
        pi,
        &parsed.claims,
        parsed.payload_b64,
        d,
    )
}

/// Everything after the token is known good: the rule's policy, then what goes upstream.
#[allow(clippy::too_many_arguments)]
fn authorize(
    env: &Env<'_>,
    rule: &Rule,
    params: &[(&str, &str)],
    req: &Request<'_>,
    source: &Source,
    provider: usize,
    claims: &Map<String, Value>,
    payload_b64: &str,
    mut d: Decision,
) -> Decision {
    let p = &env.config.providers[provider];
    d.identify(claims);
    if let Err(denied) = policy::check(&rule.scopes, &rule.claims, claims, params) {
        let reason = denied.reason();
        d = d.deny(reason, "");
        match denied {
            policy::Denied::Scope(scope) => {
                d.detail = "required scopes missing";
                d.outcome = Outcome::Deny {
                    reason,
                    scope: Some(scope),
                };
            }
            policy::Denied::Claim(_) => d.detail = "claim requirement not met",
        }
        return d;
    }
    d = rate_limit(env, rule, Some(claims), req, d);
    if d.outcome != Outcome::Allow {
        return d;
    }
    forward_claims(p, claims, payload_b64, &mut d.ops);
    if !p.forward_token {
        remove_token(source, req, &mut d);
    }
    d.detail = "verified";
    d
}

/// The key a rate limit counts this request under; absent keys count as the empty key.
fn limit_key(key: &LimitKey, claims: Option<&Map<String, Value>>, req: &Request<'_>) -> String {
    match key {
        LimitKey::Claim(path) => claims
            .and_then(|c| path.lookup(c))
            .and_then(forward::header_value)
            .unwrap_or_default(),
        LimitKey::Header(name) => req.header(name).unwrap_or_default().to_owned(),
        LimitKey::Ip => req.client_ip.unwrap_or_default().to_owned(),
        LimitKey::Route => String::new(),
    }
}

/// Charges the rule's rate limits, after authentication and authorization succeeded, so an
/// invalid token gets its 401 and spends nothing.
fn rate_limit(
    env: &Env<'_>,
    rule: &Rule,
    claims: Option<&Map<String, Value>>,
    req: &Request<'_>,
    mut d: Decision,
) -> Decision {
    let Some(store) = env.store.filter(|_| !rule.rate_limits.is_empty()) else {
        return d;
    };
    let keys: Vec<String> = rule
        .rate_limits
        .iter()
        .map(|l| limit_key(&l.key, claims, req))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    match ratelimit::admit(
        store,
        &env.limit_hasher,
        rule.index,
        &rule.rate_limits,
        &keys,
        env.now_ms,
    ) {
        Verdict::Admitted { most_restrictive } => {
            d.rate = most_restrictive;
            d
        }
        Verdict::Limited {
            state,
            retry_after_s,
        } => {
            d.rate = Some(state);
            d.retry_after_s = Some(retry_after_s);
            d.deny(Reason::RateLimited, "rate limit exceeded")
        }
    }
}

fn verify_signature(
    verifier: &dyn SignatureVerifier,
    set: &KeySet,
    token: &Token<'_>,
) -> Result<u64, (Reason, &'static str)> {
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
    if tried {
        Err((Reason::BadSignature, "signature does not verify"))
    } else if token.kid.is_some() {
        Err((
            Reason::UnknownKid,
            "no key with the token's kid fits its alg",
        ))
    } else {
        Err((Reason::UnknownKid, "no key fits the token's alg"))
    }
}

fn forward_claims(
    p: &Provider,
    claims: &Map<String, Value>,
    payload_b64: &str,
    ops: &mut Vec<HeaderOp>,
) {
    for ch in &p.claims_to_headers {
        if let Some(value) = ch.claim.lookup(claims).and_then(forward::header_value) {
            ops.push(HeaderOp::Set(ch.header.clone(), value));
        }
    }
    if let Some(h) = &p.payload_header {
        ops.push(HeaderOp::Set(h.clone(), payload_b64.to_owned()));
    }
}

/// Takes the credential out of the request. A query token is handled by leaving the new query
/// in `d.query_without_token` for `decide` to assemble.
fn remove_token(source: &Source, req: &Request<'_>, d: &mut Decision) {
    match source {
        Source::Header { name, .. } => d.ops.push(HeaderOp::Remove(name.clone())),
        Source::Query(name) => {
            d.query_without_token = Some(query::remove_param(req.query.unwrap_or_default(), name));
        }
        Source::Cookie(name) => {
            let all: Vec<&str> = req.header_values("cookie").collect();
            match cookie::remove(&all.join("; "), name) {
                Some(rest) => d.ops.push(HeaderOp::Set("cookie".into(), rest)),
                None => d.ops.push(HeaderOp::Remove("cookie".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::compile as config;
    use crate::core::crypto::public_key::PublicKey;
    use crate::core::crypto::verifier::Signed;
    use crate::core::keys::jwk_set as jwks;
    use crate::core::store::MemoryStore;
    use crate::core::test_keys;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://idp.example/oauth2/default";

    /// Accepts exactly the signature bytes "good": isolates the decision logic from crypto,
    /// which `verify_pure` tests on its own.
    struct FakeVerifier;
    impl SignatureVerifier for FakeVerifier {
        fn verify(&self, _key: &PublicKey, token: &Signed<'_>) -> bool {
            token.signature == b"good"
        }
        fn name(&self) -> &'static str {
            "fake"
        }
    }

    enum Keys {
        Ready(KeySet),
        /// Ready, and an unknown kid may wait for a refetch.
        Refetchable(KeySet),
        Pending,
        Unavailable,
    }
    impl KeySource for Keys {
        fn keys(&self, _provider: usize) -> KeyState<'_> {
            match self {
                Keys::Ready(set) | Keys::Refetchable(set) => KeyState::Ready(set),
                Keys::Pending => KeyState::Pending,
                Keys::Unavailable => KeyState::Unavailable,
            }
        }
        fn unknown_kid_may_wait(&self, _provider: usize) -> bool {
            matches!(self, Keys::Refetchable(_))
        }
    }

    fn key_set() -> KeySet {
        let doc = format!(
            r#"{{"keys":[{{"kty":"RSA","kid":"k1","n":"{}","e":"AQAB"}},{{"kty":"RSA","kid":"k2","n":"{}","e":"AQAB"}}]}}"#,
            test_keys::RSA_2048_N,
            test_keys::RSA_2048_N
        );
        jwks::parse(doc.as_bytes()).unwrap().set
    }

    fn cfg() -> Config {
        let c = json!({
            "providers": {
                "okta": {
                    "issuer": ISS, "audiences": ["api://default"],
                    "jwks": {"uri": "https://idp.example/k", "cluster": "idp"},
                    "from": [{"header": "authorization", "prefix": "Bearer "}, {"query": "access_token"}, {"cookie": "at"}],
                    "claims_to_headers": [{"claim": "sub", "header": "x-jwt-sub"}, {"claim": "scp", "header": "x-jwt-scopes"}],
                    "payload_header": "x-jwt-payload"
                },
                "fwd": {
                    "issuer": "https://idp.example/oauth2/fwd", "audiences": ["api://default"],
                    "jwks": {"uri": "https://idp.example/k2", "cluster": "idp"},
                    "forward_token": true
                }
            },
            "rules": [
                {"match": {"prefix": "/healthz"}, "auth": "none"},
                {"match": {"prefix": "/public"}, "auth": "optional"},
                {"match": {"prefix": "/orders", "methods": ["POST"]}, "scopes": {"all": ["orders:write"]}},
                {"match": {"template": "/users/{id}"}, "claims": [{"claim": "uid", "equals_param": "id"}]},
                {"match": {"prefix": "/okta-only"}, "providers": ["okta"]}
            ],
            "realm": "api"
        });
        config::parse(c.to_string().as_bytes()).unwrap()
    }

    fn token_with(header: serde_json::Value, claims: serde_json::Value, sig: &[u8]) -> String {
        let b = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.{}",
            b(&header),
            b(&claims),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"iss": ISS, "aud": "api://default", "iat": NOW - 5, "exp": NOW + 3600,
                           "sub": "alice", "cid": "0oa1", "uid": "00u1", "scp": ["orders:read"]});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn good(extra: serde_json::Value) -> String {
        token_with(json!({"alg": "RS256", "kid": "k1"}), claims(extra), b"good")
    }

    fn run_with(keys: &Keys, method: &str, path: &str, headers: &[(&str, &str)]) -> Decision {
        let config = cfg();
        let env = Env {
            config: &config,
            cache: None,
            keys,
            verifier: &FakeVerifier,
            now: NOW,
            now_ms: NOW * 1000,
            store: None,
            limit_hasher: ratelimit::KeyHasher::new(1, 2),
        };
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        decide(&env, method, path, &headers, None)
    }

    fn run(method: &str, path: &str, headers: &[(&str, &str)]) -> Decision {
        run_with(&Keys::Ready(key_set()), method, path, headers)
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn denied(d: &Decision) -> Option<Reason> {
        match d.outcome {
            Outcome::Deny { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn valid_token_is_allowed_with_claim_headers_and_without_the_token() {
        let t = good(json!({}));
        let d = run(
            "GET",
            "/anything",
            &[("authorization", &bearer(&t)), ("x-jwt-sub", "mallory")],
        );
        assert_eq!(d.outcome, Outcome::Allow, "{}", d.detail);
        assert_eq!(
            d.ops[0],
            HeaderOp::Remove("x-jwt-sub".into()),
            "spoofed header stripped first"
        );
        assert!(d
            .ops
            .contains(&HeaderOp::Set("x-jwt-sub".into(), "alice".into())));
        assert!(d
            .ops
            .contains(&HeaderOp::Set("x-jwt-scopes".into(), "orders:read".into())));
        let payload = t.split('.').nth(1).unwrap();
        assert!(d
            .ops
            .contains(&HeaderOp::Set("x-jwt-payload".into(), payload.into())));
        assert!(d.ops.contains(&HeaderOp::Remove("authorization".into())));
        assert_eq!(d.sub.as_deref(), Some("alice"));
        assert_eq!(d.cid.as_deref(), Some("0oa1"));
        assert!(d.identity_verified);
        assert_eq!(d.path, None, "path unchanged");
    }

    #[test]
    fn spec_response_rows() {
        let cases: Vec<(String, Reason)> = vec![
            (good(json!({"exp": NOW - 61})), Reason::Expired),
            (good(json!({"nbf": NOW + 61})), Reason::NotYetValid),
            (good(json!({"iat": NOW + 61})), Reason::IssuedInFuture),
            (good(json!({"iss": format!("{ISS}/")})), Reason::WrongIssuer),
            (good(json!({"aud": "api://other"})), Reason::WrongAudience),
            (good(json!({"exp": null})), Reason::MissingExp),
            (
                token_with(
                    json!({"alg": "RS256", "kid": "k1"}),
                    claims(json!({})),
                    b"bad",
                ),
                Reason::BadSignature,
            ),
            (
                token_with(
                    json!({"alg": "RS256", "kid": "nope"}),
                    claims(json!({})),
                    b"good",
                ),
                Reason::UnknownKid,
            ),
            (
                token_with(
                    json!({"alg": "ES256", "kid": "k1"}),
                    claims(json!({})),
                    b"good",
                ),
                Reason::UnsupportedAlg,
            ),
            (
                token_with(json!({"alg": "none"}), claims(json!({})), b"good"),
                Reason::UnsupportedAlg,
            ),
            (
                token_with(
                    json!({"alg": "HS256", "kid": "k1"}),
                    claims(json!({})),
                    b"good",
                ),
                Reason::UnsupportedAlg,
            ),
            (
                token_with(
                    json!({"alg": "RS256", "kid": "k1", "jku": "https://evil/"}),
                    claims(json!({})),
                    b"good",
                ),
                Reason::ForbiddenHeader,
            ),
            ("not.a.token".into(), Reason::Malformed),
            ("x".repeat(9000), Reason::TokenTooLarge),
        ];
        for (token, want) in cases {
            let d = run("GET", "/x", &[("authorization", &bearer(&token))]);
            assert_eq!(denied(&d), Some(want), "{}", d.detail);
        }
        let d = run("GET", "/x", &[]);
        assert_eq!(denied(&d), Some(Reason::MissingToken));
    }

    #[test]
    fn unknown_kid_waits_for_a_refetch_only_when_one_may_run() {
        let unknown = token_with(
            json!({"alg": "RS256", "kid": "new"}),
            claims(json!({})),
            b"good",
        );
        let h = [("authorization", bearer(&unknown))];
        let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let d = run_with(&Keys::Refetchable(key_set()), "GET", "/x", &h);
        assert_eq!(
            d.outcome,
            Outcome::Wait {
                provider: 1,
                refetch: true
            }
        );
        let d = run_with(&Keys::Ready(key_set()), "GET", "/x", &h);
        assert_eq!(denied(&d), Some(Reason::UnknownKid));
        // A known kid with a bad signature never waits.
        let bad = token_with(
            json!({"alg": "RS256", "kid": "k1"}),
            claims(json!({})),
            b"bad",
        );
        let h = [("authorization", bearer(&bad))];
        let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let d = run_with(&Keys::Refetchable(key_set()), "GET", "/x", &h);
        assert_eq!(denied(&d), Some(Reason::BadSignature));
    }

    /// Counts signature checks, to prove a cache hit does none.
    struct CountingVerifier(std::cell::Cell<u32>);
    impl SignatureVerifier for CountingVerifier {
        fn verify(&self, key: &PublicKey, token: &Signed<'_>) -> bool {
            self.0.set(self.0.get() + 1);
            FakeVerifier.verify(key, token)
        }
        fn name(&self) -> &'static str {
            "counting"
        }
    }

    struct Cached {
        config: Config,
        cache: RefCell<TokenCache>,
        verifier: CountingVerifier,
    }

    impl Cached {
        fn new() -> Cached {
            Cached {
                config: cfg(),
                cache: RefCell::new(TokenCache::new(16)),
                verifier: CountingVerifier(Default::default()),
            }
        }
        fn run(&self, keys: &Keys, now: u64, method: &str, path: &str, token: &str) -> Decision {
            let env = Env {
                config: &self.config,
                cache: Some(&self.cache),
                keys,
                verifier: &self.verifier,
                now,
                now_ms: now * 1000,
                store: None,
                limit_hasher: ratelimit::KeyHasher::new(1, 2),
            };
            let headers = vec![("authorization".to_string(), bearer(token))];
            decide(&env, method, path, &headers, None)
        }
    }

    fn limited_cfg() -> Config {
        let c = json!({
            "providers": {"okta": {"issuer": ISS, "audiences": ["api://default"],
                                   "jwks": {"uri": "https://idp.example/k", "cluster": "idp"}}},
            "rules": [
                {"match": {"prefix": "/sub"}, "rate_limits": [{"key": "claim:sub", "requests": 2, "per_s": 60}]},
                {"match": {"prefix": "/two"}, "rate_limits": [
                    {"key": "claim:sub", "requests": 5, "per_s": 60},
                    {"key": "header:x-api-key", "requests": 1, "per_s": 60}]},
                {"match": {"prefix": "/open"}, "auth": "none", "rate_limits": [{"key": "ip", "requests": 1, "per_s": 10}]}
            ]
        });
        config::parse(c.to_string().as_bytes()).unwrap()
    }

    fn limited_run(
        config: &Config,
        store: &MemoryStore,
        now_ms: u64,
        path: &str,
        headers: &[(&str, &str)],
        ip: Option<&str>,
    ) -> Decision {
        let keys = Keys::Ready(key_set());
        let env = Env {
            config,
            cache: None,
            keys: &keys,
            verifier: &FakeVerifier,
            now: now_ms / 1000,
            now_ms,
            store: Some(store),
            limit_hasher: ratelimit::KeyHasher::new(1, 2),
        };
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        decide(&env, "GET", path, &headers, ip)
    }

    fn limited_store(config: &Config) -> MemoryStore {
        let store = MemoryStore::default();
        for r in &config.rules {
            ratelimit::ensure_records(&store, r.index, &r.rate_limits).unwrap();
        }
        store
    }

    #[test]
    fn rate_limits_apply_after_authentication() {
        let config = limited_cfg();
        let store = limited_store(&config);
        let now = NOW * 1000;
        let alice = bearer(&good(json!({})));
        let bob = bearer(&good(json!({"sub": "bob"})));
        let invalid = bearer(&token_with(
            json!({"alg": "RS256", "kid": "k1"}),
            claims(json!({})),
            b"bad",
        ));
        for _ in 0..3 {
            let d = limited_run(
                &config,
                &store,
                now,
                "/sub",
                &[("authorization", &invalid)],
                None,
            );
            assert_eq!(
                denied(&d),
                Some(Reason::BadSignature),
                "401, not 429, and nothing spent"
            );
        }
        let d = limited_run(
            &config,
            &store,
            now,
            "/sub",
            &[("authorization", &alice)],
            None,
        );
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(
            d.rate,
            Some(LimitState {
                limit: 2,
                remaining: 1,
                reset_s: 30
            })
        );
        assert_eq!(
            limited_run(
                &config,
                &store,
                now,
                "/sub",
                &[("authorization", &alice)],
                None
            )
            .outcome,
            Outcome::Allow
        );
        let d = limited_run(
            &config,
            &store,
            now,
            "/sub",
            &[("authorization", &alice)],
            None,
        );
        assert_eq!(denied(&d), Some(Reason::RateLimited));
        assert_eq!(d.retry_after_s, Some(30));
        assert_eq!(d.rate.map(|r| r.remaining), Some(0));
        assert_eq!(
            limited_run(
                &config,
                &store,
                now,
                "/sub",
                &[("authorization", &bob)],
                None
            )
            .outcome,
            Outcome::Allow,
            "bob has his own bucket"
        );
        assert_eq!(
            limited_run(
                &config,
                &store,
                now + 30_000,
                "/sub",
                &[("authorization", &alice)],
                None
            )
            .outcome,
            Outcome::Allow,
            "refilled"
        );
    }

    #[test]
    fn every_limit_must_admit_and_a_refusal_spends_nothing() {
        let config = limited_cfg();
        let store = limited_store(&config);
        let now = NOW * 1000;
        let alice = bearer(&good(json!({})));
        let h = [("authorization", alice.as_str()), ("x-api-key", "k")];
        assert_eq!(
            limited_run(&config, &store, now, "/two", &h, None).outcome,
            Outcome::Allow
        );
        for _ in 0..5 {
            let d = limited_run(&config, &store, now, "/two", &h, None);
            assert_eq!(denied(&d), Some(Reason::RateLimited));
        }
        // The sub limit was refunded each time: 4 of its 5 are left for another api key.
        for i in 0..4 {
            let k = format!("other-{i}");
            let h = [("authorization", alice.as_str()), ("x-api-key", k.as_str())];
            assert_eq!(
                limited_run(&config, &store, now, "/two", &h, None).outcome,
                Outcome::Allow
            );
        }
        let h = [("authorization", alice.as_str()), ("x-api-key", "fresh")];
        assert_eq!(
            denied(&limited_run(&config, &store, now, "/two", &h, None)),
            Some(Reason::RateLimited),
            "sub limit spent"
        );
    }

    #[test]
    fn ip_key_on_an_open_route() {
        let config = limited_cfg();
        let store = limited_store(&config);
        let now = NOW * 1000;
        assert_eq!(
            limited_run(&config, &store, now, "/open", &[], Some("10.0.0.1")).outcome,
            Outcome::Allow
        );
        assert_eq!(
            denied(&limited_run(
                &config,
                &store,
                now,
                "/open",
                &[],
                Some("10.0.0.1")
            )),
            Some(Reason::RateLimited)
        );
        assert_eq!(
            limited_run(&config, &store, now, "/open", &[], Some("10.0.0.2")).outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn cache_hit_skips_verification_but_not_policy() {
        let c = Cached::new();
        let keys = Keys::Ready(key_set());
        let t = good(json!({}));
        let first = c.run(&keys, NOW, "GET", "/x", &t);
        assert_eq!(
            (first.outcome.clone(), first.cache_hit),
            (Outcome::Allow, Some(false))
        );
        assert_eq!(c.verifier.0.get(), 1);
        let second = c.run(&keys, NOW, "GET", "/x", &t);
        assert_eq!(
            (second.outcome.clone(), second.cache_hit),
            (Outcome::Allow, Some(true))
        );
        assert_eq!(c.verifier.0.get(), 1, "no signature check on a hit");
        assert_eq!(second.ops, first.ops, "same headers upstream");
        assert_eq!(second.sub.as_deref(), Some("alice"));
        // Policy still runs on a hit.
        let d = c.run(&keys, NOW, "POST", "/orders", &t);
        assert_eq!(d.cache_hit, Some(true));
        assert_eq!(denied(&d), Some(Reason::InsufficientScope));
        let d = c.run(&keys, NOW, "GET", "/users/someone-else", &t);
        assert_eq!(denied(&d), Some(Reason::ClaimMismatch));
    }

    /// A profiling aid, not a timing test: `valgrind --tool=callgrind` on the release test
    /// binary with `--ignored profile_decide` counts the core's instructions per request.
    #[test]
    #[ignore = "profiling aid; see README, Performance"]
    fn profile_decide() {
        let c = Cached::new();
        let keys = Keys::Ready(key_set());
        let t = good(json!({}));
        for _ in 0..10_000 {
            assert_eq!(
                c.run(&keys, NOW, "GET", "/api/orders/1", &t).outcome,
                Outcome::Allow
            );
        }
        assert_eq!(
            c.verifier.0.get(),
            1,
            "every request after the first is a cache hit"
        );
    }

    #[test]
    fn cache_entry_is_never_used_past_exp_plus_skew() {
        let c = Cached::new();
        let keys = Keys::Ready(key_set());
        let t = good(json!({"exp": NOW + 10}));
        assert_eq!(c.run(&keys, NOW, "GET", "/x", &t).outcome, Outcome::Allow);
        assert_eq!(
            c.run(&keys, NOW + 70, "GET", "/x", &t).cache_hit,
            Some(true)
        );
        let d = c.run(&keys, NOW + 71, "GET", "/x", &t);
        assert_eq!(denied(&d), Some(Reason::Expired));
        assert_eq!(d.cache_hit, None, "not served from the cache");
        assert_eq!(
            c.verifier.0.get(),
            1,
            "refused on its claims, before any check"
        );
    }

    #[test]
    fn cache_entry_dies_with_its_key() {
        let c = Cached::new();
        let t = good(json!({}));
        assert_eq!(
            c.run(&Keys::Ready(key_set()), NOW, "GET", "/x", &t).outcome,
            Outcome::Allow
        );
        // The IdP dropped k1: same kid, different material, so a different fingerprint.
        let mut rotated = key_set();
        rotated.keys.retain(|k| k.kid.as_deref() != Some("k1"));
        let d = c.run(&Keys::Ready(rotated), NOW, "GET", "/x", &t);
        assert_eq!(denied(&d), Some(Reason::UnknownKid));
        assert_eq!(c.verifier.0.get(), 1, "the stale entry was not used");
    }

    #[test]
    fn cache_respects_the_rules_providers() {
        let c = Cached::new();
        let keys = Keys::Ready(key_set());
        let fwd = token_with(
            json!({"alg": "RS256", "kid": "k1"}),
            claims(json!({"iss": "https://idp.example/oauth2/fwd"})),
            b"good",
        );
        assert_eq!(c.run(&keys, NOW, "GET", "/x", &fwd).outcome, Outcome::Allow);
        let d = c.run(&keys, NOW, "GET", "/okta-only", &fwd);
        assert_eq!(
            denied(&d),
            Some(Reason::WrongIssuer),
            "a hit for another provider is not used"
        );
    }

    #[test]
    fn kidless_token_tries_every_fitting_key() {
        let t = token_with(json!({"alg": "RS256"}), claims(json!({})), b"good");
        assert_eq!(
            run("GET", "/x", &[("authorization", &bearer(&t))]).outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn scope_and_claim_policy() {
        let d = run(
            "POST",
            "/orders",
            &[("authorization", &bearer(&good(json!({}))))],
        );
        assert_eq!(
            d.outcome,
            Outcome::Deny {
                reason: Reason::InsufficientScope,
                scope: Some("orders:write".into())
            }
        );
        let t = good(json!({"scp": ["orders:write"]}));
        assert_eq!(
            run("POST", "/orders", &[("authorization", &bearer(&t))]).outcome,
            Outcome::Allow
        );
        let t = good(json!({}));
        assert_eq!(
            run("GET", "/users/00u1", &[("authorization", &bearer(&t))]).outcome,
            Outcome::Allow
        );
        let d = run("GET", "/users/00u2", &[("authorization", &bearer(&t))]);
        assert_eq!(denied(&d), Some(Reason::ClaimMismatch));
    }

    #[test]
    fn auth_none_and_optional() {
        let d = run("GET", "/healthz", &[("x-jwt-sub", "spoof")]);
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(
            d.ops,
            vec![HeaderOp::Remove("x-jwt-sub".into())],
            "stripped even on auth none"
        );
        let d = run("GET", "/healthz", &[("authorization", "Bearer garbage")]);
        assert_eq!(d.outcome, Outcome::Allow, "auth none ignores tokens");
        assert_eq!(run("GET", "/public/x", &[]).outcome, Outcome::Allow);
        let d = run("GET", "/public/x", &[("authorization", "Bearer garbage")]);
        assert_eq!(
            denied(&d),
            Some(Reason::Malformed),
            "a present token must be valid"
        );
        let t = good(json!({}));
        assert_eq!(
            run("GET", "/public/x", &[("authorization", &bearer(&t))]).outcome,
            Outcome::Allow
        );
    }

    #[test]
    fn query_and_cookie_tokens_are_removed() {
        let t = good(json!({}));
        let d = run("GET", &format!("/x?a=1&access_token={t}&b=2"), &[]);
        assert_eq!(d.outcome, Outcome::Allow, "{}", d.detail);
        assert_eq!(d.path.as_deref(), Some("/x?a=1&b=2"));
        let d = run("GET", &format!("/x?access_token={t}"), &[]);
        assert_eq!(d.path.as_deref(), Some("/x"));
        let cookie = format!("theme=dark; at={t}; lang=en");
        let d = run("GET", "/x", &[("cookie", &cookie)]);
        assert_eq!(d.outcome, Outcome::Allow);
        assert!(d.ops.contains(&HeaderOp::Set(
            "cookie".into(),
            "theme=dark; lang=en".into()
        )));
        let cookie = format!("at={t}");
        let d = run("GET", "/x", &[("cookie", &cookie)]);
        assert!(d.ops.contains(&HeaderOp::Remove("cookie".into())));
    }

    #[test]
    fn forward_token_keeps_it() {
        let t = token_with(
            json!({"alg": "RS256", "kid": "k1"}),
            claims(json!({"iss": "https://idp.example/oauth2/fwd"})),
            b"good",
        );
        let d = run("GET", "/x", &[("authorization", &bearer(&t))]);
        assert_eq!(d.outcome, Outcome::Allow);
        assert!(!d.ops.contains(&HeaderOp::Remove("authorization".into())));
        let d = run("GET", "/okta-only", &[("authorization", &bearer(&t))]);
        assert_eq!(
            denied(&d),
            Some(Reason::WrongIssuer),
            "provider not allowed by the rule"
        );
    }

    #[test]
    fn paths_are_normalized_before_matching() {
        let d = run("GET", "/healthz/../orders", &[]);
        assert_eq!(
            denied(&d),
            Some(Reason::MissingToken),
            "not treated as /healthz"
        );
        let d = run("GET", "/../etc", &[]);
        assert_eq!(denied(&d), Some(Reason::BadPath));
        let d = run("GET", "/healthz/%2e%2e/admin%2Fx", &[]);
        assert_eq!(denied(&d), Some(Reason::BadPath));
        let d = run("GET", "//healthz//./x", &[]);
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(
            d.path.as_deref(),
            Some("/healthz/x"),
            "upstream sees what was authorized"
        );
    }

    #[test]
    fn cors_preflight_bypass() {
        let pre = [
            ("origin", "https://app"),
            ("access-control-request-method", "POST"),
        ];
        assert_eq!(run("OPTIONS", "/orders", &pre).outcome, Outcome::Allow);
        assert_eq!(
            denied(&run("OPTIONS", "/orders", &pre[..1])),
            Some(Reason::MissingToken)
        );
    }

    #[test]
    fn key_states() {
        let t = good(json!({}));
        let h = [("authorization", bearer(&t))];
        let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (*a, b.as_str())).collect();
        assert_eq!(
            run_with(&Keys::Pending, "GET", "/x", &h).outcome,
            Outcome::Wait {
                provider: 1,
                refetch: false
            }
        );
        assert_eq!(
            denied(&run_with(&Keys::Unavailable, "GET", "/x", &h)),
            Some(Reason::JwksUnavailable)
        );
        // Requests that need no key are never held up.
        assert_eq!(
            run_with(&Keys::Pending, "GET", "/healthz", &[]).outcome,
            Outcome::Allow
        );
        assert_eq!(
            denied(&run_with(&Keys::Pending, "GET", "/x", &[])),
            Some(Reason::MissingToken)
        );
    }
    /// Claims are checked before the signature (as jwt_authn does): an expired or misdirected
    /// token costs no verification, never waits for keys and never asks for a refetch, and
    /// the sub it claims is reported as unverified.
    #[test]
    fn bad_claims_cost_no_signature_check_and_no_wait() {
        let c = Cached::new();
        let expired = token_with(
            json!({"alg": "RS256", "kid": "unknown"}),
            claims(json!({"exp": NOW - 61})),
            b"forged",
        );
        for keys in [
            Keys::Ready(key_set()),
            Keys::Refetchable(key_set()),
            Keys::Pending,
        ] {
            let d = c.run(&keys, NOW, "GET", "/x", &expired);
            assert_eq!(denied(&d), Some(Reason::Expired));
            assert_eq!(d.sub.as_deref(), Some("alice"));
            assert!(!d.identity_verified, "the sub is only claimed");
        }
        let wrong_aud = token_with(
            json!({"alg": "RS256", "kid": "k1"}),
            claims(json!({"aud": "api://other"})),
            b"good",
        );
        let d = c.run(&Keys::Ready(key_set()), NOW, "GET", "/x", &wrong_aud);
        assert_eq!(denied(&d), Some(Reason::WrongAudience));
        assert_eq!(c.verifier.0.get(), 0, "no signature was checked");
        // A valid token still gets its signature checked, and a forged one is refused.
        let forged = token_with(
            json!({"alg": "RS256", "kid": "k1"}),
            claims(json!({})),
            b"x",
        );
        let d = c.run(&Keys::Ready(key_set()), NOW, "GET", "/x", &forged);
        assert_eq!(denied(&d), Some(Reason::BadSignature));
        assert_eq!(c.verifier.0.get(), 1);
    }
}
