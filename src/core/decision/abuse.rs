//! Abuse controls around authentication: the rule's `ip` ranges and failure throttling
//! (`"count": "denied"` rate limits). Both run right after the rule is chosen, before any
//! token work, so a refused network or a throttled client costs no parsing and no signature
//! check; a request that then ends in 401 is charged to the failure buckets.

use crate::core::config::model::{Config, Rule};
use crate::core::denial::{Denial, Reason};
use crate::core::ratelimit::bucket::LimitState;
use crate::core::ratelimit::charge::{Meter, Verdict};
use crate::core::ratelimit::failures;
use crate::core::request::view::Request;
use crate::core::store::SharedStore;

use super::authorize::limit_key;
use super::env::Env;
use super::halt::Halt;
use super::outcome::{Decision, Outcome};

/// The log detail of a 429 caused by earlier failures (the stats tell these apart by it).
pub const THROTTLED: &str = "too many failed authentications for this key";

/// What failure throttling did to a decision, for the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureEffect {
    /// A 401 took a token from the rule's failure buckets.
    Counted,
    /// A 429 because earlier failures emptied a failure bucket.
    Refused,
}

/// Stage, right after rule selection: the rule's `ip` ranges (deny wins; an unknown address
/// is refused by any list), then whether a failure bucket of this request's key is empty.
pub fn screen(
    env: &Env<'_>,
    rule: &Rule,
    index: Option<usize>,
    req: &Request<'_>,
    d: &mut Decision,
) -> Result<(), Halt> {
    if rule.ip.as_ref().is_some_and(|l| !l.permits(req.client_ip)) {
        return Err(Halt::deny(
            Reason::IpDenied,
            "client address not allowed by the rule's ip",
        ));
    }
    let Some((meter, keys)) = failure_meter(env, rule, index, req) else {
        return Ok(());
    };
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    match failures::exhausted(&meter, &rule.rate_limits, &keys) {
        Verdict::Limited {
            state,
            retry_after_s,
        } => Err(throttle(d, state, retry_after_s)),
        Verdict::Admitted { .. } => Ok(()),
    }
}

/// After the pipeline: a 401 of a rule that counts failures takes a token from its failure
/// buckets; a failure that finds one empty (taken meanwhile by other workers) becomes the
/// 429 of a throttled request, so no more failures than the buckets hold get a 401.
pub fn count_failure(env: &Env<'_>, req: &Request<'_>, d: Decision) -> Decision {
    let failed = matches!(d.outcome, Outcome::Deny { reason, .. } if reason.status() == 401);
    let rule = d.rule.and_then(|i| env.config.rules.get(i));
    let Some(rule) = rule.filter(|_| failed) else {
        return d;
    };
    let Some((meter, keys)) = failure_meter(env, rule, d.rule, req) else {
        return d;
    };
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    match failures::charge_failure(&meter, &rule.rate_limits, &keys) {
        Verdict::Admitted { .. } => d,
        Verdict::Limited {
            state,
            retry_after_s,
        } => {
            let mut d = d;
            let _ = throttle(&mut d, state, retry_after_s);
            d.deny(Denial::new(Reason::RateLimited, THROTTLED))
        }
    }
}

/// What failure throttling did to `d` (a decision of `cfg`), if anything.
pub fn failure_effect(cfg: &Config, d: &Decision) -> Option<FailureEffect> {
    let Outcome::Deny { reason, .. } = d.outcome else {
        return None;
    };
    if reason == Reason::RateLimited && d.detail == THROTTLED {
        return Some(FailureEffect::Refused);
    }
    let rule = d.rule.and_then(|i| cfg.rules.get(i))?;
    (reason.status() == 401 && failures::counts_failures(&rule.rate_limits))
        .then_some(FailureEffect::Counted)
}

/// The meter and key values for a rule's failure limits; `None` when it has none (or no
/// store, or it is the default rule).
fn failure_meter<'e>(
    env: &'e Env<'_>,
    rule: &Rule,
    index: Option<usize>,
    req: &Request<'_>,
) -> Option<(Meter<'e>, Vec<String>)> {
    let index = index.filter(|_| failures::counts_failures(&rule.rate_limits))?;
    let store: &dyn SharedStore = env.store?;
    let meter = Meter {
        store,
        hasher: &env.limit_hasher,
        rule: index,
        now_ms: env.now_ms,
    };
    // Failure limits never key on a claim (refused at load), so no claims are needed.
    let keys = rule
        .rate_limits
        .iter()
        .map(|l| limit_key(&l.key, None, req))
        .collect();
    Some((meter, keys))
}

/// Records the state for `RateLimit-*` and `Retry-After`; the halt of a throttled request.
fn throttle(d: &mut Decision, state: LimitState, retry_after_s: u64) -> Halt {
    d.rate = Some(state);
    d.retry_after_s = Some(retry_after_s);
    Halt::deny(Reason::RateLimited, THROTTLED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::compile as config;
    use crate::core::crypto::public_key::PublicKey;
    use crate::core::crypto::verifier::{SignatureVerifier, Signed};
    use crate::core::decision::env::Incoming;
    use crate::core::decision::pipeline::decide;
    use crate::core::ratelimit::charge::{ensure_records, KeyHasher};
    use crate::core::store::MemoryStore;
    use crate::core::test_keys;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;
    use std::cell::Cell;

    const NOW_MS: u64 = 1_700_000_000_000;
    const ISS: &str = "https://idp.example/oauth2/default";

    /// Accepts the signature bytes "good"; counts the checks it was asked for.
    #[derive(Default)]
    struct Counting(Cell<u32>);
    impl SignatureVerifier for Counting {
        fn verify(&self, _key: &PublicKey, token: &Signed<'_>) -> bool {
            self.0.set(self.0.get() + 1);
            token.signature == b"good"
        }
        fn name(&self) -> &'static str {
            "counting"
        }
    }

    fn keys() -> test_keys::ReadyKeys {
        test_keys::ReadyKeys(test_keys::key_set(&["k1"]))
    }

    fn token(sig: &[u8]) -> String {
        let b = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let now = NOW_MS / 1000;
        format!(
            "{}.{}.{}",
            b(json!({"alg": "RS256", "kid": "k1"})),
            b(json!({"iss": ISS, "aud": "api", "iat": now, "exp": now + 600, "sub": "alice"})),
            URL_SAFE_NO_PAD.encode(sig)
        )
    }

    fn cfg(extra: serde_json::Value) -> Config {
        let mut c = json!({
            "providers": {"okta": {"issuer": ISS, "audiences": ["api"],
                                   "jwks": {"uri": "https://idp.example/k", "cluster": "idp"}}},
            "rules": [
                {"match": {"prefix": "/admin"}, "auth": "none",
                 "ip": {"allow": ["10.0.0.0/8", "2001:db8::/32"], "deny": ["10.0.0.13"]}},
                {"match": {"prefix": "/partner"}, "ip": {"allow": ["192.0.2.0/24"]}},
                {"match": {"prefix": "/login"},
                 "rate_limits": [{"key": "ip", "requests": 3, "per_s": 60, "count": "denied"}]},
                {"match": {"prefix": "/keyed"},
                 "rate_limits": [{"key": "ip", "requests": 1, "per_s": 60}]}
            ]
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        config::parse(c.to_string().as_bytes()).unwrap()
    }

    struct World {
        config: Config,
        keys: test_keys::ReadyKeys,
        verifier: Counting,
        store: MemoryStore,
    }

    impl World {
        fn new(config: Config) -> World {
            let store = MemoryStore::default();
            for (i, r) in config.rules.iter().enumerate() {
                ensure_records(&store, i, &r.rate_limits).unwrap();
            }
            World {
                config,
                keys: keys(),
                verifier: Counting::default(),
                store,
            }
        }

        fn at(&self, now_ms: u64, path: &str, ip: &str, headers: &[(&str, &str)]) -> Decision {
            let mut env = Env {
                config: &self.config,
                cache: None,
                keys: &self.keys,
                answers: &crate::core::introspection::answers::NoAnswers,
                verifier: &self.verifier,
                now: now_ms / 1000,
                now_ms,
                store: Some(&self.store),
                limit_hasher: KeyHasher::new(3, 4),
                trace: false,
            };
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            let incoming = Incoming {
                method: "GET",
                path,
                headers: &headers,
                client_ip: Some(ip),
                client_cert: crate::core::request::view::ClientCert::Unread,
            };
            // As the gate does: decide, then charge a failure once.
            let d = decide(&mut env, &incoming);
            crate::core::decision::pipeline::charge_failure(&env, &incoming, d)
        }

        fn run(&self, path: &str, ip: &str, sig: Option<&[u8]>) -> Decision {
            let auth = sig.map(|s| format!("Bearer {}", token(s)));
            let headers: Vec<(&str, &str)> =
                auth.iter().map(|a| ("authorization", a.as_str())).collect();
            self.at(NOW_MS, path, ip, &headers)
        }
    }

    fn reason(d: &Decision) -> Option<Reason> {
        match d.outcome {
            Outcome::Deny { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn ip_ranges_allow_deny_and_both() {
        let w = World::new(cfg(json!({})));
        for (ip, allowed) in [
            ("10.1.2.3", true),
            ("10.0.0.13", false),
            ("[::ffff:10.0.0.13]:5000", false),
            ("::ffff:10.1.2.3", true),
            ("[2001:db8::1]:443", true),
            ("2001:db9::1", false),
            ("192.0.2.1", false),
            ("not-an-address", false),
        ] {
            let d = w.run("/admin/x", ip, None);
            assert_eq!(d.is_allowed(), allowed, "{ip}: {:?}", d.outcome);
            if !allowed {
                assert_eq!(reason(&d), Some(Reason::IpDenied), "{ip}");
                assert_eq!(d.rule, Some(0));
            }
        }
    }

    #[test]
    fn a_refused_network_costs_no_token_work() {
        let w = World::new(cfg(json!({})));
        for sig in [None, Some(&b"good"[..]), Some(&b"bad"[..])] {
            let d = w.run("/partner/x", "10.1.2.3", sig);
            assert_eq!(reason(&d), Some(Reason::IpDenied));
            assert_eq!(d.provider, None, "the token was not even parsed");
        }
        assert_eq!(w.verifier.0.get(), 0);
        assert!(w.run("/partner/x", "192.0.2.7", Some(b"good")).is_allowed());
        assert_eq!(w.verifier.0.get(), 1);
    }

    #[test]
    fn failures_are_throttled_and_successes_never_counted() {
        let w = World::new(cfg(json!({})));
        for _ in 0..10 {
            assert!(w.run("/login", "10.0.0.1", Some(b"good")).is_allowed());
        }
        for _ in 0..3 {
            let d = w.run("/login", "10.0.0.1", Some(b"bad"));
            assert_eq!(reason(&d), Some(Reason::BadSignature));
            assert_eq!(failure_effect(&w.config, &d), Some(FailureEffect::Counted));
        }
        assert_eq!(w.verifier.0.get(), 13);
        for sig in [Some(&b"bad"[..]), Some(&b"good"[..]), None] {
            let d = w.run("/login", "10.0.0.1", sig);
            assert_eq!(reason(&d), Some(Reason::RateLimited));
            assert_eq!(d.detail, THROTTLED);
            assert_eq!(d.retry_after_s, Some(20));
            assert_eq!(d.rate.map(|r| (r.limit, r.remaining)), Some((3, 0)));
            assert_eq!(failure_effect(&w.config, &d), Some(FailureEffect::Refused));
        }
        assert_eq!(
            w.verifier.0.get(),
            13,
            "throttled requests cost no signature check"
        );
        // Another address is unaffected, and a missing token is a failure too.
        assert!(w.run("/login", "10.0.0.2", Some(b"good")).is_allowed());
        let d = w.run("/login", "10.0.0.2", None);
        assert_eq!(reason(&d), Some(Reason::MissingToken));
        // One failure back 20 s later.
        let later = NOW_MS + 20_000;
        let bad = format!("Bearer {}", token(b"bad"));
        let good = format!("Bearer {}", token(b"good"));
        assert!(w
            .at(later, "/login", "10.0.0.1", &[("authorization", &good)])
            .is_allowed());
        let d = w.at(later, "/login", "10.0.0.1", &[("authorization", &bad)]);
        assert_eq!(reason(&d), Some(Reason::BadSignature));
        let d = w.at(later, "/login", "10.0.0.1", &[("authorization", &good)]);
        assert_eq!(reason(&d), Some(Reason::RateLimited));
    }

    #[test]
    fn a_failure_after_the_bucket_emptied_is_throttled() {
        // Workers that looked before the last token went all reach the charge: only as many
        // as there were tokens get their 401.
        let w = World::new(cfg(json!({})));
        let bad = w.run("/login", "10.0.0.1", Some(b"bad"));
        let env = Env {
            config: &w.config,
            cache: None,
            keys: &w.keys,
            answers: &crate::core::introspection::answers::NoAnswers,
            verifier: &w.verifier,
            now: NOW_MS / 1000,
            now_ms: NOW_MS,
            store: Some(&w.store),
            limit_hasher: KeyHasher::new(3, 4),
            trace: false,
        };
        let req = Request {
            method: "GET",
            path: "/login",
            query: None,
            headers: &[],
            client_ip: Some("10.0.0.1".parse().unwrap()),
            raw_path: "/",
            client_cert: crate::core::request::view::ClientCert::Unread,
        };
        let outcomes: Vec<Option<Reason>> = (0..5)
            .map(|_| reason(&count_failure(&env, &req, bad.clone())))
            .collect();
        assert_eq!(
            outcomes,
            [
                Some(Reason::BadSignature),
                Some(Reason::BadSignature),
                Some(Reason::RateLimited),
                Some(Reason::RateLimited),
                Some(Reason::RateLimited)
            ],
            "one token went to the first failure, two remained"
        );
        // Other denials (403, 400, 503) and allowed requests are never charged.
        let d = w.run("/admin", "192.0.2.1", None);
        assert_eq!(count_failure(&env, &req, d.clone()), d);
    }

    #[test]
    fn forwarded_for_chooses_the_address_of_ip_rules_and_keys() {
        let w = World::new(cfg(json!({"client_ip": {"xff_trusted_hops": 1}})));
        let xff = |v: &'static str| [("x-forwarded-for", v)];
        let d = w.at(NOW_MS, "/admin", "127.0.0.1", &xff("10.9.9.9, 10.1.2.3"));
        assert!(d.is_allowed());
        let d = w.at(
            NOW_MS,
            "/admin",
            "127.0.0.1",
            &xff("10.1.2.3, 198.51.100.1"),
        );
        assert_eq!(
            reason(&d),
            Some(Reason::IpDenied),
            "the client chose 10.1.2.3"
        );
        // Garbage, or nothing, in the chosen entry: the downstream address.
        let d = w.at(NOW_MS, "/admin", "10.7.7.7", &xff("198.51.100.1, junk"));
        assert!(d.is_allowed());
        let d = w.at(NOW_MS, "/admin", "198.51.100.1", &[]);
        assert_eq!(reason(&d), Some(Reason::IpDenied));
        // `ip` rate-limit keys see the same address: two clients behind one proxy.
        let good = format!("Bearer {}", token(b"good"));
        let call = |client: &'static str| {
            w.at(
                NOW_MS,
                "/keyed",
                "127.0.0.1",
                &[("x-forwarded-for", client), ("authorization", &good)],
            )
        };
        assert!(call("203.0.113.1").is_allowed());
        assert!(call("203.0.113.2").is_allowed());
        assert_eq!(reason(&call("203.0.113.1")), Some(Reason::RateLimited));
        assert_eq!(
            reason(&call("::ffff:203.0.113.2")),
            Some(Reason::RateLimited)
        );
    }
}
