//! A provider's cached introspection answers in one VM: keyed by `TokenKey` (never the
//! token), each until its own deadline, at most `max` of them; when full, the oldest entry
//! goes first.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use super::answer::Answer;
use super::settings::Introspection;
use super::token_key::TokenKey;

#[derive(Debug)]
struct Entry {
    answer: Answer,
    until_ms: u64,
    /// Insertion number, to tell this entry from an older one in `order`.
    seq: u64,
}

#[derive(Debug)]
pub struct AnswerCache {
    max: usize,
    entries: HashMap<TokenKey, Entry>,
    /// Keys in insertion order (some stale: their entry was replaced or removed).
    order: VecDeque<(TokenKey, u64)>,
    seq: u64,
}

impl AnswerCache {
    pub fn new(max: usize) -> AnswerCache {
        AnswerCache {
            max: max.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The answer for `key`, while it lasts.
    pub fn get(&self, key: TokenKey, now_ms: u64) -> Option<&Answer> {
        self.entries
            .get(&key)
            .filter(|e| now_ms < e.until_ms)
            .map(|e| &e.answer)
    }

    /// Keeps `answer` until `until_ms` (not at all when that has passed).
    pub fn insert(&mut self, key: TokenKey, answer: Answer, until_ms: u64, now_ms: u64) {
        if until_ms <= now_ms {
            self.entries.remove(&key);
            return;
        }
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.max {
                let Some((old, seq)) = self.order.pop_front() else {
                    break;
                };
                if self.entries.get(&old).is_some_and(|e| e.seq == seq) {
                    self.entries.remove(&old);
                }
            }
        }
        self.seq += 1;
        let seq = self.seq;
        self.entries.insert(
            key,
            Entry {
                answer,
                until_ms,
                seq,
            },
        );
        self.order.push_back((key, seq));
        // Replaced entries leave stale keys behind; keep the queue proportional.
        if self.order.len() > 2 * self.max + 16 {
            let entries = &self.entries;
            self.order
                .retain(|(k, s)| entries.get(k).is_some_and(|e| e.seq == *s));
        }
    }
}

/// Until when an answer is used: an active one for `cache_s` but never past its `exp`, an
/// inactive one for `negative_cache_s`.
pub fn until_ms(s: &Introspection, answer: &Answer, now_ms: u64) -> u64 {
    match answer {
        Answer::Inactive => now_ms.saturating_add(s.negative_cache_s.saturating_mul(1000)),
        Answer::Active(claims) => {
            let cached = now_ms.saturating_add(s.cache_s.saturating_mul(1000));
            match claims.get("exp").and_then(Value::as_f64) {
                // A float exp is truncated: never past it.
                Some(exp) if exp.is_finite() && exp >= 0.0 => {
                    cached.min((exp as u64).saturating_mul(1000))
                }
                Some(_) => now_ms,
                None => cached,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::introspection::settings::{Secret, Tokens};
    use serde_json::json;
    use std::sync::Arc;

    fn active(v: serde_json::Value) -> Answer {
        Answer::Active(Arc::new(v.as_object().unwrap().clone()))
    }

    #[test]
    fn bounded_oldest_first_and_expiring() {
        let mut c = AnswerCache::new(2);
        c.insert(TokenKey(1), Answer::Inactive, 100, 0);
        c.insert(TokenKey(2), Answer::Inactive, 100, 0);
        c.insert(TokenKey(1), Answer::Inactive, 200, 0); // replaced, stays
        c.insert(TokenKey(3), Answer::Inactive, 100, 0);
        assert_eq!(c.len(), 2);
        assert!(c.get(TokenKey(2), 0).is_none(), "the oldest went");
        assert!(c.get(TokenKey(1), 150).is_some());
        assert!(c.get(TokenKey(3), 100).is_none(), "expired at its deadline");
        c.insert(TokenKey(4), Answer::Inactive, 5, 5);
        assert!(
            c.get(TokenKey(4), 0).is_none(),
            "a deadline already past is not kept"
        );
        for i in 0..1000 {
            c.insert(TokenKey(9), Answer::Inactive, 100 + i, 0);
        }
        assert!(c.order.len() <= 2 * 2 + 16);
    }

    fn settings() -> Introspection {
        Introspection {
            uri: String::new(),
            cluster: String::new(),
            authority: String::new(),
            path: String::new(),
            authorization: Secret::default(),
            tokens: Tokens::Opaque,
            timeout_ms: 1000,
            cache_s: 60,
            negative_cache_s: 10,
            max_entries: 10,
            require_exp: true,
            max_in_flight: 1,
            breaker_failures: 5,
            breaker_cool_down_s: 10,
        }
    }

    #[test]
    fn never_past_exp() {
        let s = settings();
        let now = 1_000_000;
        assert_eq!(until_ms(&s, &Answer::Inactive, now), now + 10_000);
        assert_eq!(until_ms(&s, &active(json!({})), now), now + 60_000);
        assert_eq!(until_ms(&s, &active(json!({"exp": 1010})), now), 1_010_000);
        assert_eq!(
            until_ms(&s, &active(json!({"exp": 5000})), now),
            now + 60_000
        );
        assert_eq!(until_ms(&s, &active(json!({"exp": -1})), now), now);
    }
}
