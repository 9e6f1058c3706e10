//! The keyed hash that places rate-limit key values in buckets, and its key, shared by every
//! VM through the store.

use crate::core::store::{SharedStore, WriteError};

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
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        let (k0, k1) = bytes.split_at(8);
        Some(KeyHasher {
            k0: u64::from_le_bytes(k0.try_into().ok()?),
            k1: u64::from_le_bytes(k1.try_into().ok()?),
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::store::MemoryStore;

    /// The hash key of the unit tests (the filter's is random, in shared data).
    pub(crate) const KH: KeyHasher = KeyHasher::new(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);

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
}
