//! A compare-and-swap key-value store, the shape of proxy-wasm shared data: every VM (one per
//! Envoy worker thread) sees the same values, and a write succeeds only if nobody wrote since
//! the read. The core's cross-worker state machines are written against this trait so they
//! are tested natively with the in-memory store below.

use std::cell::RefCell;
use std::collections::HashMap;

/// Versions are opaque. Envoy's semantics, which `MemoryStore` reproduces: a write with the
/// version that was read succeeds only if nobody wrote since; a write with `None` overwrites
/// unconditionally; and a write to a key that does not exist always succeeds. So CAS only
/// protects keys that already exist: create them up front (see `ensure`), from the main
/// thread's VM, which Envoy configures before any worker's.
pub type Cas = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// Someone else wrote first: read again and retry.
    Conflict,
    /// The store refused (for example over its size limit).
    Failed,
}

pub trait SharedStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>);
    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError>;
}

/// Attempts of one read-modify-write before giving up; conflicts only come from other workers
/// writing the same key at the same instant, so a handful is plenty.
pub const MAX_CAS_ATTEMPTS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    /// Too many conflicting writers.
    Contended,
    Failed,
}

/// Read-modify-write with retries. `f` gets the current value (None if absent) and returns
/// the value to write, or `None` to leave the store untouched. Returns what `f` last returned.
pub fn update<S: SharedStore + ?Sized, T>(
    store: &S,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, UpdateError> {
    for _ in 0..MAX_CAS_ATTEMPTS {
        let (current, cas) = store.get(key);
        let (next, out) = f(current.as_deref());
        let Some(next) = next else { return Ok(out) };
        match store.set(key, &next, cas) {
            Ok(()) => return Ok(out),
            Err(WriteError::Conflict) => continue,
            Err(WriteError::Failed) => return Err(UpdateError::Failed),
        }
    }
    Err(UpdateError::Contended)
}

/// Creates `key` with `initial` unless it exists. Racing creators may both write, so `initial`
/// must be a value every creator would write identically.
pub fn ensure<S: SharedStore + ?Sized>(
    store: &S,
    key: &str,
    initial: &[u8],
) -> Result<(), WriteError> {
    match store.get(key) {
        (Some(_), _) => Ok(()),
        (None, _) => store.set(key, initial, None),
    }
}

/// An in-memory store with Envoy's CAS semantics, for tests of everything built on the trait.
#[derive(Default)]
pub struct MemoryStore {
    map: RefCell<HashMap<String, (Vec<u8>, Cas)>>,
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<Cas>) {
        match self.map.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<Cas>) -> Result<(), WriteError> {
        let mut map = self.map.borrow_mut();
        let current = map.get(key).map(|(_, c)| *c);
        if let (Some(current), Some(cas)) = (current, cas) {
            if current != cas {
                return Err(WriteError::Conflict);
            }
        }
        // Like Envoy, versions are never 0 and always move forward.
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        map.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }
}

impl MemoryStore {
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// FNV-1a: a hash every VM computes identically, for shared-data key names.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_refuses_stale_writes_like_envoy() {
        let s = MemoryStore::default();
        assert_eq!(s.get("k"), (None, None));
        s.set("k", b"1", Some(42)).unwrap();
        let (_, cas) = s.get("k");
        s.set("k", b"2", cas).unwrap();
        assert_eq!(
            s.set("k", b"3", cas),
            Err(WriteError::Conflict),
            "stale version"
        );
        assert_eq!(s.get("k").0.as_deref(), Some(&b"2"[..]));
        s.set("k", b"4", None).unwrap();
        assert_eq!(s.get("k").0.as_deref(), Some(&b"4"[..]), "None overwrites");
        ensure(&s, "k", b"init").unwrap();
        assert_eq!(
            s.get("k").0.as_deref(),
            Some(&b"4"[..]),
            "ensure keeps what exists"
        );
        ensure(&s, "new", b"init").unwrap();
        assert_eq!(s.get("new").0.as_deref(), Some(&b"init"[..]));
    }

    /// A writer that sneaks in between a read and a write forces a retry, and nothing is lost.
    #[test]
    fn update_retries_on_conflict() {
        let s = MemoryStore::default();
        s.set("n", b"0", None).unwrap();
        let mut interfered = false;
        let result = update(&s, "n", |cur| {
            let n: u32 = std::str::from_utf8(cur.unwrap()).unwrap().parse().unwrap();
            if !interfered {
                interfered = true;
                let (_, cas) = s.get("n");
                s.set("n", b"10", cas).unwrap();
            }
            (Some((n + 1).to_string().into_bytes()), n + 1)
        })
        .unwrap();
        assert_eq!(result, 11);
        assert_eq!(s.get("n").0.as_deref(), Some(&b"11"[..]));
    }

    #[test]
    fn update_gives_up_when_always_contended() {
        let s = MemoryStore::default();
        s.set("n", b"0", None).unwrap();
        let r = update(&s, "n", |_| {
            let (_, cas) = s.get("n");
            s.set("n", b"0", cas).unwrap();
            (Some(b"1".to_vec()), ())
        });
        assert_eq!(r, Err(UpdateError::Contended));
    }
}
