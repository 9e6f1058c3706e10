//! Per-endpoint request counters, so tests can assert how often the filter fetched keys.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::lock;

#[derive(Default)]
pub struct Counts(Mutex<BTreeMap<String, u64>>);

impl Counts {
    /// Control endpoints are excluded so that reading counts never changes them.
    pub fn record(&self, method: &str, url: &str) {
        let path = url.split(['?', '#']).next().unwrap_or("");
        if path == "/control" || path.starts_with("/control/") {
            return;
        }
        *lock(&self.0).entry(format!("{method} {path}")).or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.0).clone()
    }

    pub fn get(&self, key: &str) -> u64 {
        lock(&self.0).get(key).copied().unwrap_or(0)
    }

    pub fn reset(&self) {
        lock(&self.0).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_method_and_path_without_query() {
        let c = Counts::default();
        c.record("GET", "/oauth2/default/v1/keys?x=1");
        c.record("GET", "/oauth2/default/v1/keys");
        c.record("POST", "/oauth2/default/v1/keys");
        c.record("GET", "/nope");
        c.record("GET", "/control/counts");
        c.record("POST", "/control");
        assert_eq!(c.get("GET /oauth2/default/v1/keys"), 2);
        assert_eq!(c.get("POST /oauth2/default/v1/keys"), 1);
        assert_eq!(c.get("GET /nope"), 1);
        assert_eq!(c.snapshot().len(), 3);
        c.reset();
        assert!(c.snapshot().is_empty());
    }
}
