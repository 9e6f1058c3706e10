//! One provider's key-set lifecycle, as a state machine driven by the clock and by fetch
//! results: when to fetch, what to fetch (discovery document or keys), how long a set is
//! fresh (Cache-Control, clamped), and back-off after failures. The shell only performs the
//! HTTP calls this asks for.

use std::sync::Arc;

use serde::Deserialize;

use super::authenticator::KeyState;
use super::config::{authority_of, JwksConfig, JwksSource, Provider};
use super::jwks::{self, KeySet, MAX_JWKS_BYTES};

/// Freshness bounds for a `Cache-Control: max-age` (SPEC.md).
pub const MIN_FRESH_S: u64 = 30;
pub const MAX_FRESH_S: u64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Discovery,
    Keys,
}

/// An HTTP GET the shell must perform on the provider's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub phase: Phase,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A new key set is in place.
    Updated {
        keys: usize,
        skipped: Vec<String>,
        fresh_s: u64,
    },
    /// The discovery document named the JWKS URI; the keys are fetched next.
    Discovered,
    /// The fetch failed; the previous set (if any) is kept.
    Failed { why: String, retry_in_ms: u64 },
}

#[derive(Debug)]
pub struct ProviderCache {
    issuer: String,
    cfg: JwksConfig,
    set: Option<Arc<KeySet>>,
    jwks_uri: Option<String>,
    /// At least one fetch has finished, successfully or not.
    attempted: bool,
    in_flight: Option<Phase>,
    next_at_ms: u64,
    failures: u32,
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

impl ProviderCache {
    pub fn new(p: &Provider) -> ProviderCache {
        let (set, jwks_uri) = match &p.jwks.source {
            JwksSource::Inline(keys) => (Some(Arc::new(keys.clone())), None),
            JwksSource::Remote { uri, .. } => (None, Some(uri.clone())),
            JwksSource::Discovery { .. } => (None, None),
        };
        ProviderCache {
            issuer: p.issuer.clone(),
            cfg: p.jwks.clone(),
            attempted: set.is_some(),
            set,
            jwks_uri,
            in_flight: None,
            next_at_ms: 0,
            failures: 0,
        }
    }

    pub fn key_state(&self) -> KeyState<'_> {
        match (&self.set, self.attempted) {
            (Some(set), _) => KeyState::Ready(set),
            (None, false) => KeyState::Pending,
            (None, true) => KeyState::Unavailable,
        }
    }

    pub fn keys(&self) -> Option<&Arc<KeySet>> {
        self.set.as_ref()
    }

    fn cluster(&self) -> Option<&str> {
        match &self.cfg.source {
            JwksSource::Remote { cluster, .. } | JwksSource::Discovery { cluster } => Some(cluster),
            JwksSource::Inline(_) => None,
        }
    }

    /// The fetch to start now, if one is due. Marks it in flight.
    pub fn poll(&mut self, now_ms: u64) -> Option<FetchRequest> {
        let cluster = self.cluster()?.to_owned();
        if self.in_flight.is_some() || now_ms < self.next_at_ms {
            return None;
        }
        let (phase, url) = match &self.jwks_uri {
            Some(uri) => (Phase::Keys, uri.clone()),
            None => (
                Phase::Discovery,
                format!("{}/.well-known/openid-configuration", self.issuer),
            ),
        };
        let (authority, path) = authority_of(&url)?;
        self.in_flight = Some(phase);
        Some(FetchRequest {
            phase,
            cluster,
            authority: authority.to_owned(),
            path: path.to_owned(),
            timeout_ms: self.cfg.timeout_ms,
        })
    }

    /// The shell could not even dispatch the call.
    pub fn dispatch_failed(&mut self, now_ms: u64, jitter_permille: u64) -> FetchOutcome {
        self.fail(
            now_ms,
            jitter_permille,
            "the HTTP call could not be dispatched".into(),
        )
    }

    /// `status` is `None` when the call failed without a response (reset, timeout).
    pub fn on_response(
        &mut self,
        now_ms: u64,
        status: Option<u32>,
        cache_control: Option<&str>,
        body: &[u8],
        jitter_permille: u64,
    ) -> FetchOutcome {
        let phase = self.in_flight.take().unwrap_or(Phase::Keys);
        match status {
            None => {
                return self.fail(
                    now_ms,
                    jitter_permille,
                    "no response (timeout or reset)".into(),
                )
            }
            Some(200) => {}
            Some(s) => return self.fail(now_ms, jitter_permille, format!("HTTP status {s}")),
        }
        if body.len() > MAX_JWKS_BYTES {
            return self.fail(
                now_ms,
                jitter_permille,
                format!("body over {MAX_JWKS_BYTES} bytes"),
            );
        }
        match phase {
            Phase::Discovery => match self.discovered_uri(body) {
                Ok(uri) => {
                    self.jwks_uri = Some(uri);
                    self.next_at_ms = now_ms;
                    FetchOutcome::Discovered
                }
                Err(why) => self.fail(now_ms, jitter_permille, why),
            },
            Phase::Keys => match jwks::parse(body) {
                Ok(parsed) => {
                    let fresh_s = freshness_s(cache_control, self.cfg.cache_duration_s);
                    let keys = parsed.set.keys.len();
                    self.set = Some(Arc::new(parsed.set));
                    self.attempted = true;
                    self.failures = 0;
                    self.next_at_ms = now_ms.saturating_add(fresh_s * 1000);
                    FetchOutcome::Updated {
                        keys,
                        skipped: parsed.skipped,
                        fresh_s,
                    }
                }
                Err(e) => self.fail(now_ms, jitter_permille, e.to_string()),
            },
        }
    }

    fn discovered_uri(&self, body: &[u8]) -> Result<String, String> {
        let doc: Discovery = serde_json::from_slice(body)
            .map_err(|e| format!("discovery document without a jwks_uri string: {e}"))?;
        let same_host = authority_of(&doc.jwks_uri)
            .zip(authority_of(&self.issuer))
            .is_some_and(|((a, _), (b, _))| a.eq_ignore_ascii_case(b))
            && doc
                .jwks_uri
                .starts_with(self.issuer.split(':').next().unwrap_or_default());
        if !same_host {
            // The cluster only reaches the issuer's host; another host would be a redirect
            // of trust that an operator never configured.
            return Err("discovered jwks_uri is not on the issuer's host and scheme".into());
        }
        Ok(doc.jwks_uri)
    }

    fn fail(&mut self, now_ms: u64, jitter_permille: u64, why: String) -> FetchOutcome {
        self.in_flight = None;
        self.attempted = true;
        self.failures = self.failures.saturating_add(1);
        let retry_in_ms = self.backoff_ms(jitter_permille);
        self.next_at_ms = now_ms.saturating_add(retry_in_ms);
        FetchOutcome::Failed { why, retry_in_ms }
    }

    /// 1 s, 2 s, 4 s ... capped at `cache_duration_s`, plus up to 25 % jitter so that many
    /// proxies do not retry in lock-step.
    fn backoff_ms(&self, jitter_permille: u64) -> u64 {
        let exp = self.failures.saturating_sub(1).min(20);
        let base = (1000u64 << exp).min(self.cfg.cache_duration_s * 1000);
        base + base * jitter_permille.min(1000) / 4000
    }

    /// Whole seconds until the next attempt, for `Retry-After`.
    pub fn retry_after_s(&self, now_ms: u64) -> u64 {
        self.next_at_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
    }

    pub fn timeout_ms(&self) -> u64 {
        self.cfg.timeout_ms
    }
}

/// How long a fetched set stays fresh: `max-age` when given (`no-cache`/`no-store` mean the
/// floor), else the configured duration; always within [30 s, 24 h].
pub fn freshness_s(cache_control: Option<&str>, default_s: u64) -> u64 {
    let mut fresh = default_s;
    if let Some(cc) = cache_control {
        for directive in cc.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                fresh = MIN_FRESH_S;
                break;
            }
            if let Some(v) = lower.strip_prefix("max-age=") {
                if let Ok(secs) = v.trim_matches('"').parse::<u64>() {
                    fresh = secs;
                }
            }
        }
    }
    fresh.clamp(MIN_FRESH_S, MAX_FRESH_S)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{config, test_keys};
    use serde_json::json;

    fn provider(jwks: serde_json::Value) -> Provider {
        let c = json!({"providers": {"okta": {
            "issuer": "https://idp.example/oauth2/default",
            "audiences": ["a"], "jwks": jwks}}});
        config::parse(c.to_string().as_bytes())
            .unwrap()
            .providers
            .remove(0)
    }

    fn keys_body() -> String {
        format!(r#"{{"keys":[{}]}}"#, test_keys::RFC7515_A2_JWK)
    }

    #[test]
    fn first_fetch_then_refresh_at_max_age() {
        let mut c = ProviderCache::new(&provider(
            json!({"uri": "https://idp.example/oauth2/default/v1/keys", "cluster": "idp"}),
        ));
        assert!(matches!(c.key_state(), KeyState::Pending));
        let req = c.poll(0).unwrap();
        assert_eq!(req.phase, Phase::Keys);
        assert_eq!(req.authority, "idp.example");
        assert_eq!(req.path, "/oauth2/default/v1/keys");
        assert_eq!(req.cluster, "idp");
        assert_eq!(c.poll(0), None, "one fetch in flight");
        let out = c.on_response(
            0,
            Some(200),
            Some("public, max-age=120"),
            keys_body().as_bytes(),
            0,
        );
        assert_eq!(
            out,
            FetchOutcome::Updated {
                keys: 1,
                skipped: vec![],
                fresh_s: 120
            }
        );
        assert!(matches!(c.key_state(), KeyState::Ready(_)));
        assert_eq!(c.poll(119_999), None);
        assert!(c.poll(120_000).is_some());
    }

    #[test]
    fn failures_keep_the_last_good_set_and_back_off() {
        let mut c = ProviderCache::new(&provider(
            json!({"uri": "https://idp.example/k", "cluster": "idp"}),
        ));
        c.poll(0).unwrap();
        c.on_response(0, Some(200), None, keys_body().as_bytes(), 0);
        let mut now = 300_000;
        let mut delays = Vec::new();
        for body_status in [Some(500), None, Some(200), Some(200)] {
            c.poll(now).unwrap();
            let body: &[u8] = if body_status == Some(200) {
                b"{\"keys\": ["
            } else {
                b""
            };
            match c.on_response(now, body_status, None, body, 0) {
                FetchOutcome::Failed { retry_in_ms, .. } => delays.push(retry_in_ms),
                other => panic!("{other:?}"),
            }
            assert!(
                matches!(c.key_state(), KeyState::Ready(_)),
                "stale keys stay"
            );
            now += delays.last().unwrap();
        }
        assert_eq!(delays, vec![1000, 2000, 4000, 8000]);
        c.poll(now).unwrap();
        assert!(matches!(
            c.on_response(now, Some(200), None, br#"{"keys":[]}"#, 0),
            FetchOutcome::Failed { .. }
        ));
    }

    #[test]
    fn first_failure_makes_keys_unavailable_until_recovery() {
        let mut c = ProviderCache::new(&provider(
            json!({"uri": "https://idp.example/k", "cluster": "idp"}),
        ));
        c.poll(0).unwrap();
        let out = c.on_response(0, Some(503), None, b"", 1000);
        assert_eq!(
            out,
            FetchOutcome::Failed {
                why: "HTTP status 503".into(),
                retry_in_ms: 1250
            }
        );
        assert!(matches!(c.key_state(), KeyState::Unavailable));
        assert_eq!(c.retry_after_s(0), 2);
        assert_eq!(c.poll(1000), None);
        c.poll(1250).unwrap();
        c.on_response(1250, Some(200), None, keys_body().as_bytes(), 0);
        assert!(matches!(c.key_state(), KeyState::Ready(_)));
    }

    #[test]
    fn backoff_is_capped_at_cache_duration() {
        let mut c = ProviderCache::new(&provider(
            json!({"uri": "https://idp.example/k", "cluster": "idp", "cache_duration_s": 30}),
        ));
        let mut now = 0;
        let mut last = 0;
        for _ in 0..12 {
            c.poll(now).unwrap();
            if let FetchOutcome::Failed { retry_in_ms, .. } =
                c.on_response(now, Some(500), None, b"", 0)
            {
                last = retry_in_ms;
                now += retry_in_ms;
            }
        }
        assert_eq!(last, 30_000);
    }

    #[test]
    fn oversized_body_fails() {
        let mut c = ProviderCache::new(&provider(
            json!({"uri": "https://idp.example/k", "cluster": "idp"}),
        ));
        c.poll(0).unwrap();
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert!(matches!(
            c.on_response(0, Some(200), None, &big, 0),
            FetchOutcome::Failed { .. }
        ));
    }

    #[test]
    fn discovery_then_keys() {
        let mut c = ProviderCache::new(&provider(json!({"discovery": true, "cluster": "idp"})));
        let req = c.poll(0).unwrap();
        assert_eq!(req.phase, Phase::Discovery);
        assert_eq!(req.path, "/oauth2/default/.well-known/openid-configuration");
        let doc = json!({"issuer": "https://idp.example/oauth2/default", "jwks_uri": "https://idp.example/oauth2/default/v1/keys"});
        assert_eq!(
            c.on_response(5, Some(200), None, doc.to_string().as_bytes(), 0),
            FetchOutcome::Discovered
        );
        assert!(
            matches!(c.key_state(), KeyState::Pending),
            "still waiting for keys"
        );
        let req = c.poll(5).unwrap();
        assert_eq!(req.phase, Phase::Keys);
        assert_eq!(req.path, "/oauth2/default/v1/keys");
    }

    #[test]
    fn discovery_refuses_another_host() {
        for uri in [
            "https://evil.example/keys",
            "http://idp.example/oauth2/default/v1/keys",
        ] {
            let mut c = ProviderCache::new(&provider(json!({"discovery": true, "cluster": "idp"})));
            c.poll(0).unwrap();
            let doc = json!({"jwks_uri": uri});
            assert!(
                matches!(
                    c.on_response(0, Some(200), None, doc.to_string().as_bytes(), 0),
                    FetchOutcome::Failed { .. }
                ),
                "{uri}"
            );
        }
    }

    #[test]
    fn inline_keys_never_fetch() {
        let jwks: serde_json::Value = serde_json::from_str(&keys_body()).unwrap();
        let mut c = ProviderCache::new(&provider(json!({"inline": jwks})));
        assert!(matches!(c.key_state(), KeyState::Ready(_)));
        assert_eq!(c.poll(0), None);
    }

    #[test]
    fn cache_control_clamp() {
        assert_eq!(freshness_s(None, 300), 300);
        assert_eq!(freshness_s(Some("max-age=5"), 300), 30);
        assert_eq!(freshness_s(Some("max-age=999999"), 300), 86_400);
        assert_eq!(freshness_s(Some("public, Max-Age=600"), 300), 600);
        assert_eq!(freshness_s(Some("no-cache"), 300), 30);
        assert_eq!(freshness_s(Some("no-store, max-age=600"), 300), 30);
        assert_eq!(freshness_s(Some("max-age=abc"), 300), 300);
    }
}
