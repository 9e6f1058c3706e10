//! Charging a request to its rule's token buckets, shared by every Envoy worker through
//! `SharedStore` (SPEC.md, `rate_limits`). A key finds its own bucket in its group, or claims
//! one holding an idle full bucket (indistinguishable from a fresh one, so forgetting it is
//! exact), or else an empty one. Reusing before filling keeps `.used` near the peak number of
//! active keys.
//!
//! Why a group per value rather than a value per slot: probing across separate values cannot
//! be atomic, so two workers serving a new key's first requests could give it two buckets and
//! admit twice its burst. With the whole probe window in one value, finding, claiming and
//! charging a bucket is a single compare-and-swap.
//!
//! Exactness: every charge is one CAS on the value holding the bucket's tokens and refill time
//! together, retried on conflict (`shared_store::update`). A record missing at request time is
//! created on the spot, which is exact unless two workers create it at the same moment: hence
//! `ensure_records` at configuration.

// What the rest of the filter names as `ratelimit::charge::…`.
pub use crate::core::ratelimit::bucket::LimitState;
pub use crate::core::ratelimit::hash_key::{
    load_or_create_hasher, stored_hasher, KeyHasher, HASH_KEY_RECORD,
};
pub use crate::core::ratelimit::record::{buckets_in_use, ensure_records};

use crate::core::ratelimit::bucket::{Bucket, Params};
use crate::core::ratelimit::limits::{Count, RateLimit};
use crate::core::ratelimit::record::{
    count_used, group_count, group_key, overflow_key, used_key, Group, GROUP_SLOTS, OVERFLOW_HASH,
};
use crate::core::store::{self as shared_store, SharedStore};

/// A slot is reused only if its bucket was already full this long ago: its owner's next
/// request, even with a clock reading that lags ours by up to this, then starts a fresh bucket
/// no fuller than the one forgotten.
const REUSE_MARGIN_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `most_restrictive` is the limit with the fewest tokens left; `None` without limits.
    Admitted {
        most_restrictive: Option<LimitState>,
    },
    /// `retry_after_s`: whole seconds (rounded up, at least 1) until one token is available.
    Limited {
        state: LimitState,
        retry_after_s: u64,
    },
}

/// What one request is charged against: the shared buckets, the hash key that places key
/// values in them, the rule (its index names its records) and the time.
#[derive(Clone, Copy)]
pub struct Meter<'a> {
    pub store: &'a dyn SharedStore,
    pub hasher: &'a KeyHasher,
    /// The rule's index in the configuration.
    pub rule: usize,
    pub now_ms: u64,
}

/// Charges the limits that count every request (`"count": "all"`); see [`admit_counted`].
pub fn admit(meter: &Meter<'_>, limits: &[RateLimit], key_values: &[&str]) -> Verdict {
    admit_counted(meter, limits, key_values, Count::All)
}

/// Charges one token from the bucket of each limit that counts `count` for `key_values[i]` (a
/// missing entry is the empty key); the other limits are skipped, keeping their indexes. All
/// charged limits must admit; when one refuses, the tokens already taken from the
/// earlier ones are put back (capped at `burst`). Between the take and the refund another
/// request for the same key may see one token fewer and be limited: the window errs strict,
/// never admitting more than the buckets hold.
///
/// Fail-safe: when the store stays contended past the retry bound or refuses a write, the
/// limit answers Limited as if its bucket were empty. A key that finds no slot in its group
/// (all held by other keys' buckets still refilling) is charged to the limit's one overflow
/// bucket, shared by all such keys, so past `max_keys` keys are limited together, never
/// unlimited. A key that later gets a slot starts it full (seeding it from the overflow level
/// would refuse every new key whenever one group overflowed), so across all keys the excess
/// over per-key limits is at most what the one overflow bucket admits.
pub(super) fn admit_counted(
    meter: &Meter<'_>,
    limits: &[RateLimit],
    key_values: &[&str],
    count: Count,
) -> Verdict {
    let mut held: Vec<(Params, Held)> = Vec::with_capacity(limits.len());
    let mut most: Option<LimitState> = None;
    for (i, limit) in limits.iter().enumerate() {
        if limit.count != count {
            continue;
        }
        let key_value = key_values.get(i).copied().unwrap_or("");
        let params = Params::new(limit);
        let hash = meter.hasher.hash(key_value.as_bytes());
        match meter.take(i, limit, &params, hash) {
            Taken::Admitted(state, h) => {
                if most.is_none_or(|m| state.remaining < m.remaining) {
                    most = Some(state);
                }
                held.push((params, h));
            }
            Taken::Limited {
                state,
                retry_after_s,
            } => {
                for (params, h) in held.iter().rev() {
                    refund(meter.store, h, params, meter.now_ms);
                }
                return Verdict::Limited {
                    state,
                    retry_after_s,
                };
            }
        }
    }
    Verdict::Admitted {
        most_restrictive: most,
    }
}

/// Where a token was taken, so it can be put back.
struct Held {
    key: String,
    slots: usize,
    hash: u64,
}

enum Taken {
    Admitted(LimitState, Held),
    Limited {
        state: LimitState,
        retry_after_s: u64,
    },
}

/// Refused with `tokens` left.
fn limited(p: &Params, tokens: u128) -> Taken {
    Taken::Limited {
        state: p.state(tokens),
        retry_after_s: p.retry_after_s(tokens),
    }
}

enum Step {
    Admitted { state: LimitState, newly_used: bool },
    Limited(Taken),
    NoSlot,
    Absent,
}

/// Where a key's bucket is looked for: in a value of `slots` buckets, from slot `home` on, the
/// one of key hash `hash`.
#[derive(Clone, Copy)]
struct Probe {
    slots: usize,
    home: usize,
    hash: u64,
}

impl Meter<'_> {
    /// Takes a token from limit `index` for the key of hash `hash`: from its own bucket, or
    /// from the overflow bucket when its group has no slot for it.
    fn take(&self, index: usize, limit: &RateLimit, p: &Params, hash: u64) -> Taken {
        let groups = group_count(limit.max_keys);
        let home = usize::try_from((hash / groups) % GROUP_SLOTS as u64).unwrap_or(0);
        let key = group_key(self.rule, index, hash % groups);
        let probe = Probe {
            slots: GROUP_SLOTS,
            home,
            hash,
        };
        match self.charge(&key, probe, p) {
            Some(Step::Admitted { state, newly_used }) => {
                if newly_used {
                    let cap = groups * GROUP_SLOTS as u64;
                    count_used(self.store, &used_key(self.rule, index), cap);
                }
                Taken::Admitted(
                    state,
                    Held {
                        key,
                        slots: GROUP_SLOTS,
                        hash,
                    },
                )
            }
            Some(Step::Limited(t)) => t,
            Some(Step::NoSlot) => self.take_overflow(index, p),
            Some(Step::Absent) | None => limited(p, 0),
        }
    }

    /// Every slot holds another key's bucket that is still spending: share the strict
    /// overflow bucket rather than go unlimited or evict a live bucket.
    fn take_overflow(&self, index: usize, p: &Params) -> Taken {
        let key = overflow_key(self.rule, index);
        let probe = Probe {
            slots: 1,
            home: 0,
            hash: OVERFLOW_HASH,
        };
        match self.charge(&key, probe, p) {
            Some(Step::Admitted { state, .. }) => Taken::Admitted(
                state,
                Held {
                    key,
                    slots: 1,
                    hash: OVERFLOW_HASH,
                },
            ),
            Some(Step::Limited(t)) => t,
            _ => limited(p, 0),
        }
    }

    /// Whether limit `index` would refuse the key of hash `hash` now, without taking anything:
    /// its own bucket holds less than a token, or it has none, its group has no slot for one
    /// and the overflow bucket is empty. A record not created yet holds only full buckets.
    pub(super) fn peek(&self, index: usize, limit: &RateLimit, hash: u64) -> Option<Verdict> {
        let p = Params::new(limit);
        let groups = group_count(limit.max_keys);
        let probe = Probe {
            slots: GROUP_SLOTS,
            home: usize::try_from((hash / groups) % GROUP_SLOTS as u64).unwrap_or(0),
            hash,
        };
        let step = match self.peek_group(&group_key(self.rule, index, hash % groups), probe, &p) {
            Err(Step::NoSlot) => {
                let overflow = Probe {
                    slots: 1,
                    home: 0,
                    hash: OVERFLOW_HASH,
                };
                self.peek_group(&overflow_key(self.rule, index), overflow, &p)
            }
            other => other,
        };
        match step {
            Ok(tokens) if tokens >= p.unit => None,
            Ok(tokens) => Some(Verdict::Limited {
                state: p.state(tokens),
                retry_after_s: p.retry_after_s(tokens),
            }),
            Err(Step::Limited(Taken::Limited {
                state,
                retry_after_s,
            })) => Some(Verdict::Limited {
                state,
                retry_after_s,
            }),
            Err(_) => None,
        }
    }

    /// The tokens the key's bucket in one group value would hold now (a claimed slot is full).
    fn peek_group(&self, key: &str, probe: Probe, p: &Params) -> Result<u128, Step> {
        let (Some(bytes), _) = self.store.get(key) else {
            return Err(Step::Absent);
        };
        let g = Group::load(&bytes, probe.slots, p);
        find_bucket(&g, probe, p, self.now_ms).map(|found| found.bucket.tokens)
    }

    /// One CAS read-modify-write of a group; `None` when the store failed or stayed contended.
    fn charge(&self, key: &str, probe: Probe, p: &Params) -> Option<Step> {
        for _ in 0..2 {
            let step = shared_store::update(self.store, key, |current| match current {
                // Never write a missing key from here: that write would be unconditional.
                None => (None, Step::Absent),
                Some(bytes) => charge_group(bytes, probe, p, self.now_ms),
            })
            .ok()?;
            match step {
                Step::Absent => {
                    let empty = Group::empty(p.per_s, probe.slots).encode();
                    shared_store::ensure(self.store, key, &empty).ok()?
                }
                other => return Some(other),
            }
        }
        None
    }
}

/// A charge of the group value `bytes`: what to write back (if anything) and what happened.
fn charge_group(bytes: &[u8], probe: Probe, p: &Params, now: u64) -> (Option<Vec<u8>>, Step) {
    let mut g = Group::load(bytes, probe.slots, p);
    match find_bucket(&g, probe, p, now) {
        Ok(found) => spend(&mut g, found, p),
        Err(step) => (None, step),
    }
}

/// The bucket a charge works on, as it stands at `now`, and its slot.
struct Found {
    index: usize,
    bucket: Bucket,
    /// The slot was empty: the limit's used count grows.
    newly_used: bool,
    /// The refill time moved back (a clock step): worth writing even if refused.
    rebased: bool,
}

/// The key's own bucket, refilled; else a slot to claim (see [`claim_slot`]).
fn find_bucket(g: &Group, probe: Probe, p: &Params, now: u64) -> Result<Found, Step> {
    let own = g
        .slots
        .iter()
        .position(|s| matches!(s, Some(b) if b.hash == probe.hash));
    let Some(index) = own else {
        return claim_slot(g, probe, p, now);
    };
    match g.slots.get(index).copied().flatten() {
        Some(stored) => {
            let bucket = stored.refilled(p, now);
            Ok(Found {
                index,
                bucket,
                newly_used: false,
                rebased: bucket.last_ms < stored.last_ms,
            })
        }
        None => Err(Step::Limited(limited(p, 0))),
    }
}

/// A fresh full bucket for a key without one, in the first slot from its home that holds an
/// idle full bucket, else in the first empty one; `NoSlot` when there is neither.
fn claim_slot(g: &Group, probe: Probe, p: &Params, now: u64) -> Result<Found, Step> {
    let n = probe.slots;
    let reuse_at = now.saturating_sub(REUSE_MARGIN_MS);
    let order = || (0..n).map(|k| (probe.home + k) % n);
    let idle = order().find(
        |&i| matches!(g.slots.get(i), Some(Some(b)) if b.refilled(p, reuse_at).tokens >= p.cap),
    );
    let free = match idle {
        Some(i) => Some((i, false)),
        None => order()
            .find(|&i| matches!(g.slots.get(i), Some(None)))
            .map(|i| (i, true)),
    };
    let Some((index, was_empty)) = free else {
        return Err(Step::NoSlot);
    };
    let bucket = Bucket {
        hash: probe.hash,
        tokens: p.cap,
        last_ms: now,
    };
    Ok(Found {
        index,
        bucket,
        newly_used: was_empty,
        rebased: false,
    })
}

/// Spends one token of the found bucket, or refuses when it holds less than one.
fn spend(g: &mut Group, found: Found, p: &Params) -> (Option<Vec<u8>>, Step) {
    let Found {
        index,
        bucket,
        newly_used,
        rebased,
    } = found;
    let Some(slot) = g.slots.get_mut(index) else {
        return (None, Step::Limited(limited(p, 0)));
    };
    if bucket.tokens < p.unit {
        // Refused requests write nothing, except to record a clock step so that the bucket
        // does not wait for the old time to come back.
        *slot = Some(bucket);
        let write = rebased.then(|| g.encode());
        return (write, Step::Limited(limited(p, bucket.tokens)));
    }
    *slot = Some(Bucket {
        tokens: bucket.tokens - p.unit,
        ..bucket
    });
    let after = bucket.tokens - p.unit;
    (
        Some(g.encode()),
        Step::Admitted {
            state: p.state(after),
            newly_used,
        },
    )
}

/// Best effort: a refund that cannot be written leaves the bucket stricter, never looser, and
/// a bucket that was reclaimed meanwhile was full, so there is nothing to put back.
fn refund(store: &dyn SharedStore, held: &Held, p: &Params, now: u64) {
    let _ = shared_store::update(store, &held.key, |current| {
        let Some(bytes) = current else {
            return (None, ());
        };
        let mut g = Group::load(bytes, held.slots, p);
        let Some(slot) = g
            .slots
            .iter_mut()
            .find(|s| matches!(s, Some(b) if b.hash == held.hash))
        else {
            return (None, ());
        };
        if let Some(b) = slot.as_mut() {
            let r = b.refilled(p, now);
            *b = Bucket {
                tokens: r.tokens.saturating_add(p.unit).min(p.cap),
                ..r
            };
        }
        (Some(g.encode()), ())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ratelimit::hash_key::tests::KH;
    use crate::core::ratelimit::limits::{LimitKey, DEFAULT_MAX_KEYS};
    use crate::core::ratelimit::record::tests::xorshift;
    use crate::core::store::{Cas, MemoryStore, WriteError};
    use std::cell::{Cell, RefCell};
    use std::collections::{BTreeSet, HashMap};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    fn limit(requests: u64, per_s: u64, burst: u64) -> RateLimit {
        RateLimit {
            key: LimitKey::Route,
            requests,
            per_s,
            burst,
            max_keys: DEFAULT_MAX_KEYS,
            count: Count::All,
        }
    }

    fn prepared(limits: &[RateLimit]) -> MemoryStore {
        let s = MemoryStore::default();
        ensure_records(&s, 0, limits).unwrap();
        s
    }

    /// `admit` at `now` for rule `rule`, under the tests' hash key.
    fn admit_all(
        store: &dyn SharedStore,
        rule: usize,
        limits: &[RateLimit],
        key_values: &[&str],
        now: u64,
    ) -> Verdict {
        let meter = Meter {
            store,
            hasher: &KH,
            rule,
            now_ms: now,
        };
        admit(&meter, limits, key_values)
    }

    fn one(store: &dyn SharedStore, l: &RateLimit, key: &str, now: u64) -> Verdict {
        admit_all(store, 0, std::slice::from_ref(l), &[key], now)
    }

    fn admitted(v: &Verdict) -> bool {
        matches!(v, Verdict::Admitted { .. })
    }

    fn remaining(v: &Verdict) -> u64 {
        match v {
            Verdict::Admitted {
                most_restrictive: Some(s),
            } => s.remaining,
            other => panic!("not admitted with a state: {other:?}"),
        }
    }

    // ---- the bucket ----

    #[test]
    fn burst_is_admitted_at_once_then_limited() {
        let l = limit(5, 60, 5);
        let s = prepared(std::slice::from_ref(&l));
        for left in (0..5).rev() {
            assert_eq!(remaining(&one(&s, &l, "alice", 1_000)), left);
        }
        assert!(!admitted(&one(&s, &l, "alice", 1_000)));
        assert!(!admitted(&one(&s, &l, "alice", 1_001)));
    }

    #[test]
    fn refill_is_continuous_and_exact_at_the_boundaries() {
        // 5 per 60 s: one token every 12 s, not 5 at the top of each minute.
        let l = limit(5, 60, 5);
        let s = prepared(std::slice::from_ref(&l));
        for _ in 0..5 {
            assert!(admitted(&one(&s, &l, "u", 0)));
        }
        assert!(!admitted(&one(&s, &l, "u", 11_999)));
        assert!(admitted(&one(&s, &l, "u", 12_000)));
        assert!(!admitted(&one(&s, &l, "u", 12_000)));
        assert!(!admitted(&one(&s, &l, "u", 23_999)));
        assert!(admitted(&one(&s, &l, "u", 24_000)));
        // Partial progress is kept: 6 s + 6 s make one token.
        assert!(!admitted(&one(&s, &l, "u", 30_000)));
        assert!(admitted(&one(&s, &l, "u", 36_000)));
        // Idle long enough, the bucket is full again and no fuller.
        assert_eq!(remaining(&one(&s, &l, "u", 1_000_000)), 4);
    }

    #[test]
    fn retry_after_and_reset_are_whole_seconds_rounded_up() {
        let l = limit(5, 60, 5);
        let s = prepared(std::slice::from_ref(&l));
        assert_eq!(
            one(&s, &l, "u", 0),
            Verdict::Admitted {
                most_restrictive: Some(LimitState {
                    limit: 5,
                    remaining: 4,
                    reset_s: 12
                })
            }
        );
        for _ in 0..4 {
            one(&s, &l, "u", 0);
        }
        let limited = |retry_after_s, reset_s| Verdict::Limited {
            state: LimitState {
                limit: 5,
                remaining: 0,
                reset_s,
            },
            retry_after_s,
        };
        assert_eq!(one(&s, &l, "u", 0), limited(12, 60));
        assert_eq!(one(&s, &l, "u", 1_000), limited(11, 59));
        assert_eq!(one(&s, &l, "u", 1_001), limited(11, 59));
        assert_eq!(one(&s, &l, "u", 11_001), limited(1, 49));
        assert_eq!(one(&s, &l, "u", 11_999), limited(1, 49));
    }

    #[test]
    fn burst_above_the_rate() {
        let l = limit(1, 1, 3);
        let s = prepared(std::slice::from_ref(&l));
        for _ in 0..3 {
            assert!(admitted(&one(&s, &l, "u", 0)));
        }
        assert!(!admitted(&one(&s, &l, "u", 999)));
        assert!(admitted(&one(&s, &l, "u", 1_000)));
        assert!(!admitted(&one(&s, &l, "u", 1_000)));
    }

    #[test]
    fn keys_are_independent() {
        let l = limit(2, 60, 2);
        let s = prepared(std::slice::from_ref(&l));
        assert!(admitted(&one(&s, &l, "alice", 0)));
        assert!(admitted(&one(&s, &l, "alice", 0)));
        assert!(!admitted(&one(&s, &l, "alice", 0)));
        assert_eq!(remaining(&one(&s, &l, "bob", 0)), 1);
        assert_eq!(remaining(&one(&s, &l, "", 0)), 1, "the empty key too");
        assert!(!admitted(&one(&s, &l, "alice", 0)));
    }

    #[test]
    fn missing_key_values_are_the_empty_key() {
        let l = limit(1, 60, 1);
        let s = prepared(std::slice::from_ref(&l));
        assert!(admitted(&admit_all(
            &s,
            0,
            std::slice::from_ref(&l),
            &[],
            0
        )));
        assert!(!admitted(&one(&s, &l, "", 0)));
    }

    #[test]
    fn no_limits_admit_without_state() {
        let s = MemoryStore::default();
        assert_eq!(
            admit_all(&s, 0, &[], &[], 0),
            Verdict::Admitted {
                most_restrictive: None
            }
        );
        assert!(s.is_empty());
    }

    // ---- several limits ----

    #[test]
    fn a_rejection_by_a_later_limit_refunds_the_earlier() {
        let per_user = limit(10, 60, 10);
        let per_route = limit(1, 60, 1);
        let both = [per_user.clone(), per_route.clone()];
        let s = prepared(&both);
        let first = admit_all(&s, 0, &both, &["alice", ""], 0);
        assert_eq!(
            first,
            Verdict::Admitted {
                most_restrictive: Some(LimitState {
                    limit: 1,
                    remaining: 0,
                    reset_s: 60
                })
            },
            "the fewest remaining"
        );
        for _ in 0..5 {
            let v = admit_all(&s, 0, &both, &["alice", ""], 0);
            assert!(
                matches!(v, Verdict::Limited { state, retry_after_s: 60 } if state.limit == 1),
                "{v:?}"
            );
        }
        // Limit 0 alone (same rule and index, so the same buckets): only the first request
        // was charged.
        assert_eq!(remaining(&one(&s, &per_user, "alice", 0)), 8);
    }

    #[test]
    fn a_rejection_by_the_first_limit_charges_nothing_after_it() {
        let a = limit(1, 60, 1);
        let b = limit(10, 60, 10);
        let both = [a, b];
        let s = prepared(&both);
        assert!(admitted(&admit_all(&s, 0, &both, &["x", "y"], 0)));
        assert!(!admitted(&admit_all(&s, 0, &both, &["x", "y"], 0)));
        assert!(!admitted(&admit_all(&s, 0, &both, &["x", "y"], 0)));
        // Limit 1's bucket for "y", seen through a roomy limit 0: charged once, then now.
        let roomy = [limit(100, 60, 100), both[1].clone()];
        let v = admit_all(&s, 0, &roomy, &["fresh", "y"], 0);
        assert_eq!(remaining(&v), 8);
    }

    #[test]
    fn a_refund_never_fills_past_burst() {
        let a = limit(1, 1, 1);
        let held = Held {
            key: group_key(0, 0, 0),
            slots: GROUP_SLOTS,
            hash: 42,
        };
        let s = MemoryStore::default();
        let p = Params::new(&a);
        let mut g = Group::empty(1, GROUP_SLOTS);
        g.slots[3] = Some(Bucket {
            hash: 42,
            tokens: 0,
            last_ms: 0,
        });
        s.set(&held.key, &g.encode(), None).unwrap();
        // By 5 s the bucket has refilled; putting a token back must not exceed one.
        refund(&s, &held, &p, 5_000);
        refund(&s, &held, &p, 5_000);
        let stored = Group::decode(&s.get(&held.key).0.unwrap(), GROUP_SLOTS).unwrap();
        assert_eq!(stored.slots[3].unwrap().tokens, p.cap);
    }

    // ---- interleavings ----

    /// Runs `hook` once, right after the first read, i.e. between a worker's get and its set.
    struct PauseAfterGet<'a> {
        inner: &'a dyn SharedStore,
        hook: RefCell<Option<Box<dyn FnOnce() + 'a>>>,
        /// Writes ignore the version, as a get/set limiter's would.
        naive: bool,
    }

    impl SharedStore for PauseAfterGet<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
            let out = self.inner.get(key);
            let hook = self.hook.borrow_mut().take();
            if let Some(hook) = hook {
                hook();
            }
            out
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
            self.inner
                .set(key, value, if self.naive { None } else { cas })
        }
    }

    /// Workers A and B both read a bucket holding one token before either writes.
    fn race_two(naive: bool) -> usize {
        let l = limit(1, 60, 1);
        let s = prepared(std::slice::from_ref(&l));
        let b_admitted = Cell::new(false);
        let worker_b = PauseAfterGet {
            inner: &s,
            hook: RefCell::new(None),
            naive,
        };
        let worker_a = PauseAfterGet {
            inner: &s,
            hook: RefCell::new(Some(Box::new(|| {
                b_admitted.set(admitted(&one(&worker_b, &l, "u", 0)));
            }))),
            naive,
        };
        let a = admitted(&one(&worker_a, &l, "u", 0));
        usize::from(a) + usize::from(b_admitted.get())
    }

    #[test]
    fn the_get_set_race_admits_exactly_with_cas() {
        assert_eq!(
            race_two(true),
            2,
            "without CAS both workers spend the one token"
        );
        assert_eq!(race_two(false), 1);
    }

    #[test]
    fn three_nested_workers_admit_exactly_burst() {
        let l = limit(2, 60, 2);
        let s = prepared(std::slice::from_ref(&l));
        let count = Cell::new(0);
        let c = PauseAfterGet {
            inner: &s,
            hook: RefCell::new(None),
            naive: false,
        };
        let b = PauseAfterGet {
            inner: &s,
            hook: RefCell::new(Some(Box::new(|| {
                let ok = admitted(&one(&c, &l, "u", 0));
                count.set(count.get() + usize::from(ok));
            }))),
            naive: false,
        };
        let a = PauseAfterGet {
            inner: &s,
            hook: RefCell::new(Some(Box::new(|| {
                let ok = admitted(&one(&b, &l, "u", 0));
                count.set(count.get() + usize::from(ok));
            }))),
            naive: false,
        };
        let ok = admitted(&one(&a, &l, "u", 0));
        count.set(count.get() + usize::from(ok));
        assert_eq!(count.get(), 2);
    }

    /// A deterministic scheduler: worker threads block before every store operation and a
    /// seeded random choice picks which one performs its next operation, so every run is one
    /// reproducible fine-grained interleaving of get/set calls across workers.
    struct Sched {
        st: Mutex<SchedState>,
        cv: Condvar,
        naive: bool,
    }

    #[derive(Default)]
    struct SchedState {
        map: HashMap<String, (Vec<u8>, Cas)>,
        next: Cas,
        waiting: BTreeSet<usize>,
        running: Option<usize>,
        live: usize,
    }

    struct StepStore<'a> {
        sched: &'a Sched,
        id: usize,
        /// Setup outside the schedule.
        direct: bool,
    }

    impl StepStore<'_> {
        fn step<T>(&self, f: impl FnOnce(&mut SchedState) -> T) -> T {
            let mut st = self.sched.st.lock().unwrap();
            if self.direct {
                return f(&mut st);
            }
            st.waiting.insert(self.id);
            self.sched.cv.notify_all();
            while st.running != Some(self.id) {
                st = self.sched.cv.wait(st).unwrap();
            }
            let out = f(&mut st);
            st.waiting.remove(&self.id);
            st.running = None;
            self.sched.cv.notify_all();
            out
        }
    }

    impl SharedStore for StepStore<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
            self.step(|st| match st.map.get(key) {
                Some((v, c)) => (Some(v.clone()), Some(*c)),
                None => (None, None),
            })
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
            let naive = self.sched.naive;
            self.step(|st| {
                // Envoy: a stale version on an existing key conflicts; anything else writes.
                if let (Some((_, current)), Some(cas), false) = (st.map.get(key), cas, naive) {
                    if *current != cas {
                        return Err(WriteError::Conflict);
                    }
                }
                st.next += 1;
                let next = st.next;
                st.map.insert(key.to_owned(), (value.to_vec(), next));
                Ok(())
            })
        }
    }

    /// `workers` threads each send `per_worker` requests for one key; returns the admissions.
    fn interleaved(
        seed: u64,
        workers: usize,
        per_worker: usize,
        naive: bool,
        prepare: bool,
        l: &RateLimit,
        now: impl Fn(usize, usize) -> u64 + Sync,
    ) -> usize {
        let sched = Sched {
            st: Mutex::new(SchedState {
                live: workers,
                ..SchedState::default()
            }),
            cv: Condvar::new(),
            naive,
        };
        if prepare {
            let setup = StepStore {
                sched: &sched,
                id: usize::MAX,
                direct: true,
            };
            ensure_records(&setup, 0, std::slice::from_ref(l)).unwrap();
        }
        let count = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for id in 0..workers {
                let (sched, count, now) = (&sched, &count, &now);
                scope.spawn(move || {
                    let store = StepStore {
                        sched,
                        id,
                        direct: false,
                    };
                    for k in 0..per_worker {
                        if admitted(&one(&store, l, "u", now(id, k))) {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    sched.st.lock().unwrap().live -= 1;
                    sched.cv.notify_all();
                });
            }
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            loop {
                let mut st = sched.st.lock().unwrap();
                while st.running.is_some() || st.waiting.len() < st.live {
                    st = sched.cv.wait(st).unwrap();
                }
                if st.live == 0 {
                    break;
                }
                let k = (xorshift(&mut rng) % st.waiting.len() as u64) as usize;
                st.running = st.waiting.iter().nth(k).copied();
                sched.cv.notify_all();
            }
        });
        count.into_inner()
    }

    #[test]
    fn arbitrary_interleavings_admit_exactly_burst() {
        let l = limit(5, 60, 5);
        let mut naive_over = 0;
        for seed in 0..40 {
            assert_eq!(
                interleaved(seed, 4, 10, false, true, &l, |_, _| 1_000),
                5,
                "seed {seed}"
            );
            if interleaved(seed, 4, 10, true, true, &l, |_, _| 1_000) > 5 {
                naive_over += 1;
            }
        }
        assert!(
            naive_over > 0,
            "the schedules must include ones that break a get/set limiter"
        );
    }

    #[test]
    fn arbitrary_interleavings_with_a_moving_clock_stay_within_burst_plus_refill() {
        // 5 per second: one token every 200 ms; requests spread over 0..=1_900 ms.
        let l = limit(5, 1, 5);
        for seed in 0..30 {
            let n = interleaved(seed, 4, 20, false, true, &l, |id, k| {
                (k as u64) * 100 + (id as u64) * 7
            });
            // Clock readings span 0..=1_921 ms: at most 5 + floor(1_921 / 200) = 14.
            assert!(n <= 14, "seed {seed}: {n}");
            assert!(n >= 5, "seed {seed}: {n}");
        }
    }

    /// Without `ensure_records`, the first write of a record is unconditional on Envoy, so two
    /// workers creating it at the same moment can lose one's charge: why the shell must
    /// create the records at configuration.
    #[test]
    fn records_created_at_configuration_are_what_make_first_requests_exact() {
        let l = limit(1, 60, 1);
        for seed in 0..200 {
            assert_eq!(
                interleaved(seed, 4, 3, false, true, &l, |_, _| 0),
                1,
                "seed {seed}"
            );
        }
        let lazy_over = (0..200)
            .filter(|&seed| interleaved(seed, 4, 3, false, false, &l, |_, _| 0) > 1)
            .count();
        assert!(
            lazy_over > 0,
            "some schedules lose a charge when records are created late"
        );
    }

    /// Real threads on a mutex-guarded store, yielding between operations.
    #[test]
    fn real_threads_admit_exactly_burst() {
        struct Shared<'a>(&'a Mutex<MemoryStore>);
        impl SharedStore for Shared<'_> {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
                std::thread::yield_now();
                self.0.lock().unwrap().get(key)
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
                std::thread::yield_now();
                self.0.lock().unwrap().set(key, value, cas)
            }
        }
        let l = limit(50, 60, 50);
        let store = Mutex::new(prepared(std::slice::from_ref(&l)));
        let count = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    let s = Shared(&store);
                    for _ in 0..100 {
                        if admitted(&one(&s, &l, "u", 5)) {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(count.into_inner(), 50);
    }

    // ---- bounded memory ----

    #[test]
    fn a_key_flood_stays_within_max_keys() {
        let l = RateLimit {
            max_keys: 1_000,
            ..limit(1, 60, 1)
        };
        let s = prepared(std::slice::from_ref(&l));
        let records = s.len();
        assert_eq!(records, 125 + 2);
        for i in 0..100_000u64 {
            let key = format!("user-{i}");
            one(&s, &l, &key, i / 10);
        }
        assert_eq!(s.len(), records, "no key per key value");
        assert_eq!(buckets_in_use(&s, 0, 0), 1_000);
    }

    #[test]
    fn the_used_count_is_created_on_demand_and_capped() {
        let l = RateLimit {
            max_keys: 8,
            ..limit(1, 1, 1)
        };
        let s = MemoryStore::default();
        assert_eq!(buckets_in_use(&s, 0, 0), 0);
        for i in 0..100u64 {
            // One second apart, so every old bucket is full again and reusable.
            one(&s, &l, &i.to_string(), i * 2_000);
        }
        assert_eq!(buckets_in_use(&s, 0, 0), 1, "full buckets are reused");
        for i in 0..100u64 {
            one(&s, &l, &format!("k{i}"), 1_000_000);
        }
        assert_eq!(buckets_in_use(&s, 0, 0), 8);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn past_max_keys_keys_share_a_strict_overflow_bucket() {
        // max_keys 8: one group of 8 slots.
        let l = RateLimit {
            max_keys: 8,
            ..limit(2, 60, 2)
        };
        let s = prepared(std::slice::from_ref(&l));
        for i in 0..8 {
            assert!(admitted(&one(&s, &l, &format!("owner{i}"), 0)));
        }
        // The group is full of spending buckets: newcomers share one bucket of burst 2.
        assert!(admitted(&one(&s, &l, "x", 0)));
        assert!(admitted(&one(&s, &l, "y", 0)));
        assert!(!admitted(&one(&s, &l, "x", 0)));
        assert!(!admitted(&one(&s, &l, "z", 0)));
        // Owners keep their own buckets.
        assert!(admitted(&one(&s, &l, "owner3", 0)));
        assert!(!admitted(&one(&s, &l, "owner3", 0)));
        // Not before an owner's bucket has been full for the reuse margin: at 30 s the seven
        // owners are full, but only since 30 s. The overflow has one token again by then.
        assert!(admitted(&one(&s, &l, "z", 30_000)));
        assert!(!admitted(&one(&s, &l, "x", 30_999)));
        // At 31 s `x` takes an idle owner's slot, full; the owner it displaced comes back to a
        // full bucket of its own elsewhere in the group.
        assert!(admitted(&one(&s, &l, "x", 31_000)));
        assert!(admitted(&one(&s, &l, "x", 31_000)));
        assert!(!admitted(&one(&s, &l, "x", 31_000)));
        assert_eq!(buckets_in_use(&s, 0, 0), 8);
    }

    #[test]
    fn an_idle_full_bucket_is_reused_and_forgetting_it_is_exact() {
        let l = RateLimit {
            max_keys: 8,
            ..limit(1, 10, 1)
        };
        let s = prepared(std::slice::from_ref(&l));
        let owners: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
        for k in &owners {
            assert!(admitted(&one(&s, &l, k, 0)));
        }
        // Full at 10 s, but reusable only a margin later: `n` overflows.
        assert!(admitted(&one(&s, &l, "n", 10_500)));
        assert!(!admitted(&one(&s, &l, "m", 10_500)));
        // At 21 s everything is full again. `m` takes an idle slot; the owner it displaced
        // finds a fresh full bucket elsewhere, which is exactly what it had: every owner gets
        // one request, and one only.
        assert!(admitted(&one(&s, &l, "m", 21_000)));
        assert!(!admitted(&one(&s, &l, "m", 21_000)));
        let first: usize = owners
            .iter()
            .map(|k| usize::from(admitted(&one(&s, &l, k, 21_000))))
            .sum();
        assert_eq!(first, 8);
        for k in &owners {
            assert!(!admitted(&one(&s, &l, k, 21_000)), "{k}");
        }
        assert_eq!(s.len(), 3);
        assert_eq!(buckets_in_use(&s, 0, 0), 8);
    }

    // ---- robustness ----

    #[test]
    fn undecodable_records_are_fresh_buckets_and_get_repaired() {
        let l = limit(2, 60, 2);
        let s = prepared(std::slice::from_ref(&l));
        let hash = KH.hash(b"u");
        let key = group_key(0, 0, hash % group_count(l.max_keys));
        for garbage in [&b""[..], b"R", &[0xff; 275], &[0; 1000]] {
            let (_, cas) = s.get(&key);
            s.set(&key, garbage, cas).unwrap();
            assert_eq!(remaining(&one(&s, &l, "u", 0)), 1);
            assert!(Group::decode(&s.get(&key).0.unwrap(), GROUP_SLOTS).is_some());
        }
        s.set(&used_key(0, 0), b"nope", None).unwrap();
        assert_eq!(buckets_in_use(&s, 0, 0), 0);
        s.set(&overflow_key(0, 0), b"\x01\x02", None).unwrap();
        s.set(&used_key(0, 0), b"", None).unwrap();
        // Tokens beyond burst (a lowered burst, or a bad write) are clamped, never spent.
        let mut g = Group::empty(60, GROUP_SLOTS);
        g.slots[0] = Some(Bucket {
            hash,
            tokens: u128::MAX,
            last_ms: 0,
        });
        s.set(&key, &g.encode(), None).unwrap();
        assert_eq!(remaining(&one(&s, &l, "u", 0)), 1);
    }

    #[test]
    fn a_clock_going_backwards_mints_nothing() {
        let l = limit(5, 60, 5);
        let s = prepared(std::slice::from_ref(&l));
        let t = 10_000_000;
        for _ in 0..5 {
            assert!(admitted(&one(&s, &l, "u", t)));
        }
        // Workers' readings out of order by seconds: no refill, and no refill twice later.
        assert!(!admitted(&one(&s, &l, "u", t - 50_000)));
        assert!(!admitted(&one(&s, &l, "u", t + 11_999)));
        assert!(admitted(&one(&s, &l, "u", t + 12_000)));
        assert!(!admitted(&one(&s, &l, "u", t + 12_000)));
        // A real step back (hours): nothing is minted, and the bucket refills from the new
        // time instead of waiting hours for the old one to come back.
        let back = 1_000;
        assert!(!admitted(&one(&s, &l, "u", back)));
        assert!(!admitted(&one(&s, &l, "u", back + 11_999)));
        assert!(admitted(&one(&s, &l, "u", back + 12_000)));
        assert!(!admitted(&one(&s, &l, "u", back + 12_000)));
        assert!(!admitted(&one(&s, &l, "u", 0)));
        assert!(admitted(&one(&s, &l, "u", u64::MAX)));
    }

    #[test]
    fn extreme_times_and_limits_do_not_panic() {
        let big = RateLimit {
            max_keys: 1_000_000,
            ..limit(1_000_000_000, 86_400 * 366, 1_000_000_000)
        };
        let s = MemoryStore::default();
        for now in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX, 0] {
            one(&s, &big, "u", now);
            one(&s, &limit(1, 1, 1), "u", now);
        }
        // Hand-built limits the parser would refuse.
        for l in [
            limit(0, 0, 0),
            limit(0, 1, 1),
            limit(1, 0, 1),
            limit(1, 1, 0),
            RateLimit {
                max_keys: 0,
                ..limit(1, 1, 1)
            },
        ] {
            let s = MemoryStore::default();
            for now in [0, 5_000, u64::MAX] {
                let _ = one(&s, &l, "u", now);
            }
        }
        let zero_burst = one(&MemoryStore::default(), &limit(1, 1, 0), "u", 0);
        assert!(!admitted(&zero_burst));
    }

    #[test]
    fn a_changed_period_rescales_without_minting() {
        let l = limit(5, 60, 5);
        let s = prepared(std::slice::from_ref(&l));
        for _ in 0..4 {
            one(&s, &l, "u", 0);
        }
        // One token left; the operator doubles the period: still exactly one token.
        let slower = limit(5, 120, 5);
        assert_eq!(remaining(&one(&s, &slower, "u", 0)), 0);
        assert!(!admitted(&one(&s, &slower, "u", 0)));
        // And back: nothing appeared.
        assert!(!admitted(&one(&s, &l, "u", 0)));
        // A lowered burst clamps.
        let l = limit(5, 60, 5);
        let s = prepared(std::slice::from_ref(&l));
        one(&s, &l, "v", 0);
        assert_eq!(remaining(&one(&s, &limit(5, 60, 2), "v", 0)), 1);
    }

    // ---- the store misbehaving ----

    struct Refusing {
        inner: MemoryStore,
        error: WriteError,
        /// Only keys containing this fail.
        matching: &'static str,
    }

    impl SharedStore for Refusing {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
            self.inner.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
            if key.contains(self.matching) {
                Err(self.error)
            } else {
                self.inner.set(key, value, cas)
            }
        }
    }

    #[test]
    fn a_contended_or_failing_store_limits() {
        let l = limit(5, 60, 5);
        for error in [WriteError::Conflict, WriteError::Failed] {
            let s = Refusing {
                inner: prepared(std::slice::from_ref(&l)),
                error,
                matching: "",
            };
            assert_eq!(
                one(&s, &l, "u", 0),
                Verdict::Limited {
                    state: LimitState {
                        limit: 5,
                        remaining: 0,
                        reset_s: 60
                    },
                    retry_after_s: 12
                },
                "{error:?}"
            );
            // Not even created: still limited.
            let s = Refusing {
                inner: MemoryStore::default(),
                error,
                matching: "",
            };
            assert!(!admitted(&one(&s, &l, "u", 0)));
        }
    }

    #[test]
    fn contention_on_a_later_limit_refunds_the_earlier() {
        let both = [limit(5, 60, 5), limit(5, 60, 5)];
        let s = Refusing {
            inner: prepared(&both),
            error: WriteError::Conflict,
            matching: "okta_jwt.rl.0.1.",
        };
        for _ in 0..3 {
            assert!(!admitted(&admit_all(&s, 0, &both, &["u", "u"], 0)));
        }
        assert_eq!(remaining(&one(&s.inner, &both[0], "u", 0)), 4);
    }

    /// Every read sees a new version, as if another worker always wrote in between.
    #[test]
    fn endless_interference_is_bounded_and_limits() {
        struct Interfering(MemoryStore, Cell<usize>);
        impl SharedStore for Interfering {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
                let (v, cas) = self.0.get(key);
                if let Some(v) = &v {
                    self.0.set(key, v, cas).unwrap();
                }
                (v, cas)
            }
            fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
                self.1.set(self.1.get() + 1);
                self.0.set(key, value, cas)
            }
        }
        let l = limit(5, 60, 5);
        let s = Interfering(prepared(std::slice::from_ref(&l)), Cell::new(0));
        assert!(!admitted(&one(&s, &l, "u", 0)));
        assert!(s.1.get() <= shared_store::MAX_CAS_ATTEMPTS);
    }

    #[test]
    fn ensure_records_creates_every_record_once() {
        let limits = [
            RateLimit {
                max_keys: 20,
                ..limit(1, 1, 1)
            },
            RateLimit {
                max_keys: 1,
                ..limit(1, 1, 1)
            },
        ];
        let s = MemoryStore::default();
        ensure_records(&s, 3, &limits).unwrap();
        assert_eq!(s.len(), (3 + 2) + (1 + 2));
        assert!(s.get("okta_jwt.rl.3.0.2").0.is_some());
        assert!(s.get("okta_jwt.rl.3.0.3").0.is_none());
        assert!(s.get("okta_jwt.rl.3.1.overflow").0.is_some());
        one(&s, &limits[0], "u", 0);
        let before = s.get("okta_jwt.rl.3.0.0");
        ensure_records(&s, 3, &limits).unwrap();
        assert_eq!(
            s.get("okta_jwt.rl.3.0.0"),
            before,
            "existing records are kept"
        );
        // Another rule's buckets are separate.
        let l = limit(1, 60, 1);
        let s = MemoryStore::default();
        assert!(admitted(&admit_all(
            &s,
            0,
            std::slice::from_ref(&l),
            &["u"],
            0
        )));
        assert!(admitted(&admit_all(
            &s,
            1,
            std::slice::from_ref(&l),
            &["u"],
            0
        )));
        assert!(!admitted(&admit_all(
            &s,
            0,
            std::slice::from_ref(&l),
            &["u"],
            0
        )));
    }
}
