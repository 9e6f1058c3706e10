//! Counters in Envoy's stats, all prefixed `okta_jwt_`.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::core::reason::{self, Reason};

pub struct Metrics {
    allowed: Option<u32>,
    denied: Vec<(Reason, Option<u32>)>,
    fetch_ok: Vec<Option<u32>>,
    fetch_failed: Vec<Option<u32>>,
}

fn counter(name: &str) -> Option<u32> {
    // A stat that cannot be defined must not stop traffic; it is just not counted.
    hostcalls::define_metric(MetricType::Counter, name).ok()
}

fn bump(id: Option<u32>) {
    if let Some(id) = id {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

impl Metrics {
    pub fn define(provider_names: &[&str]) -> Metrics {
        Metrics {
            allowed: counter("okta_jwt_allowed"),
            denied: reason::ALL
                .iter()
                .map(|r| (*r, counter(&format!("okta_jwt_denied_{}", r.as_str()))))
                .collect(),
            fetch_ok: provider_names
                .iter()
                .map(|p| counter(&format!("okta_jwt_jwks_fetch_success_{p}")))
                .collect(),
            fetch_failed: provider_names
                .iter()
                .map(|p| counter(&format!("okta_jwt_jwks_fetch_failure_{p}")))
                .collect(),
        }
    }

    pub fn allowed(&self) {
        bump(self.allowed);
    }

    pub fn denied(&self, reason: Reason) {
        if let Some((_, id)) = self.denied.iter().find(|(r, _)| *r == reason) {
            bump(*id);
        }
    }

    pub fn fetch(&self, provider: usize, ok: bool) {
        let list = if ok {
            &self.fetch_ok
        } else {
            &self.fetch_failed
        };
        bump(list.get(provider).copied().flatten());
    }
}
