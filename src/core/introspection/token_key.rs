//! The cache key of a token: a keyed 128-bit SipHash, so the cache never holds a token and
//! nobody who does not know the VM's random key can make two tokens share an answer.

use std::hash::{BuildHasher, RandomState};

use siphasher::sip128::{Hasher128, SipHasher13};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenKey(pub u128);

#[derive(Clone, Copy)]
pub struct TokenKeyer {
    k0: u64,
    k1: u64,
}

/// The key is a secret: never printed.
impl std::fmt::Debug for TokenKeyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeyer(..)")
    }
}

impl TokenKeyer {
    pub const fn new(k0: u64, k1: u64) -> TokenKeyer {
        TokenKeyer { k0, k1 }
    }

    /// A key drawn from the host's randomness (std's `RandomState` seeds from WASI
    /// `random_get` in the filter, the OS natively). Per VM: the cache is per VM too.
    pub fn random() -> TokenKeyer {
        TokenKeyer::new(
            RandomState::new().hash_one(0u8),
            RandomState::new().hash_one(1u8),
        )
    }

    pub fn key(&self, token: &str) -> TokenKey {
        use std::hash::Hasher;
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(token.as_bytes());
        TokenKey(h.finish128().as_u128())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_distinct() {
        let a = TokenKeyer::new(1, 2);
        let b = TokenKeyer::new(1, 3);
        assert_eq!(a.key("t"), a.key("t"));
        assert_ne!(a.key("t"), a.key("u"));
        assert_ne!(a.key("t"), b.key("t"));
        assert_eq!(format!("{a:?}"), "TokenKeyer(..)");
    }
}
