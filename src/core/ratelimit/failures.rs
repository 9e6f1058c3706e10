//! Failure throttling (`"count": "denied"`): the same exact buckets as every rate limit, used
//! in two steps. Before any token work, `exhausted` looks (without taking) whether a key's
//! bucket is empty; when the request ends in 401, `charge_failure` takes a token by CAS. A
//! failure that finds the bucket empty (other workers took the last tokens since the look)
//! is refused as throttled, so under any concurrency at most `burst` failures per key get
//! their 401 before the bucket refills.

use crate::core::ratelimit::charge::{admit_counted, Meter, Verdict};
use crate::core::ratelimit::limits::{Count, RateLimit};

/// Whether any limit of `limits` that counts failures has an empty bucket for its key
/// (`key_values[i]`, a missing entry being the empty key): `Verdict::Limited` with the state
/// of the first such limit, else `Admitted` with no state. Nothing is written.
pub fn exhausted(meter: &Meter<'_>, limits: &[RateLimit], key_values: &[&str]) -> Verdict {
    for (i, limit) in limits.iter().enumerate() {
        if limit.count != Count::Denied {
            continue;
        }
        let key_value = key_values.get(i).copied().unwrap_or("");
        let hash = meter.hasher.hash(key_value.as_bytes());
        if let Some(refused) = meter.peek(i, limit, hash) {
            return refused;
        }
    }
    Verdict::Admitted {
        most_restrictive: None,
    }
}

/// A request that ended in 401: one token from each failure-counting limit's bucket, all or
/// none (as `admit`). `Limited` means the failure came after the bucket was emptied.
pub fn charge_failure(meter: &Meter<'_>, limits: &[RateLimit], key_values: &[&str]) -> Verdict {
    admit_counted(meter, limits, key_values, Count::Denied)
}

/// Whether some limit counts failures.
pub fn counts_failures(limits: &[RateLimit]) -> bool {
    limits.iter().any(|l| l.count == Count::Denied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ratelimit::charge::{admit, ensure_records};
    use crate::core::ratelimit::hash_key::tests::KH;
    use crate::core::ratelimit::limits::{LimitKey, DEFAULT_MAX_KEYS};
    use crate::core::store::{MemoryStore, SharedStore};

    fn limit(count: Count, requests: u64, per_s: u64, max_keys: u64) -> RateLimit {
        RateLimit {
            key: LimitKey::Ip,
            requests,
            per_s,
            burst: requests,
            max_keys,
            count,
        }
    }

    fn meter(store: &dyn SharedStore, now_ms: u64) -> Meter<'_> {
        Meter {
            store,
            hasher: &KH,
            rule: 0,
            now_ms,
        }
    }

    fn limited(v: &Verdict) -> bool {
        matches!(v, Verdict::Limited { .. })
    }

    #[test]
    fn failures_empty_the_bucket_and_looking_takes_nothing() {
        let limits = [limit(Count::Denied, 5, 60, DEFAULT_MAX_KEYS)];
        let s = MemoryStore::default();
        ensure_records(&s, 0, &limits).unwrap();
        let m = meter(&s, 1_000_000);
        for _ in 0..100 {
            assert!(!limited(&exhausted(&m, &limits, &["10.0.0.1"])));
        }
        // Requests that succeed are never charged to a failure limit.
        for _ in 0..100 {
            assert!(!limited(&admit(&m, &limits, &["10.0.0.1"])));
        }
        for _ in 0..5 {
            assert!(!limited(&charge_failure(&m, &limits, &["10.0.0.1"])));
        }
        let Verdict::Limited {
            state,
            retry_after_s,
        } = exhausted(&m, &limits, &["10.0.0.1"])
        else {
            panic!("five failures of five should empty the bucket");
        };
        assert_eq!((state.limit, state.remaining), (5, 0));
        assert_eq!(retry_after_s, 12, "one failure per 12 s");
        assert!(limited(&charge_failure(&m, &limits, &["10.0.0.1"])));
        // Another key is unaffected.
        assert!(!limited(&exhausted(&m, &limits, &["10.0.0.2"])));
        // One token back after 12 s, not before.
        assert!(limited(&exhausted(
            &meter(&s, 1_011_999),
            &limits,
            &["10.0.0.1"]
        )));
        let later = meter(&s, 1_012_000);
        assert!(!limited(&exhausted(&later, &limits, &["10.0.0.1"])));
        assert!(!limited(&charge_failure(&later, &limits, &["10.0.0.1"])));
        assert!(limited(&charge_failure(&later, &limits, &["10.0.0.1"])));
    }

    #[test]
    fn only_failure_limits_are_looked_at_and_charged() {
        let limits = [
            limit(Count::All, 1, 60, DEFAULT_MAX_KEYS),
            limit(Count::Denied, 2, 60, DEFAULT_MAX_KEYS),
        ];
        let s = MemoryStore::default();
        ensure_records(&s, 0, &limits).unwrap();
        let m = meter(&s, 5_000);
        assert!(!limited(&admit(&m, &limits, &["a", "a"])));
        assert!(
            limited(&admit(&m, &limits, &["a", "a"])),
            "the count-all limit"
        );
        assert!(!limited(&exhausted(&m, &limits, &["a", "a"])));
        assert!(!limited(&charge_failure(&m, &limits, &["a", "a"])));
        assert!(!limited(&charge_failure(&m, &limits, &["a", "a"])));
        assert!(limited(&exhausted(&m, &limits, &["a", "a"])));
        assert!(counts_failures(&limits));
        assert!(!counts_failures(&limits[..1]));
    }

    #[test]
    fn a_missing_record_is_a_full_bucket() {
        let limits = [limit(Count::Denied, 1, 60, DEFAULT_MAX_KEYS)];
        let s = MemoryStore::default();
        let m = meter(&s, 5_000);
        assert!(!limited(&exhausted(&m, &limits, &["k"])));
        assert!(!limited(&charge_failure(&m, &limits, &["k"])));
        assert!(limited(&exhausted(&m, &limits, &["k"])));
    }

    #[test]
    fn past_max_keys_the_overflow_bucket_is_looked_at() {
        // One group of 8 slots: eight keys fill it with refilling buckets, the ninth shares
        // the overflow bucket, whose emptiness the look sees.
        let limits = [limit(Count::Denied, 1, 3600, 8)];
        let s = MemoryStore::default();
        ensure_records(&s, 0, &limits).unwrap();
        let m = meter(&s, 5_000);
        let keys: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
        for k in &keys {
            assert!(!limited(&charge_failure(&m, &limits, &[k])));
            assert!(limited(&exhausted(&m, &limits, &[k])));
        }
        assert!(!limited(&exhausted(&m, &limits, &["new"])));
        assert!(!limited(&charge_failure(&m, &limits, &["new"])));
        assert!(
            limited(&exhausted(&m, &limits, &["newer"])),
            "overflow empty"
        );
    }
}
