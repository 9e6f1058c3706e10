//! The rate limiter's records in shared data, and their bytes.
//!
//! Layout per (rule, limit): `max_keys` slots, rounded up to a multiple of `GROUP_SLOTS`, kept
//! `GROUP_SLOTS` to a store value under `okta_jwt.rl.<rule>.<limit>.<group>`, plus
//! `.overflow` (one bucket) and `.used` (slots ever occupied, for the stat). A key value's
//! keyed hash picks its group; `charge` finds or claims its slot there.
//!
//! On Envoy a write to a missing key is unconditional, so CAS only protects keys that exist:
//! call `ensure_records` at configuration, before workers serve.

use crate::core::ratelimit::bucket::{Bucket, Params};
use crate::core::ratelimit::limits::RateLimit;
use crate::core::store::{self as shared_store, SharedStore, WriteError};

/// Slots per store value: the probe window of a key.
pub const GROUP_SLOTS: usize = 8;

/// The overflow value holds one bucket shared by every key that found no slot.
pub(super) const OVERFLOW_HASH: u64 = 0;

const MAGIC: u8 = b'R';
const VERSION: u8 = 1;
const HEADER_LEN: usize = 11;
const SLOT_LEN: usize = 33;

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

/// `GROUP_SLOTS` buckets (one for the overflow record) in one store value. Little-endian:
/// `'R'`, version 1, per_s u64, slot count u8, then per slot: occupied u8 (0/1), key hash u64,
/// tokens u128, last refill ms u64. `per_s` lets a reconfigured period rescale tokens. A value
/// that does not decode (this code never writes one) is an empty group: its keys start full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub(super) per_s: u64,
    pub(super) slots: Vec<Option<Bucket>>,
}

impl Group {
    pub(super) fn empty(per_s: u64, n: usize) -> Group {
        Group {
            per_s,
            slots: vec![None; n],
        }
    }

    pub fn encode(&self) -> Vec<u8> {
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

    pub fn decode(bytes: &[u8], n: usize) -> Option<Group> {
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
    pub(super) fn load(bytes: &[u8], n: usize, p: &Params) -> Group {
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

/// The stat only: a lost increment under contention makes it read low, never affects limiting.
pub(super) fn count_used(store: &dyn SharedStore, key: &str, cap: u64) {
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn xorshift(state: &mut u64) -> u64 {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        x
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
}
