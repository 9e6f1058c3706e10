//! The DPoP `jti` replay record (RFC 9449 section 11.1): one per provider per Envoy process, in
//! shared data, so every worker sees every proof, and exact under concurrency because each
//! check-and-insert is one compare-and-swap.
//!
//! Layout: `GROUPS` store values per provider, `okta_jwt.dpop.<provider>.<group>`, each holding
//! up to `SLOTS` entries (the `jti`'s 64-bit SHA-256 prefix and when it may be forgotten). A
//! `jti` hashes to one group. An entry is forgotten once its proof would be too old anyway;
//! a group with no free slot refuses new proofs (503), never admits them unrecorded.
//!
//! The hash is not keyed: only proofs that passed every other check (a valid token bound to
//! the proof's own key) are recorded, so crowding a group needs valid credentials.

use sha2::{Digest, Sha256};

use crate::core::store::{self as shared_store, SharedStore, UpdateError, WriteError};

/// Groups per provider (store values created at configuration).
pub const GROUPS: u64 = 256;
/// Entries per group: a provider remembers at most `GROUPS * SLOTS` live proofs.
pub const SLOTS: usize = 32;
const ENTRY_LEN: usize = 16;
/// Every record starts with this byte, so that an empty group is never an empty value.
const MAGIC: u8 = b'D';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// First time seen: recorded now.
    Fresh,
    /// Seen within its window: refuse.
    Replayed,
    /// No room in its group: refuse with 503 until the oldest entry expires.
    Full { retry_after_s: u64 },
}

pub fn key(provider: usize, group: u64) -> String {
    format!("okta_jwt.dpop.{provider}.{group}")
}

/// Creates the provider's (empty) groups unless they exist. Call at configuration, before any
/// worker serves, so that every later write is a real compare-and-swap.
pub fn ensure_records(store: &dyn SharedStore, provider: usize) -> Result<(), WriteError> {
    for g in 0..GROUPS {
        shared_store::ensure(store, &key(provider, g), &[MAGIC])?;
    }
    Ok(())
}

fn digest(jti: &str) -> (u64, u64) {
    let d: [u8; 32] = Sha256::digest(jti.as_bytes()).into();
    let mut hash = [0u8; 8];
    let mut pick = [0u8; 8];
    hash.copy_from_slice(&d[..8]);
    pick.copy_from_slice(&d[8..16]);
    (u64::from_le_bytes(hash), u64::from_le_bytes(pick) % GROUPS)
}

/// Entries `(hash, expires)`; `None` for anything that is not a record (a missing value is an
/// empty group), which refuses the proof.
fn decode(value: Option<&[u8]>) -> Option<Vec<(u64, u64)>> {
    let bytes = match value {
        None => &[][..],
        Some(v) => v.strip_prefix(&[MAGIC])?,
    };
    if bytes.len() % ENTRY_LEN != 0 || bytes.len() / ENTRY_LEN > SLOTS {
        return None;
    }
    let word = |b: &[u8]| b.try_into().ok().map(u64::from_le_bytes);
    bytes
        .chunks_exact(ENTRY_LEN)
        .map(|c| Some((word(c.get(..8)?)?, word(c.get(8..)?)?)))
        .collect()
}

fn encode(entries: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * ENTRY_LEN);
    out.push(MAGIC);
    for (hash, expires) in entries {
        out.extend_from_slice(&hash.to_le_bytes());
        out.extend_from_slice(&expires.to_le_bytes());
    }
    out
}

/// Checks `jti` and records it until `expires` (seconds) in one compare-and-swap.
pub fn record(
    store: &dyn SharedStore,
    provider: usize,
    jti: &str,
    expires: u64,
    now: u64,
) -> Result<Recorded, UpdateError> {
    let (hash, group) = digest(jti);
    let result = shared_store::update(store, &key(provider, group), |current| {
        let Some(mut entries) = decode(current) else {
            return (None, Err(UpdateError::Failed));
        };
        let live = entries.len();
        entries.retain(|&(_, until)| until >= now);
        if entries.iter().any(|&(h, _)| h == hash) {
            return (None, Ok(Recorded::Replayed));
        }
        if entries.len() >= SLOTS {
            let soonest = entries.iter().map(|&(_, until)| until).min().unwrap_or(now);
            let retry_after_s = soonest.saturating_sub(now).saturating_add(1);
            let write = (entries.len() < live).then(|| encode(&entries));
            return (write, Ok(Recorded::Full { retry_after_s }));
        }
        entries.push((hash, expires));
        (Some(encode(&entries)), Ok(Recorded::Fresh))
    });
    result.and_then(|inner| inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::store::{Cas, MemoryStore};
    use std::cell::RefCell;

    #[test]
    fn a_jti_is_admitted_once_then_forgotten_after_its_window() {
        let store = MemoryStore::default();
        ensure_records(&store, 0).unwrap();
        assert_eq!(record(&store, 0, "a", 1300, 1000), Ok(Recorded::Fresh));
        assert_eq!(record(&store, 0, "a", 1300, 1000), Ok(Recorded::Replayed));
        assert_eq!(record(&store, 0, "a", 1300, 1300), Ok(Recorded::Replayed));
        // Another provider has its own record.
        ensure_records(&store, 1).unwrap();
        assert_eq!(record(&store, 1, "a", 1300, 1000), Ok(Recorded::Fresh));
        // Past its window the proof would be refused as too old anyway.
        assert_eq!(record(&store, 0, "a", 1700, 1301), Ok(Recorded::Fresh));
    }

    /// Jtis of one group, for filling it.
    fn same_group(n: usize) -> Vec<String> {
        let target = digest("seed").1;
        (0..)
            .map(|i| format!("jti-{i}"))
            .filter(|j| digest(j).1 == target)
            .take(n)
            .collect()
    }

    #[test]
    fn a_full_group_refuses_until_its_oldest_entry_expires() {
        let store = MemoryStore::default();
        ensure_records(&store, 0).unwrap();
        let jtis = same_group(SLOTS + 1);
        for (i, j) in jtis.iter().take(SLOTS).enumerate() {
            let expires = 1100 + i as u64;
            assert_eq!(record(&store, 0, j, expires, 1000), Ok(Recorded::Fresh));
        }
        let last = &jtis[SLOTS];
        assert_eq!(
            record(&store, 0, last, 1300, 1000),
            Ok(Recorded::Full { retry_after_s: 101 })
        );
        // Never recorded while refused; admitted once the oldest entry is forgotten.
        assert_eq!(record(&store, 0, last, 1300, 1101), Ok(Recorded::Fresh));
        assert_eq!(record(&store, 0, last, 1300, 1101), Ok(Recorded::Replayed));
    }

    #[test]
    fn a_corrupt_record_refuses() {
        let store = MemoryStore::default();
        let (_, group) = digest("x");
        store.set(&key(0, group), b"junk", None).unwrap();
        assert_eq!(record(&store, 0, "x", 1300, 1000), Err(UpdateError::Failed));
    }

    type Read = (Option<Vec<u8>>, Option<Cas>);

    /// Workers that read the same value before either writes: the store's CAS makes the
    /// second writer retry, and it then sees the first one's entry.
    struct Interleaved<'a> {
        inner: &'a MemoryStore,
        /// Reads held back to replay as stale reads.
        stale: RefCell<Vec<Read>>,
    }

    impl SharedStore for Interleaved<'_> {
        fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
            match self.stale.borrow_mut().pop() {
                Some(read) => read,
                None => self.inner.get(key),
            }
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn simulated_workers_reading_at_once_admit_a_proof_exactly_once() {
        let store = MemoryStore::default();
        ensure_records(&store, 0).unwrap();
        let (_, group) = digest("proof");
        let before = store.get(&key(0, group));
        // Four workers read the empty group at the same instant, then each writes.
        let mut admitted = 0;
        let mut replayed = 0;
        for _ in 0..4 {
            let worker = Interleaved {
                inner: &store,
                stale: RefCell::new(vec![before.clone()]),
            };
            match record(&worker, 0, "proof", 1300, 1000) {
                Ok(Recorded::Fresh) => admitted += 1,
                Ok(Recorded::Replayed) => replayed += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((admitted, replayed), (1, 3));
    }

    #[test]
    fn many_workers_many_proofs_each_admitted_exactly_once() {
        let store = MemoryStore::default();
        ensure_records(&store, 0).unwrap();
        let jtis: Vec<String> = (0..200).map(|i| format!("p{i}")).collect();
        // Every worker's first read of every group is the empty record, as if all of them
        // read before anyone wrote; proofs of one group also contend with each other.
        let snapshot = |j: &str| store.get(&key(0, digest(j).1));
        let initial: Vec<_> = jtis.iter().map(|j| snapshot(j)).collect();
        let mut admitted = vec![0u32; jtis.len()];
        for _worker in 0..4 {
            for (i, j) in jtis.iter().enumerate() {
                let worker = Interleaved {
                    inner: &store,
                    stale: RefCell::new(vec![initial[i].clone()]),
                };
                if record(&worker, 0, j, 1300, 1000) == Ok(Recorded::Fresh) {
                    admitted[i] += 1;
                }
            }
        }
        assert!(admitted.iter().all(|&n| n == 1), "{admitted:?}");
    }
}
