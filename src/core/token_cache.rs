//! Tokens this VM has already verified, so a client that reuses its access token (the common
//! case: for its whole lifetime) costs no signature check and no JSON parse on later requests.
//!
//! Safety rules: an entry is never used past `exp` + skew; an entry whose verifying key the IdP
//! dropped is never used (checked on every hit, and purged on refresh); and a hit only skips
//! verification, never the rule's scope, claim and rate-limit checks.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use serde_json::{Map, Value};

use super::jwks::KeySet;

/// Default number of entries per VM: a few MiB, enough for the tokens active on one worker.
pub const DEFAULT_ENTRIES: usize = 4096;
pub const MAX_ENTRIES: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub provider: usize,
    /// Fingerprint of the key that verified the signature.
    pub key: u64,
    /// `exp` + the provider's skew: the entry is unusable after this instant.
    pub usable_until: f64,
    pub claims: Map<String, Value>,
}

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    map: HashMap<Rc<str>, Verified>,
    /// Insertion order, for eviction. May hold keys already gone from `map`.
    order: VecDeque<Rc<str>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry for `token`, if it is still usable at `now` (seconds).
    pub fn get(&mut self, token: &str, now: u64) -> Option<&Verified> {
        let expired = self.map.get(token)?.usable_until < now as f64;
        if expired {
            self.map.remove(token);
            return None;
        }
        self.map.get(token)
    }

    pub fn insert(&mut self, token: &str, entry: Verified) {
        if self.capacity == 0 || self.map.contains_key(token) {
            return;
        }
        while self.map.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.map.remove(&oldest);
                }
                None => break,
            }
        }
        let key: Rc<str> = Rc::from(token);
        self.order.push_back(Rc::clone(&key));
        self.map.insert(key, entry);
        // Keys removed on expiry or purge stay in `order`; keep it proportional to the map.
        if self.order.len() > 2 * self.capacity.max(1) {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }

    /// Forgets every entry of `provider` verified by a key that is not in `set` any more.
    pub fn retain_keys(&mut self, provider: usize, set: &KeySet) {
        self.map
            .retain(|_, v| v.provider != provider || set.has_fingerprint(v.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{jwks, test_keys};

    fn entry(provider: usize, key: u64, until: f64) -> Verified {
        Verified {
            provider,
            key,
            usable_until: until,
            claims: Map::new(),
        }
    }

    #[test]
    fn entries_expire_at_exp_plus_skew() {
        let mut c = TokenCache::new(10);
        c.insert("t", entry(0, 1, 100.0));
        assert!(c.get("t", 100).is_some());
        assert!(c.get("t", 101).is_none());
        assert!(c.is_empty(), "expired entries are dropped");
        assert!(c.get("other", 0).is_none());
    }

    #[test]
    fn capacity_is_a_hard_bound_and_the_oldest_goes_first() {
        let mut c = TokenCache::new(3);
        for i in 0..10 {
            c.insert(&format!("t{i}"), entry(0, 1, 1e12));
            assert!(c.len() <= 3);
        }
        assert!(c.get("t9", 0).is_some());
        assert!(c.get("t7", 0).is_some());
        assert!(c.get("t6", 0).is_none());
        assert!(c.order.len() <= 6);
        let mut off = TokenCache::new(0);
        off.insert("t", entry(0, 1, 1e12));
        assert!(off.is_empty(), "capacity 0 disables the cache");
    }

    #[test]
    fn entries_of_dropped_keys_are_purged() {
        let doc = format!(r#"{{"keys":[{}]}}"#, test_keys::RFC7515_A2_JWK);
        let set = jwks::parse(doc.as_bytes()).unwrap().set;
        let kept = set.keys[0].fingerprint;
        let mut c = TokenCache::new(10);
        c.insert("a", entry(0, kept, 1e12));
        c.insert("b", entry(0, kept ^ 1, 1e12));
        c.insert("c", entry(1, kept ^ 1, 1e12));
        c.retain_keys(0, &set);
        assert!(c.get("a", 0).is_some());
        assert!(c.get("b", 0).is_none(), "its key is gone");
        assert!(c.get("c", 0).is_some(), "another provider's entry stays");
    }

    #[test]
    fn a_long_run_of_distinct_tokens_stays_bounded() {
        let mut c = TokenCache::new(100);
        for i in 0..100_000 {
            let t = format!("token-{i}");
            c.insert(&t, entry(0, 1, if i % 2 == 0 { 0.0 } else { 1e12 }));
            let _ = c.get(&t, 1);
        }
        assert!(c.len() <= 100);
        assert!(c.order.len() <= 200);
    }
}
