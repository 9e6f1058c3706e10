//! Counters and gauges in Envoy's stats, all prefixed `okta_jwt_` (Envoy shows them under
//! `wasmcustom.`).

use proxy_wasm::types::MetricType;

use crate::core::decision::abuse::FailureEffect;
use crate::core::denial::{self as reason, Reason};

use super::host;

/// Stats of one provider's key set.
struct ProviderStats {
    fetch_ok: Option<u32>,
    fetch_failed: Option<u32>,
    refetch_unknown_kid: Option<u32>,
    keys: Option<u32>,
    age_s: Option<u32>,
    stale_in_s: Option<u32>,
    /// Fetch ends by class, in the order of `FETCH_CLASSES`.
    outcomes: Vec<Option<u32>>,
}

/// The classes of `gate::fetching::fetch_class`, and `not_dispatched`.
const FETCH_CLASSES: [&str; 6] = [
    "ok",
    "status_4xx",
    "status_5xx",
    "transport",
    "invalid_body",
    "not_dispatched",
];

/// The classes of an introspection call's end (`gate::introspecting`).
const INTROSPECTION_CLASSES: [&str; 11] = [
    "active",
    "inactive",
    "transport",
    "status_4xx",
    "status_5xx",
    "status_other",
    "too_large",
    "not_json",
    "no_active",
    "not_dispatched",
    "timed_out",
];

/// Stats of one provider's introspection.
struct IntrospectionStats {
    /// Call ends by class, in the order of `INTROSPECTION_CLASSES`.
    calls: Vec<Option<u32>>,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
    in_flight: Option<u32>,
    cached: Option<u32>,
    breaker: Option<u32>,
}

/// Stats of one rule's rate limits.
struct RuleStats {
    admitted: Option<u32>,
    limited: Option<u32>,
    /// Buckets in use, one gauge per limit.
    buckets: Vec<Option<u32>>,
}

pub struct Metrics {
    allowed: Option<u32>,
    /// Microseconds spent deciding a request that was not parked.
    decision_time_us: Option<u32>,
    rules: Vec<RuleStats>,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
    /// 401s charged to `"count": "denied"` limits, and 429s because of such earlier failures.
    failures_counted: Option<u32>,
    failures_throttled: Option<u32>,
    denied: Vec<(Reason, Option<u32>)>,
    providers: Vec<ProviderStats>,
    /// Per provider, when it introspects.
    introspection: Vec<Option<IntrospectionStats>>,
}

fn define(kind: MetricType, name: &str) -> Option<u32> {
    // A stat that cannot be defined must not stop traffic; it is just not counted.
    host::define_metric(kind, name).ok()
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        let _ = host::increment_metric(id, 1);
    }
}

fn record(id: Option<u32>, value: u64) {
    if let Some(id) = id {
        let _ = host::record_metric(id, value);
    }
}

impl Metrics {
    /// `limits_per_rule[i]`: how many rate limits rule `i` has.
    pub fn define(
        provider_names: &[&str],
        introspecting: &[bool],
        limits_per_rule: &[usize],
    ) -> Metrics {
        let counter = |name: String| define(MetricType::Counter, &name);
        let gauge = |name: String| define(MetricType::Gauge, &name);
        Metrics {
            allowed: counter("okta_jwt_allowed".into()),
            decision_time_us: define(MetricType::Histogram, "okta_jwt_decision_time_us"),
            rules: limits_per_rule
                .iter()
                .enumerate()
                .map(|(i, &n)| RuleStats {
                    admitted: (n > 0)
                        .then(|| counter(format!("okta_jwt_ratelimit_admitted_rule_{i}")))
                        .flatten(),
                    limited: (n > 0)
                        .then(|| counter(format!("okta_jwt_ratelimit_limited_rule_{i}")))
                        .flatten(),
                    buckets: (0..n)
                        .map(|j| gauge(format!("okta_jwt_ratelimit_buckets_rule_{i}_limit_{j}")))
                        .collect(),
                })
                .collect(),
            cache_hit: counter("okta_jwt_token_cache_hit".into()),
            cache_miss: counter("okta_jwt_token_cache_miss".into()),
            failures_counted: counter("okta_jwt_failures_counted".into()),
            failures_throttled: counter("okta_jwt_failures_throttled".into()),
            denied: reason::ALL
                .iter()
                .map(|r| (*r, counter(format!("okta_jwt_denied_{}", r.as_str()))))
                .collect(),
            providers: provider_names
                .iter()
                .map(|p| ProviderStats {
                    fetch_ok: counter(format!("okta_jwt_jwks_fetch_success_{p}")),
                    fetch_failed: counter(format!("okta_jwt_jwks_fetch_failure_{p}")),
                    refetch_unknown_kid: counter(format!("okta_jwt_jwks_refetch_unknown_kid_{p}")),
                    keys: gauge(format!("okta_jwt_jwks_keys_{p}")),
                    age_s: gauge(format!("okta_jwt_jwks_age_s_{p}")),
                    stale_in_s: gauge(format!("okta_jwt_jwks_stale_in_s_{p}")),
                    outcomes: FETCH_CLASSES
                        .iter()
                        .map(|c| counter(format!("okta_jwt_jwks_fetch_outcome_{c}_{p}")))
                        .collect(),
                })
                .collect(),
            introspection: provider_names
                .iter()
                .zip(introspecting)
                .map(|(p, on)| {
                    on.then(|| IntrospectionStats {
                        calls: INTROSPECTION_CLASSES
                            .iter()
                            .map(|c| counter(format!("okta_jwt_introspection_calls_{c}_{p}")))
                            .collect(),
                        cache_hit: counter(format!("okta_jwt_introspection_cache_hit_{p}")),
                        cache_miss: counter(format!("okta_jwt_introspection_cache_miss_{p}")),
                        in_flight: gauge(format!("okta_jwt_introspection_in_flight_{p}")),
                        cached: gauge(format!("okta_jwt_introspection_cached_{p}")),
                        breaker: gauge(format!("okta_jwt_introspection_breaker_{p}")),
                    })
                })
                .collect(),
        }
    }

    fn introspection_of(&self, provider: usize) -> Option<&IntrospectionStats> {
        self.introspection.get(provider).and_then(Option::as_ref)
    }

    pub fn introspection_call(&self, provider: usize, class: &str) {
        let id = self.introspection_of(provider).and_then(|s| {
            let i = INTROSPECTION_CLASSES.iter().position(|c| *c == class)?;
            s.calls.get(i).copied().flatten()
        });
        bump(id);
    }

    pub fn introspection_cache(&self, provider: Option<usize>, hit: Option<bool>) {
        let (Some(p), Some(hit)) = (provider, hit) else {
            return;
        };
        if let Some(s) = self.introspection_of(p) {
            bump(if hit { s.cache_hit } else { s.cache_miss });
        }
    }

    pub fn introspection_gauges(&self, provider: usize, in_flight: u64, cached: u64, breaker: u64) {
        if let Some(s) = self.introspection_of(provider) {
            record(s.in_flight, in_flight);
            record(s.cached, cached);
            record(s.breaker, breaker);
        }
    }

    pub fn allowed(&self) {
        bump(self.allowed);
    }

    pub fn token_cache(&self, hit: Option<bool>) {
        match hit {
            Some(true) => bump(self.cache_hit),
            Some(false) => bump(self.cache_miss),
            None => {}
        }
    }

    pub fn rate_limit(&self, rule: usize, admitted: bool) {
        if let Some(r) = self.rules.get(rule) {
            bump(if admitted { r.admitted } else { r.limited });
        }
    }

    pub fn buckets(&self, rule: usize, limit: usize, in_use: u64) {
        let id = self
            .rules
            .get(rule)
            .and_then(|r| r.buckets.get(limit).copied().flatten());
        record(id, in_use);
    }

    pub fn failure(&self, effect: FailureEffect) {
        bump(match effect {
            FailureEffect::Counted => self.failures_counted,
            FailureEffect::Refused => self.failures_throttled,
        });
    }

    pub fn denied(&self, reason: Reason) {
        if let Some((_, id)) = self.denied.iter().find(|(r, _)| *r == reason) {
            bump(*id);
        }
    }

    pub fn fetch(&self, provider: usize, ok: bool) {
        if let Some(p) = self.providers.get(provider) {
            bump(if ok { p.fetch_ok } else { p.fetch_failed });
        }
    }

    pub fn refetch_unknown_kid(&self, provider: usize) {
        if let Some(p) = self.providers.get(provider) {
            bump(p.refetch_unknown_kid);
        }
    }

    pub fn key_set(&self, provider: usize, keys: u64, age_s: u64, stale_in_s: u64) {
        if let Some(p) = self.providers.get(provider) {
            record(p.keys, keys);
            record(p.age_s, age_s);
            record(p.stale_in_s, stale_in_s);
        }
    }

    pub fn fetch_outcome(&self, provider: usize, class: &str) {
        let id = self.providers.get(provider).and_then(|p| {
            let i = FETCH_CLASSES.iter().position(|c| *c == class)?;
            p.outcomes.get(i).copied().flatten()
        });
        bump(id);
    }

    pub fn decision_time(&self, micros: u64) {
        record(self.decision_time_us, micros);
    }
}
