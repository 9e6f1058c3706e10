//! Requests parked until a provider's key fetch ends: who waits, for which provider, until
//! when; which providers need a refetch or their waiters decided again on the next tick.
//! Bounded: past `capacity`, a request is not parked and is decided on what is there.

use std::collections::BTreeSet;

use crate::core::decision::env::SavedRequest;
use crate::core::introspection::token_key::TokenKey;

/// Requests parked per VM. Past this, new arrivals are answered at once (503 or 401) rather
/// than holding unbounded memory.
pub const MAX_WAITERS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    /// The HTTP stream to answer.
    pub context: u32,
    pub provider: usize,
    /// Set once when the request is parked; re-parking after a fetch keeps it.
    pub deadline_ms: u64,
    pub request: SavedRequest,
    /// Waits for this token's introspection answer, not for a key fetch.
    pub introspection: Option<TokenKey>,
}

#[derive(Debug)]
pub struct WaitingRoom {
    capacity: usize,
    waiters: Vec<Waiter>,
    /// Providers for which a parked request asked for an unknown-kid refetch.
    refetch_wanted: BTreeSet<usize>,
    /// Providers whose parked requests must be decided again on the next tick.
    settle_wanted: BTreeSet<usize>,
}

impl WaitingRoom {
    pub fn new(capacity: usize) -> WaitingRoom {
        WaitingRoom {
            capacity,
            waiters: Vec::new(),
            refetch_wanted: BTreeSet::new(),
            settle_wanted: BTreeSet::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.waiters.len() >= self.capacity
    }

    /// Parks `w`, or hands it back when the room is full.
    // A full room hands the waiter back to be answered at once; it is moved, never copied.
    #[allow(clippy::result_large_err)]
    pub fn park(&mut self, w: Waiter) -> Result<(), Waiter> {
        if self.is_full() {
            return Err(w);
        }
        self.waiters.push(w);
        Ok(())
    }

    /// Puts back a waiter taken out to be decided again (never refused: it was counted).
    pub fn repark(&mut self, w: Waiter) {
        self.waiters.push(w);
    }

    /// Every request parked on `provider`'s key fetch, taken out.
    pub fn take_provider(&mut self, provider: usize) -> Vec<Waiter> {
        self.take(|w| w.provider == provider && w.introspection.is_none())
    }

    /// Every request waiting for `provider`'s introspection answer for `key`, taken out.
    pub fn take_answer(&mut self, provider: usize, key: TokenKey) -> Vec<Waiter> {
        self.take(|w| w.provider == provider && w.introspection == Some(key))
    }

    /// Whether a request still waits for that answer.
    pub fn waits_for(&self, provider: usize, key: TokenKey) -> bool {
        self.waiters
            .iter()
            .any(|w| w.provider == provider && w.introspection == Some(key))
    }

    /// Every request whose deadline has passed at `now_ms`, taken out.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<Waiter> {
        self.take(|w| w.deadline_ms <= now_ms)
    }

    fn take(&mut self, pick: impl Fn(&Waiter) -> bool) -> Vec<Waiter> {
        let (taken, rest) = self.waiters.drain(..).partition(pick);
        self.waiters = rest;
        taken
    }

    /// A stream that ended (its client went away) must never be resumed later.
    pub fn forget(&mut self, context: u32) {
        self.waiters.retain(|w| w.context != context);
    }

    pub fn want_refetch(&mut self, provider: usize) {
        self.refetch_wanted.insert(provider);
    }

    pub fn want_settle(&mut self, provider: usize) {
        self.settle_wanted.insert(provider);
    }

    /// Whether a refetch was wanted for `provider`, clearing the want.
    pub fn take_refetch_want(&mut self, provider: usize) -> bool {
        self.refetch_wanted.remove(&provider)
    }

    /// Whether a settle was wanted for `provider`, clearing the want.
    pub fn take_settle_want(&mut self, provider: usize) -> bool {
        self.settle_wanted.remove(&provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(context: u32, provider: usize, deadline_ms: u64) -> Waiter {
        Waiter {
            context,
            provider,
            deadline_ms,
            request: SavedRequest::default(),
            introspection: None,
        }
    }

    #[test]
    fn bounded_and_taken_by_provider_or_deadline() {
        let mut room = WaitingRoom::new(3);
        room.park(waiter(1, 0, 100)).unwrap();
        room.park(waiter(2, 1, 200)).unwrap();
        room.park(waiter(3, 0, 300)).unwrap();
        assert_eq!(room.park(waiter(4, 0, 400)).unwrap_err().context, 4);
        let p0: Vec<u32> = room.take_provider(0).iter().map(|w| w.context).collect();
        assert_eq!(p0, vec![1, 3]);
        assert_eq!(room.len(), 1);
        assert!(room.take_expired(199).is_empty());
        assert_eq!(room.take_expired(200).len(), 1);
        assert!(room.is_empty());
    }

    #[test]
    fn key_waiters_and_answer_waiters_are_apart() {
        let mut room = WaitingRoom::new(8);
        room.park(waiter(1, 0, 100)).unwrap();
        let mut w = waiter(2, 0, 100);
        w.introspection = Some(TokenKey(9));
        room.park(w).unwrap();
        assert!(room.waits_for(0, TokenKey(9)));
        assert!(!room.waits_for(1, TokenKey(9)));
        let keys: Vec<u32> = room.take_provider(0).iter().map(|w| w.context).collect();
        assert_eq!(keys, vec![1]);
        assert!(room.take_answer(0, TokenKey(8)).is_empty());
        assert_eq!(room.take_answer(0, TokenKey(9)).len(), 1);
        assert!(room.is_empty());
    }

    #[test]
    fn forgotten_streams_are_never_answered() {
        let mut room = WaitingRoom::new(8);
        room.park(waiter(1, 0, 100)).unwrap();
        room.park(waiter(2, 0, 100)).unwrap();
        room.forget(1);
        let left: Vec<u32> = room.take_provider(0).iter().map(|w| w.context).collect();
        assert_eq!(left, vec![2]);
    }

    #[test]
    fn wants_are_taken_once() {
        let mut room = WaitingRoom::new(8);
        room.want_refetch(2);
        room.want_settle(1);
        assert!(room.take_refetch_want(2));
        assert!(!room.take_refetch_want(2));
        assert!(!room.take_settle_want(2));
        assert!(room.take_settle_want(1));
    }
}
