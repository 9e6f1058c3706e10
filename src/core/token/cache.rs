//! Tokens this VM has already verified, so a client that reuses its access token (the common
//! case: for its whole lifetime) costs no signature check and no JSON parse on later requests.
//!
//! Safety rules: an entry is never used past `exp` + skew; an entry whose verifying key the IdP
//! dropped is never used (checked on every hit, and purged on refresh); and a hit only skips
//! verification, never the rule's scope, claim and rate-limit checks.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::sync::Arc;

use hashbrown::HashTable;
use serde_json::{Map, Value};

use crate::core::keys::jwk_set::KeySet;

/// Default number of entries per VM: a few MiB, enough for the tokens active on one worker.
pub const DEFAULT_ENTRIES: usize = 4096;
pub const MAX_ENTRIES: usize = 1_000_000;

/// How many trailing bytes of a token are hashed.
const HASHED_TAIL: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub provider: usize,
    /// Fingerprint of the key that verified the signature.
    pub key: u64,
    /// `exp` + the provider's skew: the entry is unusable after this instant.
    pub usable_until: f64,
    /// Shared with the requests that use it, so a hit copies no JSON.
    pub claims: Arc<Map<String, Value>>,
}

impl Verified {
    /// An entry usable until the token's `exp` plus `skew_s` (the claim checks made sure
    /// `exp` is a finite number).
    pub fn new(
        provider: usize,
        key: u64,
        skew_s: u64,
        claims: &Arc<Map<String, Value>>,
    ) -> Verified {
        let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
        Verified {
            provider,
            key,
            usable_until: exp + skew_s as f64,
            claims: Arc::clone(claims),
        }
    }
}

#[derive(Debug)]
struct Entry {
    token: Rc<str>,
    verified: Verified,
}

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    map: HashTable<Entry>,
    /// Keyed per VM, so nobody can choose tokens that collide.
    hasher: RandomState,
    /// Insertion order, for eviction. May hold tokens already gone from `map`.
    order: VecDeque<Rc<str>>,
}

/// The bucket of a token comes from its last bytes only: they are signature bytes, which no
/// one without the IdP's key can choose, so hashing the whole ~1 KiB token (a fifth of the
/// work of a cache hit) buys nothing. Equality always compares the whole token.
fn hash(hasher: &RandomState, token: &str) -> u64 {
    let bytes = token.as_bytes();
    let tail = bytes.get(bytes.len().saturating_sub(HASHED_TAIL)..);
    hasher.hash_one(tail.unwrap_or(bytes))
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            capacity,
            map: HashTable::new(),
            hasher: RandomState::new(),
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
        let h = hash(&self.hasher, token);
        let entry = self.map.find_entry(h, |e| *e.token == *token).ok()?;
        if entry.get().verified.usable_until < now as f64 {
            entry.remove();
            return None;
        }
        Some(&entry.into_mut().verified)
    }

    pub fn insert(&mut self, token: &str, verified: Verified) {
        let h = hash(&self.hasher, token);
        if self.capacity == 0 || self.map.find(h, |e| *e.token == *token).is_some() {
            return;
        }
        while self.map.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            // Only the very entry queued then: the token may have expired and come back.
            if let Ok(e) = self.map.find_entry(hash(&self.hasher, &oldest), |e| {
                Rc::ptr_eq(&e.token, &oldest)
            }) {
                e.remove();
            }
        }
        let token: Rc<str> = Rc::from(token);
        self.order.push_back(Rc::clone(&token));
        let hasher = &self.hasher;
        self.map
            .insert_unique(h, Entry { token, verified }, |e| hash(hasher, &e.token));
        // Tokens removed on expiry or purge stay in `order`; keep it proportional to the map.
        if self.order.len() > 2 * self.capacity.max(1) {
            let map = &self.map;
            self.order.retain(|t| {
                map.find(hash(hasher, t), |e| Rc::ptr_eq(&e.token, t))
                    .is_some()
            });
        }
    }

    /// Forgets every entry of `provider` verified by a key that is not in `set` any more.
    pub fn retain_keys(&mut self, provider: usize, set: &KeySet) {
        self.map
            .retain(|e| e.verified.provider != provider || set.has_fingerprint(e.verified.key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::jwk_set as jwks;
    use crate::core::test_keys;

    fn entry(provider: usize, key: u64, until: f64) -> Verified {
        Verified {
            provider,
            key,
            usable_until: until,
            claims: Arc::new(Map::new()),
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
    /// Only the tail is hashed; a token that shares it with a cached one (a forgery pairing a
    /// real signature with another payload) must still miss.
    #[test]
    fn same_tail_different_token_is_a_miss() {
        let tail = "s".repeat(2 * HASHED_TAIL);
        let mut c = TokenCache::new(10);
        c.insert(&format!("h.real.{tail}"), entry(0, 1, 1e12));
        assert!(c.get(&format!("h.real.{tail}"), 0).is_some());
        assert!(c.get(&format!("h.forged.{tail}"), 0).is_none());
        c.insert(&format!("h.other.{tail}"), entry(1, 2, 1e12));
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.get(&format!("h.other.{tail}"), 0).map(|v| v.provider),
            Some(1)
        );
        assert_eq!(
            c.get(&format!("h.real.{tail}"), 0).map(|v| v.provider),
            Some(0)
        );
    }

    /// A token that expired and was verified again is not evicted early by its first,
    /// stale place in the eviction order.
    #[test]
    fn a_reinserted_token_keeps_its_new_place() {
        let mut c = TokenCache::new(2);
        c.insert("a", entry(0, 1, 10.0));
        assert!(c.get("a", 11).is_none(), "expired");
        c.insert("b", entry(0, 1, 1e12));
        c.insert("a", entry(0, 1, 1e12));
        c.insert("c", entry(0, 1, 1e12));
        assert!(c.get("a", 0).is_some(), "the newer 'a' stays");
        assert!(c.get("b", 0).is_none(), "the oldest live entry went");
        assert!(c.get("c", 0).is_some());
    }
}
