//! What the decision may ask of the keys: a provider's set, or why there is none yet.

use crate::core::keys::jwk_set::KeySet;

/// What the shell knows of one provider's keys.
pub enum KeyState<'k> {
    Ready(&'k KeySet),
    /// The first fetch has not finished yet.
    Pending,
    /// No key set was ever obtained.
    Unavailable,
}

pub trait KeySource {
    fn keys(&self, provider: usize) -> KeyState<'_>;

    /// For a token whose kid is not in the set: whether to wait for a (re)fetch rather than
    /// reject now. False when a refetch ran too recently for another to start.
    fn unknown_kid_may_wait(&self, provider: usize) -> bool;
}
