//! The decision for one request, as a pipeline of stages: path, protected headers, rule,
//! authentication, authorization, rate limits, forwarding. Each stage returns
//! `Result<_, Denial>` (or `Halt`, which adds what a response or a wait needs); the decision is
//! built once, here.

use std::borrow::Cow;

use crate::core::config::model::{Auth, Config, Rule};
use crate::core::denial::{Denial, Reason};
use crate::core::ratelimit::limits::Count;
use crate::core::request::client_address;
use crate::core::request::matcher::Params;
use crate::core::request::path::{self, RequestPath};
use crate::core::request::view::Request;

use super::abuse;
use super::authenticate::authenticate;
use super::authorize::{self, Limits};
use super::env::{Env, Incoming};
use super::halt::Halt;
use super::identity::Verification;
use super::outcome::{Decision, HeaderOp, Outcome};

pub fn decide(env: &mut Env<'_>, incoming: &Incoming<'_>) -> Decision {
    let mut d = Decision::new(Outcome::Allow);
    if env.trace {
        d.checks = Some(Vec::new());
    }
    let normalized = match path::normalize(incoming.path, env.config.path_parameters) {
        Ok(p) => p,
        Err(e) => {
            let denial = Denial::new(Reason::BadPath, e.as_str());
            let _ = d.step::<(), _>("path", Err(denial));
            return d.deny(denial);
        }
    };
    d.note("path", true, || Some(normalized.path.to_string()));
    let req = request(env, incoming, &normalized);
    strip_protected(env.config, &req, &mut d.ops);
    let mut new_query = None;
    if env.config.bypass_cors_preflight && req.is_cors_preflight() {
        d.detail = "cors preflight";
        d.note("cors_preflight", true, || Some("passes unchecked".into()));
    } else {
        match apply_rule(env, &req, &mut d) {
            Ok(query) => new_query = query,
            Err(halt) => return halted(d, halt),
        }
    }
    d.path = upstream_path(&normalized, new_query);
    d
}

/// After the final decision (a gate may decide twice, or turn a wait into a 401): a 401 of a
/// rule that counts failures takes from its failure buckets, once per request.
pub fn charge_failure(env: &Env<'_>, incoming: &Incoming<'_>, d: Decision) -> Decision {
    let counts = d
        .rule
        .and_then(|i| env.config.rules.get(i))
        .is_some_and(|r| r.rate_limits.iter().any(|l| l.count == Count::Denied));
    let failed = matches!(d.outcome, Outcome::Deny { reason, .. } if reason.status() == 401);
    if !(counts && failed) {
        return d;
    }
    // The path was normalized once already, so this cannot fail; refused all the same.
    let Ok(normalized) = path::normalize(incoming.path, env.config.path_parameters) else {
        return d;
    };
    let req = request(env, incoming, &normalized);
    abuse::count_failure(env, &req, d)
}

/// The request as the stages see it: normalized path, the client address `client_ip` picks.
fn request<'r>(
    env: &Env<'_>,
    incoming: &Incoming<'r>,
    normalized: &'r RequestPath<'r>,
) -> Request<'r> {
    Request {
        method: incoming.method,
        path: &normalized.path,
        query: normalized.query,
        headers: incoming.headers,
        client_ip: client_address::choose(
            incoming.client_ip,
            incoming.headers,
            env.config.xff_trusted_hops,
        ),
        raw_path: incoming.path,
        client_cert: incoming.client_cert,
    }
}

/// Stage: anti-spoofing comes first and applies to every request, whatever the rule.
fn strip_protected(cfg: &Config, req: &Request<'_>, ops: &mut Vec<HeaderOp>) {
    for h in &cfg.protected_headers {
        if req.header(h).is_some() {
            ops.push(HeaderOp::Remove(h.clone()));
        }
    }
}

/// The rule that applies: the first that matches, or the default rule.
struct Selected<'c, 'r> {
    rule: &'c Rule,
    /// Position in `rules`; `None` for the default rule.
    index: Option<usize>,
    params: Params<'r>,
}

/// Stage: the first matching rule, else the default one (`auth: required`, any provider).
fn select_rule<'c: 'r, 'r>(cfg: &'c Config, req: &Request<'r>) -> Selected<'c, 'r> {
    cfg.rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| {
            r.matcher.matches(req).map(|params| Selected {
                rule: r,
                index: Some(i),
                params,
            })
        })
        .unwrap_or(Selected {
            rule: &cfg.default_rule,
            index: None,
            params: Vec::new(),
        })
}

/// The rule's checks and effects. Gives the new query when the token was taken out of it.
fn apply_rule<'c>(
    env: &mut Env<'c>,
    req: &Request<'_>,
    d: &mut Decision,
) -> Result<Option<String>, Halt> {
    let cfg: &'c Config = env.config;
    let selected = select_rule(cfg, req);
    let rule = selected.rule;
    d.rule = selected.index;
    d.note("rule", true, || {
        Some(
            selected
                .index
                .map_or("no rule matched: auth required".into(), |i| {
                    format!("rules[{i}]")
                }),
        )
    });
    let screened = abuse::screen(env, rule, selected.index, req, d);
    if rule.ip.is_some() || screened.is_err() {
        d.step("client_address", screened)?;
    }
    let identity = match rule.auth {
        Auth::None => None,
        Auth::Required | Auth::Optional => authenticate(env, rule, req, d)?,
    };
    if let Some(id) = &identity {
        d.cache_hit = match id.verification {
            Verification::Cached => Some(true),
            Verification::Signature => Some(false),
            Verification::Introspected => None,
        };
        d.sub = id.sub().map(str::to_owned);
        d.cid = id.client_id().map(str::to_owned);
        log_claims(cfg, &id.claims, d);
        let policy = authorize::check_policy(rule, &id.claims, &selected.params);
        d.step("policy", policy)?;
    }
    if let Some(index) = selected.index.filter(|_| !rule.rate_limits.is_empty()) {
        let claims = identity.as_ref().map(|id| &*id.claims);
        let charged = authorize::charge_limits(env, Limits { rule, index }, claims, req);
        d.rate = d.step("rate_limits", charged)?;
    }
    let Some(id) = identity else {
        return Ok(None);
    };
    // The index comes from the configuration; refused all the same if it did not.
    let Some(p) = cfg.providers.get(id.provider) else {
        return Err(Denial::new(Reason::WrongIssuer, "provider not configured").into());
    };
    authorize::forward_claims(p, &id, &mut d.ops);
    d.note("forward", true, || None);
    d.detail = "verified";
    Ok(match p.forward_token {
        true => None,
        false => authorize::remove_token(id.source, req, &mut d.ops),
    })
}

/// The values of the claims `log.claims` names, for the decision log.
fn log_claims(cfg: &Config, claims: &serde_json::Map<String, serde_json::Value>, d: &mut Decision) {
    for path in &cfg.log.claims {
        if let Some(v) = path.lookup(claims) {
            d.logged_claims.push((path.as_dotted(), v.clone()));
        }
    }
}

/// The decision once a stage stopped the pipeline.
fn halted(mut d: Decision, halt: Halt) -> Decision {
    match halt {
        Halt::Deny(denial) => d.deny(denial),
        Halt::Scope(scope) => {
            d.detail = "required scopes missing";
            d.outcome = Outcome::Deny {
                reason: Reason::InsufficientScope,
                scope: Some(scope),
            };
            d
        }
        Halt::Limited {
            state,
            retry_after_s,
        } => {
            d.rate = Some(state);
            d.retry_after_s = Some(retry_after_s);
            d.deny(Denial::new(Reason::RateLimited, "rate limit exceeded"))
        }
        Halt::Wait {
            provider,
            refetch,
            detail,
        } => {
            d.outcome = Outcome::Wait { provider, refetch };
            d.detail = detail;
            d
        }
        Halt::NeedClientCert => {
            d.outcome = Outcome::NeedClientCert;
            d.detail = "the client certificate is needed";
            d
        }
        Halt::Introspect {
            provider,
            key,
            token,
        } => {
            d.outcome = Outcome::Introspect {
                provider,
                key,
                token,
            };
            d.provider = Some(provider);
            d.detail = "waiting for the introspection answer";
            d
        }
    }
}

/// The `:path` to send upstream when it differs from what arrived: normalized, or without a
/// query-parameter token.
fn upstream_path(normalized: &RequestPath<'_>, new_query: Option<String>) -> Option<String> {
    if !normalized.changed && new_query.is_none() {
        return None;
    }
    let query = match new_query {
        Some(q) => (!q.is_empty()).then_some(Cow::Owned(q)),
        None => normalized.query.map(Cow::Borrowed),
    };
    Some(match query {
        Some(q) => format!("{}?{}", normalized.path, q),
        None => normalized.path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::compile as config;
    use crate::core::crypto::public_key::PublicKey;
    use crate::core::crypto::verifier::SignatureVerifier;
    use crate::core::crypto::verifier::Signed;
    use crate::core::decision::response;
    use crate::core::keys::jwk_set as jwks;
    use crate::core::keys::jwk_set::KeySet;
    use crate::core::keys::state::{KeySource, KeyState};
    use crate::core::ratelimit::charge::{self as ratelimit, LimitState};
    use crate::core::store::MemoryStore;
    use crate::core::store::SharedStore;
    use crate::core::test_keys;
    use crate::core::token::cache::TokenCache;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;
    use std::cell::RefCell;

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

    /// One decision under test: what `Env` needs, with defaults that tests override.
    struct Case<'a> {
        config: &'a Config,
        keys: &'a dyn KeySource,
        verifier: &'a dyn SignatureVerifier,
        cache: Option<&'a mut TokenCache>,
        store: Option<&'a dyn SharedStore>,
        now_ms: u64,
    }

    fn case<'a>(config: &'a Config, keys: &'a dyn KeySource) -> Case<'a> {
        Case {
            config,
            keys,
            verifier: &FakeVerifier,
            cache: None,
            store: None,
            now_ms: NOW * 1000,
        }
    }

    impl Case<'_> {
        fn decide(
            self,
            method: &str,
            path: &str,
            headers: &[(&str, &str)],
            ip: Option<&str>,
        ) -> Decision {
            let mut env = Env {
                config: self.config,
                cache: self.cache,
                keys: self.keys,
                answers: &crate::core::introspection::answers::NoAnswers,
                verifier: self.verifier,
                now: self.now_ms / 1000,
                now_ms: self.now_ms,
                store: self.store,
                limit_hasher: ratelimit::KeyHasher::new(1, 2),
                trace: false,
            };
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let incoming = Incoming {
                method,
                path,
                headers: &headers,
                client_ip: ip,
                client_cert: crate::core::request::view::ClientCert::Unread,
            };
            decide(&mut env, &incoming)
        }
    }

    fn run_with(keys: &Keys, method: &str, path: &str, headers: &[(&str, &str)]) -> Decision {
        case(&cfg(), keys).decide(method, path, headers, None)
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
            let mut cache = self.cache.borrow_mut();
            let auth = bearer(token);
            Case {
                verifier: &self.verifier,
                cache: Some(&mut cache),
                now_ms: now * 1000,
                ..case(&self.config, keys)
            }
            .decide(method, path, &[("authorization", &auth)], None)
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
        Case {
            store: Some(store),
            now_ms,
            ..case(config, &keys)
        }
        .decide("GET", path, headers, ip)
    }

    fn limited_store(config: &Config) -> MemoryStore {
        let store = MemoryStore::default();
        for (i, r) in config.rules.iter().enumerate() {
            ratelimit::ensure_records(&store, i, &r.rate_limits).unwrap();
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

    /// Unique tokens (every request a cache miss): `valgrind --tool=callgrind` on the release
    /// test binary with `--ignored profile_decide_unique` counts the core's instructions.
    #[test]
    #[ignore = "profiling aid"]
    fn profile_decide_unique() {
        let c = Cached::new();
        let keys = Keys::Ready(key_set());
        let tokens: Vec<String> = (0..2_000)
            .map(|i| good(json!({"jti": format!("t{i}")})))
            .collect();
        for t in &tokens {
            assert_eq!(
                c.run(&keys, NOW, "GET", "/api/orders/1", t).outcome,
                Outcome::Allow
            );
        }
        assert_eq!(c.verifier.0.get(), 2_000);
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
    fn more_than_one_token_is_an_invalid_request() {
        let t = good(json!({}));
        let bearer_t = bearer(&t);
        let cookie = format!("at={t}");
        let query = format!("/x?access_token={t}");
        let twice = format!("/x?access_token={t}&access_token={t}");
        let two_cookies = format!("{cookie}; {cookie}");
        // How Envoy presents two Authorization headers.
        let joined = format!("{bearer_t},{bearer_t}");
        let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "/x",
                vec![("authorization", &bearer_t), ("authorization", &bearer_t)],
            ),
            (&query, vec![("authorization", &bearer_t)]),
            (
                "/x",
                vec![("authorization", &bearer_t), ("cookie", &cookie)],
            ),
            (&twice, vec![]),
            ("/x", vec![("cookie", &two_cookies)]),
            ("/x", vec![("authorization", &joined)]),
        ];
        for (path, headers) in &cases {
            let d = run("GET", path, headers);
            assert_eq!(
                denied(&d),
                Some(Reason::MultipleTokens),
                "{path} {headers:?}"
            );
        }
        // A header of another scheme is not a token; one token is allowed.
        let d = run("GET", &query, &[("authorization", "Basic dXNlcjpwdw==")]);
        assert_eq!(d.outcome, Outcome::Allow, "{}", d.detail);
        let r = response::denial(Some("api"), Reason::MultipleTokens, None, 1, None);
        assert_eq!(r.status, 400);
        let challenge = r.headers.iter().find(|(n, _)| *n == "www-authenticate");
        assert!(
            challenge.is_some_and(
                |(_, v)| v.starts_with("Bearer realm=\"api\", error=\"invalid_request\"")
            )
        );
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
