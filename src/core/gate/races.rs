//! The waiting room's promises, natively, with several VMs over one in-memory store: one
//! fetch per process, waiters answered when a fetch ends (theirs or another VM's), deadlines,
//! streams that ended, a full room, and the unknown-kid refetch limit.

use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use crate::core::config::compile as config;
use crate::core::crypto::public_key::PublicKey;
use crate::core::crypto::verifier::{SignatureVerifier, Signed};
use crate::core::decision::env::SavedRequest;
use crate::core::decision::outcome::Outcome;
use crate::core::denial::Reason;
use crate::core::ratelimit::hash_key::KeyHasher;
use crate::core::store::MemoryStore;
use crate::core::test_keys;

use super::action::Action;
use super::fetching::FetchAnswer;
use super::state::{Gate, Handled, Setup};
use super::waiting_room::MAX_WAITERS;

const NOW_MS: u64 = 1_700_000_000_000;
const ISS: &str = "https://idp.example/oauth2/default";
const TIMEOUT_MS: u64 = 2_000;

/// Accepts exactly the signature bytes "good": the crypto is tested elsewhere.
struct FakeVerifier;
impl SignatureVerifier for FakeVerifier {
    fn verify(&self, _key: &PublicKey, signed: &Signed<'_>) -> bool {
        signed.signature == b"good"
    }
    fn name(&self) -> &'static str {
        "fake"
    }
}

fn vm(store: &Rc<MemoryStore>, owner: u64) -> Gate {
    vm_with(store, owner, json!([]))
}

fn vm_with(store: &Rc<MemoryStore>, owner: u64, rules: serde_json::Value) -> Gate {
    let c = json!({
        "providers": {"okta": {
            "issuer": ISS, "audiences": ["api://default"],
            "jwks": {"uri": "https://idp.example/keys", "cluster": "idp",
                     "timeout_ms": TIMEOUT_MS, "min_refetch_interval_s": 30}
        }},
        "rules": rules
    });
    let config = config::parse(c.to_string().as_bytes()).unwrap();
    for (i, r) in config.rules.iter().enumerate() {
        crate::core::ratelimit::charge::ensure_records(&**store, i, &r.rate_limits).unwrap();
    }
    Gate::new(Setup {
        config: Rc::new(config),
        verifier: Box::new(FakeVerifier),
        store: Rc::clone(store) as Rc<dyn crate::core::store::SharedStore>,
        owner,
        limit_hasher: KeyHasher::new(1, 2),
    })
}

fn jwks(kids: &[&str]) -> Vec<u8> {
    let keys: Vec<_> = kids
        .iter()
        .map(|k| json!({"kty": "RSA", "kid": k, "n": test_keys::RSA_2048_N, "e": "AQAB"}))
        .collect();
    json!({ "keys": keys }).to_string().into_bytes()
}

fn request(kid: &str) -> SavedRequest {
    let b = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let now = NOW_MS / 1000;
    let token = format!(
        "{}.{}.{}",
        b(json!({"alg": "RS256", "kid": kid})),
        b(
            json!({"iss": ISS, "aud": "api://default", "sub": "alice", "iat": now, "exp": now + 3600})
        ),
        URL_SAFE_NO_PAD.encode(b"good")
    );
    SavedRequest {
        method: "GET".into(),
        path: "/x".into(),
        headers: vec![("authorization".into(), format!("Bearer {token}"))],
        client_ip: None,
        client_cert: None,
    }
}

/// The fetches the actions start, dispatched under call tokens from `next_token`.
fn dispatch(gate: &mut Gate, actions: &[Action], next_token: &mut u32) -> Vec<(usize, u32)> {
    let mut started = Vec::new();
    for a in actions {
        if let Action::Fetch { provider, .. } = a {
            *next_token += 1;
            gate.fetch_dispatched(*provider, *next_token);
            started.push((*provider, *next_token));
        }
    }
    started
}

/// `(context, outcome)` of every answer among the actions.
fn answers(actions: &[Action]) -> Vec<(u32, Outcome)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer {
                context, decision, ..
            } => Some((*context, decision.outcome.clone())),
            _ => None,
        })
        .collect()
}

fn ok(body: &[u8]) -> FetchAnswer<'_> {
    FetchAnswer {
        status: Some(200),
        cache_control: None,
        body,
    }
}

fn denied(reason: Reason) -> Outcome {
    Outcome::Deny {
        reason,
        scope: None,
    }
}

fn parked(h: Handled) -> bool {
    matches!(h, Handled::Parked(_))
}

fn decided(h: Handled) -> Outcome {
    match h {
        Handled::Decided(d, _) => d.outcome,
        Handled::Parked(_) => panic!("parked"),
        Handled::NeedClientCert(_) => panic!("asks for the certificate"),
    }
}

#[test]
fn cold_start_one_fetch_per_process_and_every_waiter_answered() {
    let store = Rc::new(MemoryStore::default());
    let (mut a, mut b) = (vm(&store, 1), vm(&store, 2));
    assert!(parked(a.on_request(1, request("k1"), NOW_MS)));
    assert!(parked(b.on_request(2, request("k1"), NOW_MS)));
    let mut tokens = 0;
    let ta = a.on_tick(NOW_MS);
    let tb = b.on_tick(NOW_MS);
    let started_a = dispatch(&mut a, &ta, &mut tokens);
    assert_eq!(started_a.len(), 1, "the first VM takes the lease");
    assert!(
        dispatch(&mut b, &tb, &mut tokens).is_empty(),
        "one fetch per process"
    );
    let body = jwks(&["k1"]);
    let done = a.on_fetch_answer(started_a[0].1, ok(&body), NOW_MS + 10, 0);
    assert_eq!(answers(&done), vec![(1, Outcome::Allow)]);
    // The other VM answers its waiter on its next tick, without fetching.
    let tb = b.on_tick(NOW_MS + 50);
    assert_eq!(answers(&tb), vec![(2, Outcome::Allow)]);
    assert!(dispatch(&mut b, &tb, &mut tokens).is_empty());
    assert_eq!((a.waiting(), b.waiting()), (0, 0));
}

#[test]
fn a_failed_first_fetch_answers_503_with_retry_after() {
    let store = Rc::new(MemoryStore::default());
    let mut a = vm(&store, 1);
    assert!(parked(a.on_request(1, request("k1"), NOW_MS)));
    let mut tokens = 0;
    let t = a.on_tick(NOW_MS);
    let (_, token) = dispatch(&mut a, &t, &mut tokens)[0];
    let failed = FetchAnswer {
        status: Some(500),
        cache_control: None,
        body: b"",
    };
    let done = a.on_fetch_answer(token, failed, NOW_MS + 10, 0);
    assert_eq!(answers(&done), vec![(1, denied(Reason::JwksUnavailable))]);
    let retry = done.iter().find_map(|x| match x {
        Action::Answer { decision, .. } => decision.retry_after_s,
        _ => None,
    });
    assert!(retry.is_some_and(|s| s >= 1), "{retry:?}");
    // Answers of calls this VM did not make are ignored.
    assert!(a.on_fetch_answer(999, ok(b""), NOW_MS, 0).is_empty());
}

#[test]
fn a_waiter_is_answered_at_its_deadline_and_a_gone_stream_never() {
    let store = Rc::new(MemoryStore::default());
    let mut a = vm(&store, 1);
    assert!(parked(a.on_request(1, request("k1"), NOW_MS)));
    assert!(parked(a.on_request(2, request("k1"), NOW_MS)));
    a.on_stream_done(2);
    let t = a.on_tick(NOW_MS + TIMEOUT_MS - 1);
    assert!(answers(&t).is_empty(), "not before the deadline");
    let t = a.on_tick(NOW_MS + TIMEOUT_MS);
    assert_eq!(answers(&t), vec![(1, denied(Reason::JwksUnavailable))]);
    let detail = t.iter().find_map(|x| match x {
        Action::Answer { decision, .. } => Some(decision.detail),
        _ => None,
    });
    assert_eq!(detail, Some("timed out waiting for a key fetch"));
    assert_eq!(a.waiting(), 0);
}

#[test]
fn a_full_room_answers_at_once() {
    let store = Rc::new(MemoryStore::default());
    let mut a = vm(&store, 1);
    for context in 0..MAX_WAITERS as u32 {
        assert!(parked(a.on_request(context, request("k1"), NOW_MS)));
    }
    let over = a.on_request(u32::MAX, request("k1"), NOW_MS);
    assert_eq!(decided(over), denied(Reason::JwksUnavailable));
    assert_eq!(a.waiting(), MAX_WAITERS);
}

/// Both VMs have `k1`; returns them and the call-token counter.
fn warm() -> (Rc<MemoryStore>, Gate, Gate, u32) {
    let store = Rc::new(MemoryStore::default());
    let (mut a, mut b) = (vm(&store, 1), vm(&store, 2));
    let mut tokens = 0;
    let t = a.on_tick(NOW_MS);
    let (_, token) = dispatch(&mut a, &t, &mut tokens)[0];
    a.on_fetch_answer(token, ok(&jwks(&["k1"])), NOW_MS, 0);
    b.on_tick(NOW_MS);
    for g in [&mut a, &mut b] {
        assert_eq!(
            decided(g.on_request(9, request("k1"), NOW_MS)),
            Outcome::Allow
        );
    }
    (store, a, b, tokens)
}

#[test]
fn unknown_kid_waits_for_one_refetch_shared_by_every_vm() {
    let (_store, mut a, mut b, mut tokens) = warm();
    let now = NOW_MS + 1_000;
    assert!(parked(a.on_request(1, request("k2"), now)));
    assert!(parked(b.on_request(2, request("k2"), now)));
    // Refetches start from the tick, never from the stream's own callback.
    let ta = a.on_tick(now);
    let tb = b.on_tick(now);
    let started = dispatch(&mut a, &ta, &mut tokens);
    assert!(ta.iter().any(|x| matches!(
        x,
        Action::Fetch {
            unknown_kid: true,
            ..
        }
    )));
    assert_eq!(started.len(), 1);
    assert!(
        dispatch(&mut b, &tb, &mut tokens).is_empty(),
        "one refetch per process"
    );
    let done = a.on_fetch_answer(started[0].1, ok(&jwks(&["k1", "k2"])), now + 5, 0);
    assert_eq!(answers(&done), vec![(1, Outcome::Allow)]);
    let tb = b.on_tick(now + 50);
    assert_eq!(answers(&tb), vec![(2, Outcome::Allow)]);
    // Within min_refetch_interval_s, another unknown kid is refused at once.
    let third = a.on_request(3, request("k3"), now + 100);
    assert_eq!(decided(third), denied(Reason::UnknownKid));
}

#[test]
fn a_request_never_waits_for_a_fetch_another_vm_finished() {
    let (_store, mut a, mut b, mut tokens) = warm();
    let now = NOW_MS + 1_000;
    assert!(parked(a.on_request(1, request("k2"), now)));
    let ta = a.on_tick(now);
    let (_, token) = dispatch(&mut a, &ta, &mut tokens)[0];
    a.on_fetch_answer(token, ok(&jwks(&["k1", "k2"])), now, 0);
    // b has not ticked since: its copy lacks k2, yet it re-reads the record and allows.
    assert_eq!(
        decided(b.on_request(2, request("k2"), now + 1)),
        Outcome::Allow
    );
}

#[test]
fn keys_another_vm_fetched_after_a_failure_are_used_at_once() {
    let store = Rc::new(MemoryStore::default());
    let (mut a, mut b) = (vm(&store, 1), vm(&store, 2));
    let mut tokens = 0;
    let t = a.on_tick(NOW_MS);
    let (_, token) = dispatch(&mut a, &t, &mut tokens)[0];
    let failed = FetchAnswer {
        status: None,
        cache_control: None,
        body: b"",
    };
    a.on_fetch_answer(token, failed, NOW_MS, 0);
    b.on_tick(NOW_MS);
    assert_eq!(
        decided(b.on_request(1, request("k1"), NOW_MS)),
        denied(Reason::JwksUnavailable)
    );
    // The retry (after back-off) succeeds on a; b decides twice and sees it.
    let later = NOW_MS + 10_000;
    let t = a.on_tick(later);
    let (_, token) = dispatch(&mut a, &t, &mut tokens)[0];
    a.on_fetch_answer(token, ok(&jwks(&["k1"])), later, 0);
    assert_eq!(
        decided(b.on_request(2, request("k1"), later)),
        Outcome::Allow
    );
}

#[test]
fn a_dropped_key_stops_verifying_and_its_cached_tokens_are_forgotten() {
    let (_store, mut a, _b, mut tokens) = warm();
    let later = NOW_MS + 400_000;
    let t = a.on_tick(later);
    let started = dispatch(&mut a, &t, &mut tokens);
    assert_eq!(started.len(), 1, "routine refresh after cache_duration_s");
    a.on_fetch_answer(started[0].1, ok(&jwks(&["k2"])), later, 0);
    // k1 was cached as verified; now it waits for a refetch, which confirms it is gone.
    assert!(parked(a.on_request(1, request("k1"), later + 1)));
    let t = a.on_tick(later + 2);
    let (_, token) = dispatch(&mut a, &t, &mut tokens)[0];
    let done = a.on_fetch_answer(token, ok(&jwks(&["k2"])), later + 3, 0);
    assert_eq!(answers(&done), vec![(1, denied(Reason::UnknownKid))]);
}

/// Failure throttling charges each request's 401 once, after the gate's final answer: also a
/// wait that ends in 401, never twice for a request decided twice.
#[test]
fn each_failed_request_is_charged_once_including_waits_that_end_in_401() {
    let store = Rc::new(MemoryStore::default());
    let rules = json!([{"match": {"prefix": "/"}, "rate_limits": [
        {"key": "ip", "requests": 3, "per_s": 3600, "count": "denied"}]}]);
    let mut a = vm_with(&store, 1, rules);
    let mut tokens = 0;
    let t = a.on_tick(NOW_MS);
    let (_, token) = dispatch(&mut a, &t, &mut tokens)[0];
    a.on_fetch_answer(token, ok(&jwks(&["k1"])), NOW_MS, 0);
    let from = |kid: &str, sig: &[u8]| {
        let mut r = request(kid);
        if sig != b"good" {
            r.headers[0].1 = r.headers[0].1.replace(
                &URL_SAFE_NO_PAD.encode(b"good"),
                &URL_SAFE_NO_PAD.encode(sig),
            );
        }
        r.client_ip = Some("10.0.0.9".into());
        r
    };
    let now = NOW_MS + 1_000;
    // 1: an unknown kid waits for a refetch that does not find it: 401, charged.
    assert!(parked(a.on_request(1, from("k2", b"good"), now)));
    let t = a.on_tick(now);
    let (_, token) = dispatch(&mut a, &t, &mut tokens)[0];
    let done = a.on_fetch_answer(token, ok(&jwks(&["k1"])), now, 0);
    assert_eq!(answers(&done), vec![(1, denied(Reason::UnknownKid))]);
    // 2 and 3: bad signatures, charged; the bucket of 3 is then empty.
    for context in 2..4 {
        assert_eq!(
            decided(a.on_request(context, from("k1", b"bad"), now)),
            denied(Reason::BadSignature)
        );
    }
    // 4: refused before any token work, whatever the token.
    assert_eq!(
        decided(a.on_request(4, from("k1", b"good"), now)),
        denied(Reason::RateLimited)
    );
}
