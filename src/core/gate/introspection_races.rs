//! Introspection through the gate, natively: one call per token however many requests wait,
//! answers cached (active until `cache_s` or `exp`, inactive for `negative_cache_s`), failures
//! answered 503 and never cached, the breaker and the cap on calls in flight, calls whose
//! sender went away sent again, and `tokens: "all"` revoking a JWT.

use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::core::config::compile as config;
use crate::core::crypto::public_key::PublicKey;
use crate::core::crypto::verifier::{SignatureVerifier, Signed};
use crate::core::decision::env::SavedRequest;
use crate::core::decision::outcome::{Decision, Outcome};
use crate::core::denial::Reason;
use crate::core::introspection::call::CallRequest;
use crate::core::ratelimit::hash_key::KeyHasher;
use crate::core::store::MemoryStore;
use crate::core::test_keys;

use super::action::Action;
use super::state::{Gate, Handled, Setup};

const NOW_MS: u64 = 1_700_000_000_000;
const NOW: u64 = NOW_MS / 1000;
const ORG: &str = "https://org.example";
const AS: &str = "https://org.example/oauth2/default";

struct FakeVerifier;
impl SignatureVerifier for FakeVerifier {
    fn verify(&self, _key: &PublicKey, signed: &Signed<'_>) -> bool {
        signed.signature == b"good"
    }
    fn name(&self) -> &'static str {
        "fake"
    }
}

fn gate(introspection: Value) -> Gate {
    let mut intro = json!({
        "uri": "https://org.example/oauth2/v1/introspect", "cluster": "okta",
        "client_id": "0oa-client", "client_secret": "s3cret", "timeout_ms": 1000,
        "breaker": {"failures": 2, "cool_down_s": 5}
    });
    for (k, v) in introspection.as_object().unwrap() {
        intro[k] = v.clone();
    }
    let mut jwt_intro = intro.clone();
    jwt_intro["tokens"] = json!("all");
    let c = json!({
        "providers": {
            "org": {"issuer": ORG, "audiences": ["api://default"], "introspection": intro},
            "as": {"issuer": AS, "audiences": ["api://default"],
                   "jwks": {"inline": {"keys": [
                       {"kty": "RSA", "kid": "k1", "n": test_keys::RSA_2048_N, "e": "AQAB"}]}},
                   "introspection": jwt_intro}
        },
        "rules": [
            {"match": {"prefix": "/scoped"}, "providers": ["org"],
             "scopes": {"all": ["orders:read"]}},
            {"match": {"prefix": "/jwt"}, "providers": ["as"]},
            {"match": {"prefix": "/"}, "providers": ["org"]}
        ]
    });
    let config = config::parse(c.to_string().as_bytes()).unwrap();
    Gate::new(Setup {
        config: Rc::new(config),
        verifier: Box::new(FakeVerifier),
        store: Rc::new(MemoryStore::default()),
        owner: 1,
        limit_hasher: KeyHasher::new(1, 2),
    })
}

fn req(path: &str, token: &str) -> SavedRequest {
    SavedRequest {
        method: "GET".into(),
        path: path.into(),
        headers: vec![("authorization".into(), format!("Bearer {token}"))],
        client_ip: None,
        client_cert: None,
    }
}

fn jwt() -> String {
    let b = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        b(json!({"alg": "RS256", "kid": "k1"})),
        b(json!({"iss": AS, "aud": "api://default", "sub": "bob", "exp": NOW + 600})),
        URL_SAFE_NO_PAD.encode(b"good")
    )
}

fn active(extra: Value) -> Vec<u8> {
    let mut a = json!({"active": true, "sub": "alice", "client_id": "0oa-app",
                       "scope": "orders:read profile", "exp": NOW + 3600, "iss": ORG,
                       "aud": "api://default", "token_type": "Bearer"});
    for (k, v) in extra.as_object().unwrap() {
        a[k] = v.clone();
    }
    a.to_string().into_bytes()
}

fn decided(h: Handled) -> Decision {
    match h {
        Handled::Decided(d, _) => d,
        Handled::Parked(_) => panic!("parked"),
        Handled::NeedClientCert(_) => panic!("asks for the certificate"),
    }
}

/// Parks and gives the call to send (or `None` when it joined one in flight).
fn parked(h: Handled) -> Option<CallRequest> {
    match h {
        Handled::Parked(call) => call,
        Handled::Decided(d, _) => panic!("decided: {:?}", d.outcome),
        Handled::NeedClientCert(_) => panic!("asks for the certificate"),
    }
}

fn denied(reason: Reason) -> Outcome {
    Outcome::Deny {
        reason,
        scope: None,
    }
}

/// `(context, outcome, retry_after)` of the answers among `actions`.
fn answers(actions: &[Action]) -> Vec<(u32, Outcome, Option<u64>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer {
                context, decision, ..
            } => Some((*context, decision.outcome.clone(), decision.retry_after_s)),
            _ => None,
        })
        .collect()
}

fn classes(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Introspected { class, .. } => Some(*class),
            _ => None,
        })
        .collect()
}

#[test]
fn one_call_per_token_for_a_burst_then_the_cache() {
    let mut g = gate(json!({}));
    let call = parked(g.on_request(1, req("/a", "opaque-1"), NOW_MS)).expect("a call");
    assert_eq!(call.cluster, "okta");
    assert_eq!(
        call.body.expose(),
        "token=opaque-1&token_type_hint=access_token"
    );
    assert!(call.authorization.expose().starts_with("Basic "));
    assert!(
        !format!("{call:?}").contains("opaque-1"),
        "a call never prints its token"
    );
    for ctx in 2..=20 {
        assert!(parked(g.on_request(ctx, req("/a", "opaque-1"), NOW_MS)).is_none());
    }
    g.introspection_dispatched(call.provider, call.key, 77);
    assert!(g.is_introspection_call(77));
    let body = active(json!({}));
    let out = g.on_introspection_answer(77, Some(200), body.len(), &body, NOW_MS + 5);
    assert_eq!(classes(&out), vec!["active"]);
    let a = answers(&out);
    assert_eq!(a.len(), 20);
    assert!(a.iter().all(|(_, o, _)| *o == Outcome::Allow));
    // From the cache now: decided at once, a hit.
    let d = decided(g.on_request(21, req("/a", "opaque-1"), NOW_MS + 10));
    assert_eq!(d.outcome, Outcome::Allow);
    assert_eq!(d.introspection_hit, Some(true));
    assert_eq!(d.sub.as_deref(), Some("alice"));
    // Until cache_s (60 s by default).
    assert!(parked(g.on_request(22, req("/a", "opaque-1"), NOW_MS + 60_005)).is_some());
}

#[test]
fn scopes_and_claims_come_from_the_answer() {
    let mut g = gate(json!({}));
    let call = parked(g.on_request(1, req("/scoped", "tok-a"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 1);
    let body = active(json!({"scope": "profile"}));
    let out = g.on_introspection_answer(1, Some(200), body.len(), &body, NOW_MS);
    assert!(matches!(
        &answers(&out)[0].1,
        Outcome::Deny { reason: Reason::InsufficientScope, scope: Some(s) } if s == "orders:read"
    ));
    let call = parked(g.on_request(2, req("/scoped", "tok-b"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 2);
    for (body, want) in [
        (active(json!({"iss": "https://evil"})), Reason::WrongIssuer),
        (active(json!({"aud": "api://other"})), Reason::WrongAudience),
        (active(json!({"exp": "tomorrow"})), Reason::Malformed),
        (active(json!({"exp": NOW - 3600})), Reason::Expired),
    ] {
        let mut g = gate(json!({}));
        let call = parked(g.on_request(3, req("/a", "tok-c"), NOW_MS)).unwrap();
        g.introspection_dispatched(call.provider, call.key, 3);
        let out = g.on_introspection_answer(3, Some(200), body.len(), &body, NOW_MS);
        assert_eq!(answers(&out)[0].1, denied(want));
    }
    let mut g = gate(json!({}));
    let call = parked(g.on_request(4, req("/a", "tok-d"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 4);
    let body = br#"{"active": true, "sub": "x"}"#;
    let out = g.on_introspection_answer(4, Some(200), body.len(), body, NOW_MS);
    assert_eq!(answers(&out)[0].1, denied(Reason::MissingExp));
    let mut g = gate(json!({"require_exp": false}));
    let call = parked(g.on_request(4, req("/a", "tok-d"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 4);
    let out = g.on_introspection_answer(4, Some(200), body.len(), body, NOW_MS);
    assert_eq!(answers(&out)[0].1, Outcome::Allow);
}

#[test]
fn inactive_is_401_and_cached_for_negative_cache_s() {
    let mut g = gate(json!({"negative_cache_s": 3}));
    let call = parked(g.on_request(1, req("/a", "revoked"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 9);
    let body = br#"{"active": false}"#;
    let out = g.on_introspection_answer(9, Some(200), body.len(), body, NOW_MS);
    assert_eq!(classes(&out), vec!["inactive"]);
    assert_eq!(answers(&out)[0].1, denied(Reason::InactiveToken));
    let d = decided(g.on_request(2, req("/a", "revoked"), NOW_MS + 2_999));
    assert_eq!(d.outcome, denied(Reason::InactiveToken));
    assert!(parked(g.on_request(3, req("/a", "revoked"), NOW_MS + 3_000)).is_some());
}

#[test]
fn failures_answer_503_are_never_cached_and_cached_answers_stay_usable() {
    let mut g = gate(json!({}));
    // One good answer cached first.
    let call = parked(g.on_request(1, req("/a", "good"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 1);
    let body = active(json!({}));
    g.on_introspection_answer(1, Some(200), body.len(), &body, NOW_MS);
    let cases: [(Option<u32>, &[u8], &str); 5] = [
        (Some(500), b"{}", "status_5xx"),
        (None, b"", "transport"),
        (Some(200), b"<html>", "not_json"),
        (Some(200), br#"{"active": "yes"}"#, "no_active"),
        (Some(401), br#"{"error":"invalid_client"}"#, "status_4xx"),
    ];
    for (i, (status, body, class)) in cases.into_iter().enumerate() {
        let mut g2 = gate(json!({"breaker": {"failures": 100, "cool_down_s": 5}}));
        let call = parked(g2.on_request(1, req("/a", "t"), NOW_MS)).unwrap();
        assert!(parked(g2.on_request(2, req("/a", "t"), NOW_MS)).is_none());
        g2.introspection_dispatched(call.provider, call.key, 5);
        let out = g2.on_introspection_answer(5, status, body.len(), body, NOW_MS);
        assert_eq!(classes(&out), vec![class], "case {i}");
        let a = answers(&out);
        assert_eq!(a.len(), 2);
        for (_, o, retry) in a {
            assert_eq!(o, denied(Reason::IntrospectionUnavailable), "case {i}");
            assert_eq!(retry, Some(1));
        }
        // Not cached as inactive: the next request calls again.
        assert!(parked(g2.on_request(3, req("/a", "t"), NOW_MS + 1)).is_some());
    }
    // The breaker (2 failures) opens on this gate; the cached token is still served.
    for (n, t) in [(2u32, "x1"), (3, "x2")] {
        let call = parked(g.on_request(n, req("/a", t), NOW_MS)).unwrap();
        g.introspection_dispatched(call.provider, call.key, n);
        g.on_introspection_answer(n, Some(503), 0, b"", NOW_MS);
    }
    let d = decided(g.on_request(4, req("/a", "x3"), NOW_MS + 1000));
    assert_eq!(d.outcome, denied(Reason::IntrospectionUnavailable));
    assert_eq!(d.retry_after_s, Some(4), "until the cool-down ends");
    assert_eq!(d.detail, "introspection circuit breaker open");
    let d = decided(g.on_request(5, req("/a", "good"), NOW_MS + 1000));
    assert_eq!(d.outcome, Outcome::Allow, "a cached answer needs no call");
    // After the cool-down one call tests the endpoint; others are refused meanwhile.
    let probe = parked(g.on_request(6, req("/a", "x4"), NOW_MS + 5000)).unwrap();
    let d = decided(g.on_request(7, req("/a", "x5"), NOW_MS + 5000));
    assert_eq!(d.outcome, denied(Reason::IntrospectionUnavailable));
    g.introspection_dispatched(probe.provider, probe.key, 8);
    let body = active(json!({}));
    let out = g.on_introspection_answer(8, Some(200), body.len(), &body, NOW_MS + 5001);
    assert_eq!(answers(&out)[0].1, Outcome::Allow);
    assert!(
        parked(g.on_request(9, req("/a", "x5"), NOW_MS + 5002)).is_some(),
        "closed"
    );
}

#[test]
fn oversized_answers_fail() {
    let mut g = gate(json!({}));
    let call = parked(g.on_request(1, req("/a", "t"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 1);
    let out = g.on_introspection_answer(1, Some(200), 70_000, b"", NOW_MS);
    assert_eq!(classes(&out), vec!["too_large"]);
    assert_eq!(answers(&out)[0].1, denied(Reason::IntrospectionUnavailable));
}

#[test]
fn calls_in_flight_are_capped_and_refused_dispatch_is_a_failure() {
    let mut g = gate(json!({"max_in_flight": 1}));
    let call = parked(g.on_request(1, req("/a", "t1"), NOW_MS)).unwrap();
    let d = decided(g.on_request(2, req("/a", "t2"), NOW_MS));
    assert_eq!(d.outcome, denied(Reason::IntrospectionUnavailable));
    assert_eq!(d.detail, "too many introspection calls in flight");
    let out = g.introspection_not_dispatched(call.provider, call.key, NOW_MS);
    assert_eq!(classes(&out), vec!["not_dispatched"]);
    assert_eq!(
        answers(&out),
        vec![(1, denied(Reason::IntrospectionUnavailable), Some(1))]
    );
    assert!(parked(g.on_request(3, req("/a", "t2"), NOW_MS)).is_some());
}

#[test]
fn a_call_whose_sender_went_away_is_sent_again_while_others_wait() {
    let mut g = gate(json!({}));
    let call = parked(g.on_request(1, req("/a", "t"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 10);
    assert!(parked(g.on_request(2, req("/a", "t"), NOW_MS)).is_none());
    g.on_stream_done(1);
    assert!(
        !g.is_introspection_call(10),
        "its answer would go to a dead context"
    );
    let tick = g.on_tick(NOW_MS + 50);
    let again: Vec<_> = tick
        .iter()
        .filter_map(|a| match a {
            Action::Introspect(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].key, call.key);
    g.introspection_dispatched(again[0].provider, again[0].key, 11);
    let body = active(json!({}));
    let out = g.on_introspection_answer(11, Some(200), body.len(), &body, NOW_MS + 60);
    assert_eq!(answers(&out), vec![(2, Outcome::Allow, None)]);
    // Nobody waits: the call is dropped, not sent again.
    let call = parked(g.on_request(3, req("/a", "u"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 12);
    g.on_stream_done(3);
    let tick = g.on_tick(NOW_MS + 100);
    assert!(!tick.iter().any(|a| matches!(a, Action::Introspect(_))));
    assert!(parked(g.on_request(4, req("/a", "u"), NOW_MS + 100)).is_some());
}

#[test]
fn waiters_past_their_deadline_get_503() {
    let mut g = gate(json!({}));
    let call = parked(g.on_request(1, req("/a", "t"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 1);
    assert!(answers(&g.on_tick(NOW_MS + 1999)).is_empty());
    let out = g.on_tick(NOW_MS + 2000);
    assert_eq!(
        answers(&out),
        vec![(1, denied(Reason::IntrospectionUnavailable), Some(1))]
    );
}

#[test]
fn answers_reach_their_waiters_even_when_not_cached() {
    let mut g = gate(json!({"cache_s": 0}));
    let call = parked(g.on_request(1, req("/a", "t"), NOW_MS)).unwrap();
    assert!(parked(g.on_request(2, req("/a", "t"), NOW_MS)).is_none());
    g.introspection_dispatched(call.provider, call.key, 1);
    let body = active(json!({}));
    let out = g.on_introspection_answer(1, Some(200), body.len(), &body, NOW_MS);
    assert_eq!(answers(&out).len(), 2);
    assert!(answers(&out).iter().all(|(_, o, _)| *o == Outcome::Allow));
    assert!(
        parked(g.on_request(3, req("/a", "t"), NOW_MS)).is_some(),
        "cache_s 0"
    );
}

#[test]
fn tokens_all_revokes_a_verified_jwt() {
    let mut g = gate(json!({}));
    let t = jwt();
    let call = parked(g.on_request(1, req("/jwt", &t), NOW_MS)).expect("introspected");
    assert_eq!(
        g.config().providers[call.provider].name,
        "as",
        "the JWT's own provider"
    );
    g.introspection_dispatched(call.provider, call.key, 1);
    let body = br#"{"active": false}"#;
    let out = g.on_introspection_answer(1, Some(200), body.len(), body, NOW_MS);
    assert_eq!(answers(&out)[0].1, denied(Reason::InactiveToken));
    // A JWT refused locally never costs a call.
    let bad = format!("{}x", &t[..t.len() - 1]);
    let d = decided(g.on_request(2, req("/jwt", &bad), NOW_MS));
    assert!(matches!(d.outcome, Outcome::Deny { .. }));
    assert_ne!(d.outcome, denied(Reason::InactiveToken));
    // An active answer: the JWT's own claims drive the policy.
    let mut g = gate(json!({}));
    let call = parked(g.on_request(3, req("/jwt", &t), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 2);
    let body = br#"{"active": true, "sub": "someone-else"}"#;
    let out = g.on_introspection_answer(2, Some(200), body.len(), body, NOW_MS);
    assert_eq!(answers(&out)[0].1, Outcome::Allow);
    let d = decided(g.on_request(4, req("/jwt", &t), NOW_MS + 1));
    assert_eq!(d.sub.as_deref(), Some("bob"));
}

#[test]
fn opaque_tokens_outside_b64token_never_reach_the_endpoint() {
    let mut g = gate(json!({}));
    for bad in ["a,b", "a b", "tok%00"] {
        let d = decided(g.on_request(1, req("/a", bad), NOW_MS));
        assert!(
            matches!(d.outcome, Outcome::Deny { reason, .. } if reason.status() == 401 || reason.status() == 400),
            "{bad}: {:?}",
            d.outcome
        );
    }
    // A JWT-shaped token on a rule whose only provider introspects is malformed there.
    let d = decided(g.on_request(2, req("/a", "a.b.c"), NOW_MS));
    assert!(matches!(d.outcome, Outcome::Deny { .. }));
}

#[test]
fn gauges_every_tick() {
    let mut g = gate(json!({}));
    parked(g.on_request(1, req("/a", "t"), NOW_MS)).unwrap();
    let tick = g.on_tick(NOW_MS + 50);
    let gauges = tick
        .iter()
        .find_map(|a| match a {
            Action::IntrospectionGauges(v) => Some(v.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(gauges.len(), 2);
    assert_eq!(gauges[0].in_flight + gauges[1].in_flight, 1);
}

#[test]
fn a_call_never_answered_is_ended_as_lost() {
    let mut g = gate(json!({}));
    let call = parked(g.on_request(1, req("/a", "t"), NOW_MS)).unwrap();
    g.introspection_dispatched(call.provider, call.key, 5);
    // The waiter gives up at its own deadline (timeout 1000 ms + 1 s).
    let out = g.on_tick(NOW_MS + 2000);
    assert_eq!(
        answers(&out),
        vec![(1, denied(Reason::IntrospectionUnavailable), Some(1))]
    );
    assert!(
        parked(g.on_request(2, req("/a", "t"), NOW_MS + 2500)).is_none(),
        "still in flight"
    );
    // Past timeout + LOST_AFTER_MS the call is ended: its waiter answered, a new call possible.
    let out = g.on_tick(NOW_MS + 3000);
    assert_eq!(classes(&out), vec!["timed_out"]);
    assert_eq!(
        answers(&out),
        vec![(2, denied(Reason::IntrospectionUnavailable), Some(1))]
    );
    assert!(!g.is_introspection_call(5));
    assert!(parked(g.on_request(3, req("/a", "t"), NOW_MS + 3001)).is_some());
}
