//! Token buckets shared by every Envoy worker through `SharedStore` (SPEC.md, `rate_limits`).
//!
//! Layout per (rule, limit): `max_keys` slots, rounded up to a multiple of `GROUP_SLOTS`, kept
//! `GROUP_SLOTS` to a store value under `okta_jwt.rl.<rule>.<limit>.<group>`, plus
//! `.overflow` (one bucket) and `.used` (slots ever occupied, for the stat). A key value's
//! keyed hash ([`KeyHasher`]) picks its group; in it the key finds its own slot, or claims one holding an
//! idle full bucket (indistinguishable from a fresh one, so forgetting it is exact), or else an
//! empty one. Reusing before filling keeps `.used` near the peak number of active keys.
//!
//! Why a group per value rather than a value per slot: probing across separate values cannot
//! be atomic, so two workers serving a new key's first requests could give it two buckets and
//! admit twice its burst. With the whole probe window in one value, finding, claiming and
//! charging a bucket is a single compare-and-swap.
//!
//! Exactness: every charge is one CAS on the value holding the bucket's tokens and refill time
//! together, retried on conflict (`shared_store::update`). Tokens are integers in units of
//! 1/(per_s*1000) token, so refill is exactly `requests` units per millisecond, without drift.
//!
//! On Envoy a write to a missing key is unconditional, so CAS only protects keys that exist:
//! call `ensure_records` at configuration, before workers serve. A record missing at request
//! time is created on the spot, which is exact unless two workers create it at the same moment.

use crate::core::ratelimit::limits::RateLimit;
use crate::core::store::{self as shared_store, SharedStore, WriteError};

/// Slots per store value: the probe window of a key.
pub const GROUP_SLOTS: usize = 8;

/// A slot is reused only if its bucket was already full this long ago: its owner's next
/// request, even with a clock reading that lags ours by up to this, then starts a fresh bucket
/// no fuller than the one forgotten.
const REUSE_MARGIN_MS: u64 = 1_000;

/// A stored refill time further ahead of `now` than this is taken as a clock step backwards:
/// the bucket keeps its tokens and refills from `now`. Smaller gaps are workers' requests
/// landing out of order and never refill the same milliseconds twice.
const REBASE_AFTER_MS: u64 = 60_000;

/// The overflow value holds one bucket shared by every key that found no slot.
const OVERFLOW_HASH: u64 = 0;

const MAGIC: u8 = b'R';
const VERSION: u8 = 1;
const HEADER_LEN: usize = 11;
const SLOT_LEN: usize = 33;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// The limit's `requests`, for `RateLimit-Limit`.
    pub limit: u64,
    /// Whole tokens left.
    pub remaining: u64,
    /// Whole seconds (rounded up) until the bucket is full again.
    pub reset_s: u64,
}

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

/// The keyed hash that tells key values apart and places them in groups. Every worker must
/// use the same key (buckets live in shared data), and no client may know it: with a public
/// hash, one could pick a header value that lands on a victim's bucket and drain it. The key
/// is chosen at random by the first VM to configure and kept in shared data
/// ([`load_or_create_hasher`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHasher {
    k0: u64,
    k1: u64,
}

/// The key is a secret: never printed.
impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

/// Where the hash key lives in shared data.
pub const HASH_KEY_RECORD: &str = "okta_jwt.rl.hash_key";

impl KeyHasher {
    pub const fn new(k0: u64, k1: u64) -> KeyHasher {
        KeyHasher { k0, k1 }
    }

    fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.k0.to_le_bytes());
        out[8..].copy_from_slice(&self.k1.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<KeyHasher> {
        if bytes.len() != 16 {
            return None;
        }
        Some(KeyHasher {
            k0: le_u64(bytes, 0)?,
            k1: le_u64(bytes, 8)?,
        })
    }

    /// SipHash-1-3 of `bytes` under this key. Two key values that collide share one
    /// bucket, which errs strict.
    pub fn hash(&self, bytes: &[u8]) -> u64 {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(bytes);
        h.finish()
    }
}

/// The fleet's hash key: the one in shared data, or `fresh` stored there if there is none
/// yet. A VM that loses a creation race reads the winner's key back here, and every VM
/// re-reads the record with [`stored_hasher`] about once a second, so all of them converge on
/// one key. (Envoy configures the main thread's VM before the workers', so a race needs a
/// restart of several VMs at once; until they converge, a key may be counted in two buckets.)
pub fn load_or_create_hasher(
    store: &dyn SharedStore,
    fresh: KeyHasher,
) -> Result<KeyHasher, WriteError> {
    if let Some(h) = stored_hasher(store) {
        return Ok(h);
    }
    // Anything undecodable there is replaced: it would otherwise leave every VM keyless.
    let (_, cas) = store.get(HASH_KEY_RECORD);
    store.set(HASH_KEY_RECORD, &fresh.encode(), cas)?;
    Ok(stored_hasher(store).unwrap_or(fresh))
}

/// The hash key in shared data, if there is a valid one.
pub fn stored_hasher(store: &dyn SharedStore) -> Option<KeyHasher> {
    KeyHasher::decode(&store.get(HASH_KEY_RECORD).0?)
}

pub fn group_count(max_keys: u64) -> u64 {
    max_keys.max(1).div_ceil(GROUP_SLOTS as u64)
}

pub fn group_key(rule: usize, limit: usize, group: u64) -> String {
    format!("okta_jwt.rl.{rule}.{limit}.{group}")
}

pub fn overflow_key(rule: usize, limit: usize) -> String {
    format!("okta_jwt.rl.{rule}.{limit}.overflow")
}

pub fn used_key(rule: usize, limit: usize) -> String {
    format!("okta_jwt.rl.{rule}.{limit}.used")
}

/// Creates every record of a rule's limits unless it exists. Call at configuration, before any
/// worker charges a bucket, so that every later write is a real CAS.
pub fn ensure_records(
    store: &dyn SharedStore,
    rule: usize,
    limits: &[RateLimit],
) -> Result<(), WriteError> {
    for (i, limit) in limits.iter().enumerate() {
        let per_s = limit.per_s.max(1);
        let empty = Group::empty(per_s, GROUP_SLOTS).encode();
        for g in 0..group_count(limit.max_keys) {
            shared_store::ensure(store, &group_key(rule, i, g), &empty)?;
        }
        shared_store::ensure(
            store,
            &overflow_key(rule, i),
            &Group::empty(per_s, 1).encode(),
        )?;
        shared_store::ensure(store, &used_key(rule, i), &0u64.to_le_bytes())?;
    }
    Ok(())
}

/// Slots of limit `limit` of rule `rule` that have ever held a bucket (at most its
/// `max_keys`, rounded up to a multiple of `GROUP_SLOTS`).
pub fn buckets_in_use(store: &dyn SharedStore, rule: usize, limit: usize) -> u64 {
    decode_u64(store.get(&used_key(rule, limit)).0.as_deref()).unwrap_or(0)
}

/// Charges one token from each limit's bucket for `key_values[i]` (a missing entry is the
/// empty key). All limits must admit; when one refuses, the tokens already taken from the
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
pub fn admit(
    store: &dyn SharedStore,
    hasher: &KeyHasher,
    rule: usize,
    limits: &[RateLimit],
    key_values: &[&str],
    now_ms: u64,
) -> Verdict {
    let mut held: Vec<(Params, Held)> = Vec::with_capacity(limits.len());
    let mut most: Option<LimitState> = None;
    for (i, limit) in limits.iter().enumerate() {
        let key_value = key_values.get(i).copied().unwrap_or("");
        let params = Params::new(limit);
        let hash = hasher.hash(key_value.as_bytes());
        match take(store, rule, i, limit, &params, hash, now_ms) {
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
                    refund(store, h, params, now_ms);
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

// ---- arithmetic ----

/// A limit in bucket units: one token is `unit` = per_s*1000 units, refill is `rate` =
/// requests units per millisecond, capacity is burst tokens.
struct Params {
    requests: u64,
    per_s: u64,
    unit: u128,
    rate: u128,
    cap: u128,
}

impl Params {
    fn new(l: &RateLimit) -> Params {
        let per_s = l.per_s.max(1);
        let unit = u128::from(per_s) * 1000;
        Params {
            requests: l.requests,
            per_s,
            unit,
            rate: u128::from(l.requests),
            cap: u128::from(l.burst).saturating_mul(unit),
        }
    }

    fn state(&self, tokens: u128) -> LimitState {
        LimitState {
            limit: self.requests,
            remaining: u64::try_from(tokens / self.unit).unwrap_or(u64::MAX),
            reset_s: whole_seconds(ceil_div(self.cap.saturating_sub(tokens), self.rate)),
        }
    }

    fn retry_after_s(&self, tokens: u128) -> u64 {
        whole_seconds(ceil_div(self.unit.saturating_sub(tokens), self.rate)).max(1)
    }

    fn limited(&self, tokens: u128) -> Taken {
        Taken::Limited {
            state: self.state(tokens),
            retry_after_s: self.retry_after_s(tokens),
        }
    }
}

fn ceil_div(a: u128, b: u128) -> u128 {
    if a == 0 {
        return 0;
    }
    // Dividing by zero (a refill rate of zero) means never.
    a.checked_div(b)
        .map_or(u128::MAX, |q| q + u128::from(!a.is_multiple_of(b)))
}

fn whole_seconds(ms: u128) -> u64 {
    u64::try_from(ceil_div(ms, 1000)).unwrap_or(u64::MAX)
}

// ---- records ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    hash: u64,
    tokens: u128,
    last_ms: u64,
}

impl Bucket {
    fn refilled(mut self, p: &Params, now: u64) -> Bucket {
        self.tokens = self.tokens.min(p.cap);
        if now > self.last_ms {
            let gained = u128::from(now - self.last_ms).saturating_mul(p.rate);
            self.tokens = self.tokens.saturating_add(gained).min(p.cap);
            self.last_ms = now;
        } else if self.last_ms - now > REBASE_AFTER_MS {
            self.last_ms = now;
        }
        self
    }
}

/// `GROUP_SLOTS` buckets (one for the overflow record) in one store value. Little-endian:
/// `'R'`, version 1, per_s u64, slot count u8, then per slot: occupied u8 (0/1), key hash u64,
/// tokens u128, last refill ms u64. `per_s` lets a reconfigured period rescale tokens. A value
/// that does not decode (this code never writes one) is an empty group: its keys start full.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    per_s: u64,
    slots: Vec<Option<Bucket>>,
}

impl Group {
    fn empty(per_s: u64, n: usize) -> Group {
        Group {
            per_s,
            slots: vec![None; n],
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.slots.len() * SLOT_LEN);
        out.push(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.per_s.to_le_bytes());
        out.push(u8::try_from(self.slots.len()).unwrap_or(u8::MAX));
        for slot in &self.slots {
            match slot {
                None => out.extend_from_slice(&[0; SLOT_LEN]),
                Some(b) => {
                    out.push(1);
                    out.extend_from_slice(&b.hash.to_le_bytes());
                    out.extend_from_slice(&b.tokens.to_le_bytes());
                    out.extend_from_slice(&b.last_ms.to_le_bytes());
                }
            }
        }
        out
    }

    fn decode(bytes: &[u8], n: usize) -> Option<Group> {
        if bytes.len() != HEADER_LEN.checked_add(n.checked_mul(SLOT_LEN)?)?
            || bytes.first() != Some(&MAGIC)
            || bytes.get(1) != Some(&VERSION)
            || usize::from(*bytes.get(10)?) != n
        {
            return None;
        }
        let per_s = le_u64(bytes, 2)?;
        if per_s == 0 {
            return None;
        }
        let mut slots = Vec::with_capacity(n);
        for i in 0..n {
            let at = HEADER_LEN + i * SLOT_LEN;
            let slot = bytes.get(at..at + SLOT_LEN)?;
            slots.push(match slot.first()? {
                0 => None,
                1 => Some(Bucket {
                    hash: le_u64(slot, 1)?,
                    tokens: u128::from_le_bytes(slot.get(9..25)?.try_into().ok()?),
                    last_ms: le_u64(slot, 25)?,
                }),
                _ => return None,
            });
        }
        Some(Group { per_s, slots })
    }

    /// What a charge works on: the stored group in this limit's units, or a fresh one when
    /// the value does not decode.
    fn load(bytes: &[u8], n: usize, p: &Params) -> Group {
        let Some(mut g) = Group::decode(bytes, n) else {
            return Group::empty(p.per_s, n);
        };
        if g.per_s != p.per_s {
            // Floor: a changed period never mints tokens.
            for b in g.slots.iter_mut().flatten() {
                b.tokens = b.tokens.saturating_mul(u128::from(p.per_s)) / u128::from(g.per_s);
            }
            g.per_s = p.per_s;
        }
        for b in g.slots.iter_mut().flatten() {
            b.tokens = b.tokens.min(p.cap);
        }
        g
    }
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn decode_u64(bytes: Option<&[u8]>) -> Option<u64> {
    let b = bytes?;
    if b.len() != 8 {
        return None;
    }
    le_u64(b, 0)
}

// ---- charging ----

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

enum Step {
    Admitted { state: LimitState, newly_used: bool },
    Limited(Taken),
    NoSlot,
    Absent,
}

fn take(
    store: &dyn SharedStore,
    rule: usize,
    index: usize,
    limit: &RateLimit,
    p: &Params,
    hash: u64,
    now: u64,
) -> Taken {
    let groups = group_count(limit.max_keys);
    let home = usize::try_from((hash / groups) % GROUP_SLOTS as u64).unwrap_or(0);
    let key = group_key(rule, index, hash % groups);
    match charge(store, &key, GROUP_SLOTS, home, hash, p, now) {
        Some(Step::Admitted { state, newly_used }) => {
            if newly_used {
                count_used(store, &used_key(rule, index), groups * GROUP_SLOTS as u64);
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
        Some(Step::NoSlot) => {
            // Every slot holds another key's bucket that is still spending: share the strict
            // overflow bucket rather than go unlimited or evict a live bucket.
            let key = overflow_key(rule, index);
            match charge(store, &key, 1, 0, OVERFLOW_HASH, p, now) {
                Some(Step::Admitted { state, .. }) => Taken::Admitted(
                    state,
                    Held {
                        key,
                        slots: 1,
                        hash: OVERFLOW_HASH,
                    },
                ),
                Some(Step::Limited(t)) => t,
                _ => p.limited(0),
            }
        }
        Some(Step::Absent) | None => p.limited(0),
    }
}

/// One CAS read-modify-write of a group; `None` when the store failed or stayed contended.
fn charge(
    store: &dyn SharedStore,
    key: &str,
    n: usize,
    home: usize,
    hash: u64,
    p: &Params,
    now: u64,
) -> Option<Step> {
    for _ in 0..2 {
        let step = shared_store::update(store, key, |current| match current {
            // Never write a missing key from here: that write would be unconditional.
            None => (None, Step::Absent),
            Some(bytes) => charge_group(bytes, n, home, hash, p, now),
        })
        .ok()?;
        match step {
            Step::Absent => {
                shared_store::ensure(store, key, &Group::empty(p.per_s, n).encode()).ok()?
            }
            other => return Some(other),
        }
    }
    None
}

fn charge_group(
    bytes: &[u8],
    n: usize,
    home: usize,
    hash: u64,
    p: &Params,
    now: u64,
) -> (Option<Vec<u8>>, Step) {
    let mut g = Group::load(bytes, n, p);
    let own = g
        .slots
        .iter()
        .position(|s| matches!(s, Some(b) if b.hash == hash));
    let (index, bucket, newly_used, rebased) = match own {
        Some(i) => match g.slots.get(i).copied().flatten() {
            Some(stored) => {
                let b = stored.refilled(p, now);
                (i, b, false, b.last_ms < stored.last_ms)
            }
            None => return (None, Step::Limited(p.limited(0))),
        },
        None => {
            let reuse_at = now.saturating_sub(REUSE_MARGIN_MS);
            let probe = || (0..n).map(|k| (home + k) % n);
            let idle = probe().find(|&i| {
                matches!(g.slots.get(i), Some(Some(b)) if b.refilled(p, reuse_at).tokens >= p.cap)
            });
            let free = match idle {
                Some(i) => Some((i, false)),
                None => probe()
                    .find(|&i| matches!(g.slots.get(i), Some(None)))
                    .map(|i| (i, true)),
            };
            let Some((i, was_empty)) = free else {
                return (None, Step::NoSlot);
            };
            let fresh = Bucket {
                hash,
                tokens: p.cap,
                last_ms: now,
            };
            (i, fresh, was_empty, false)
        }
    };
    let Some(slot) = g.slots.get_mut(index) else {
        return (None, Step::Limited(p.limited(0)));
    };
    if bucket.tokens < p.unit {
        // Refused requests write nothing, except to record a clock step so that the bucket
        // does not wait for the old time to come back.
        *slot = Some(bucket);
        let write = rebased.then(|| g.encode());
        return (write, Step::Limited(p.limited(bucket.tokens)));
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

/// The stat only: a lost increment under contention makes it read low, never affects limiting.
fn count_used(store: &dyn SharedStore, key: &str, cap: u64) {
    if shared_store::ensure(store, key, &0u64.to_le_bytes()).is_err() {
        return;
    }
    let _ = shared_store::update(store, key, |current| {
        let n = decode_u64(current).unwrap_or(0);
        if current.is_none() || n >= cap {
            (None, ())
        } else {
            (Some((n + 1).to_le_bytes().to_vec()), ())
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ratelimit::limits::{LimitKey, DEFAULT_MAX_KEYS};
    use crate::core::store::{Cas, MemoryStore};
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
        }
    }

    fn prepared(limits: &[RateLimit]) -> MemoryStore {
        let s = MemoryStore::default();
        ensure_records(&s, 0, limits).unwrap();
        s
    }

    fn one(store: &dyn SharedStore, l: &RateLimit, key: &str, now: u64) -> Verdict {
        admit(store, &KH, 0, std::slice::from_ref(l), &[key], now)
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

    fn xorshift(state: &mut u64) -> u64 {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        x
    }

    // ---- hashing and records ----

    /// The hash key of the unit tests (the filter's is random, in shared data).
    const KH: KeyHasher = KeyHasher::new(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);

    #[test]
    fn key_hash_depends_on_the_key() {
        let k = KeyHasher::decode(&(0u8..16).collect::<Vec<_>>()).unwrap();
        assert_eq!(
            k,
            KeyHasher::new(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908)
        );
        assert_eq!(k.hash(b"alice"), k.hash(b"alice"), "every worker agrees");
        assert_ne!(k.hash(b"alice"), k.hash(b"alicf"));
        // Another key moves every value: without the key, no one can aim at a bucket.
        let other = KeyHasher::new(1, 2);
        let moved = (0..64)
            .filter(|i| {
                KH.hash(format!("user-{i}").as_bytes())
                    != other.hash(format!("user-{i}").as_bytes())
            })
            .count();
        assert_eq!(moved, 64);
        assert_eq!(KeyHasher::decode(&KH.encode()), Some(KH));
        assert_eq!(KeyHasher::decode(&[0; 15]), None);
        assert_eq!(KeyHasher::decode(&[0; 17]), None);
    }

    #[test]
    fn every_vm_ends_up_with_the_first_key() {
        let s = MemoryStore::default();
        let first = load_or_create_hasher(&s, KeyHasher::new(1, 1)).unwrap();
        assert_eq!(first, KeyHasher::new(1, 1));
        let second = load_or_create_hasher(&s, KeyHasher::new(2, 2)).unwrap();
        assert_eq!(second, first, "a later VM adopts the stored key");
        // A lost race: another VM overwrote the record after we created it; the tick's
        // re-read converges on what is stored.
        s.set(HASH_KEY_RECORD, &KeyHasher::new(3, 3).encode(), None)
            .unwrap();
        assert_eq!(stored_hasher(&s), Some(KeyHasher::new(3, 3)));
        // A corrupt record is replaced rather than leaving every VM keyless.
        s.set(HASH_KEY_RECORD, b"junk", None).unwrap();
        assert_eq!(stored_hasher(&s), None);
        assert_eq!(
            load_or_create_hasher(&s, KeyHasher::new(4, 4)).unwrap(),
            KeyHasher::new(4, 4)
        );
    }

    fn sample_group() -> Group {
        let mut g = Group::empty(60, GROUP_SLOTS);
        g.slots[1] = Some(Bucket {
            hash: u64::MAX,
            tokens: u128::MAX - 7,
            last_ms: 123_456_789,
        });
        g.slots[7] = Some(Bucket {
            hash: 0,
            tokens: 0,
            last_ms: 0,
        });
        g
    }

    #[test]
    fn record_round_trips_with_a_fixed_size() {
        let g = sample_group();
        let bytes = g.encode();
        assert_eq!(bytes.len(), HEADER_LEN + GROUP_SLOTS * SLOT_LEN);
        assert_eq!(bytes.len(), 275);
        assert_eq!(&bytes[..2], b"R\x01");
        assert_eq!(&bytes[2..10], &60u64.to_le_bytes());
        assert_eq!(Group::decode(&bytes, GROUP_SLOTS), Some(g));
        let overflow = Group::empty(7, 1);
        assert_eq!(Group::decode(&overflow.encode(), 1), Some(overflow.clone()));
        assert_eq!(
            Group::decode(&overflow.encode(), GROUP_SLOTS),
            None,
            "slot count must match"
        );
    }

    #[test]
    fn malformed_records_are_rejected() {
        let good = sample_group().encode();
        for len in 0..good.len() {
            assert_eq!(Group::decode(&good[..len], GROUP_SLOTS), None, "len {len}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Group::decode(&long, GROUP_SLOTS), None);
        let corrupt = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            Group::decode(&b, GROUP_SLOTS)
        };
        assert_eq!(corrupt(0, b'X'), None, "magic");
        assert_eq!(corrupt(1, 2), None, "version");
        assert_eq!(corrupt(10, 7), None, "slot count");
        assert_eq!(corrupt(HEADER_LEN, 2), None, "slot state");
        let mut zero_period = good.clone();
        zero_period[2..10].fill(0);
        assert_eq!(Group::decode(&zero_period, GROUP_SLOTS), None);
        assert_eq!(decode_u64(Some(&[1, 2, 3])), None);
        assert_eq!(decode_u64(Some(&5u64.to_le_bytes())), Some(5));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let good = sample_group().encode();
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (xorshift(&mut rng) % 400) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut rng) as u8).collect();
            let _ = Group::decode(&bytes, GROUP_SLOTS);
            let _ = Group::decode(&bytes, 1);
            let mut mutated = good.clone();
            let at = (xorshift(&mut rng) as usize) % mutated.len();
            mutated[at] = xorshift(&mut rng) as u8;
            let _ = Group::decode(&mutated, GROUP_SLOTS);
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
        assert!(admitted(&admit(
            &s,
            &KH,
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
            admit(&s, &KH, 0, &[], &[], 0),
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
        let first = admit(&s, &KH, 0, &both, &["alice", ""], 0);
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
            let v = admit(&s, &KH, 0, &both, &["alice", ""], 0);
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
        assert!(admitted(&admit(&s, &KH, 0, &both, &["x", "y"], 0)));
        assert!(!admitted(&admit(&s, &KH, 0, &both, &["x", "y"], 0)));
        assert!(!admitted(&admit(&s, &KH, 0, &both, &["x", "y"], 0)));
        // Limit 1's bucket for "y", seen through a roomy limit 0: charged once, then now.
        let roomy = [limit(100, 60, 100), both[1].clone()];
        let v = admit(&s, &KH, 0, &roomy, &["fresh", "y"], 0);
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
            assert!(!admitted(&admit(&s, &KH, 0, &both, &["u", "u"], 0)));
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
        assert!(admitted(&admit(
            &s,
            &KH,
            0,
            std::slice::from_ref(&l),
            &["u"],
            0
        )));
        assert!(admitted(&admit(
            &s,
            &KH,
            1,
            std::slice::from_ref(&l),
            &["u"],
            0
        )));
        assert!(!admitted(&admit(
            &s,
            &KH,
            0,
            std::slice::from_ref(&l),
            &["u"],
            0
        )));
    }
}
