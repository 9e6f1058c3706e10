//! A provider's introspection in one VM: cached answers, calls in flight (one per token:
//! later requests with the same token wait for it), the cap on calls in flight and the
//! circuit breaker.

use std::collections::HashMap;

use super::answer::{Answer, Failure};
use super::breaker::Breaker;
use super::cache::{self, AnswerCache};
use super::settings::{Introspection, Secret};
use super::token_key::TokenKey;

#[derive(Debug)]
struct Flight {
    /// Kept to send the call again if the stream that sent it goes away first (the host
    /// delivers a call's answer only to the context that made it).
    token: Secret,
    /// The host's id for the call, once dispatched.
    call: Option<u32>,
    /// The HTTP context that dispatched it; `None` for the root context.
    owner: Option<u32>,
    /// The breaker's test call.
    probe: bool,
    /// When the first request asked for it, for `lost`.
    started_ms: u64,
}

/// A call still without an answer this long past its own timeout was lost (the host answers
/// every call it keeps, at the latest on its timeout): it is ended as failed, so a stuck call
/// can never hold a slot of `max_in_flight`, or its token's requests, for ever.
pub const LOST_AFTER_MS: u64 = 2000;

/// Whether a request needing an answer starts a call or waits for one in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    Start,
    Join,
}

/// Why no call may start: whole seconds for `Retry-After`, and what the log says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_s: u64,
    pub detail: &'static str,
}

#[derive(Debug)]
pub struct Introspector {
    pub settings: Introspection,
    cache: AnswerCache,
    breaker: Breaker,
    flights: HashMap<TokenKey, Flight>,
    calls: HashMap<u32, TokenKey>,
}

impl Introspector {
    pub fn new(settings: Introspection) -> Introspector {
        Introspector {
            cache: AnswerCache::new(settings.max_entries),
            breaker: Breaker::new(settings.breaker_failures, settings.breaker_cool_down_s),
            settings,
            flights: HashMap::new(),
            calls: HashMap::new(),
        }
    }

    pub fn lookup(&self, key: TokenKey, now_ms: u64) -> Option<&Answer> {
        self.cache.get(key, now_ms)
    }

    /// A request needs an answer for `key`: join the call in flight, or start one if the
    /// breaker and the cap allow.
    pub fn begin(
        &mut self,
        key: TokenKey,
        token: &str,
        owner: Option<u32>,
        now_ms: u64,
    ) -> Result<Begin, Refused> {
        if self.flights.contains_key(&key) {
            return Ok(Begin::Join);
        }
        if self.flights.len() >= self.settings.max_in_flight {
            return Err(Refused {
                retry_after_s: 1,
                detail: "too many introspection calls in flight",
            });
        }
        let probe = self.breaker.state() != super::breaker::State::Closed;
        self.breaker.admit(now_ms).map_err(|s| Refused {
            retry_after_s: s,
            detail: "introspection circuit breaker open",
        })?;
        self.flights.insert(
            key,
            Flight {
                token: Secret::new(token.to_owned()),
                call: None,
                owner,
                probe,
                started_ms: now_ms,
            },
        );
        Ok(Begin::Start)
    }

    /// The host accepted the call for `key`.
    pub fn dispatched(&mut self, key: TokenKey, call: u32) {
        if let Some(f) = self.flights.get_mut(&key) {
            f.call = Some(call);
            self.calls.insert(call, key);
        }
    }

    /// Whether `call` is one of this provider's.
    pub fn owns_call(&self, call: u32) -> bool {
        self.calls.contains_key(&call)
    }

    /// The end of the call for `key` without a response (the host refused it, or its waiters
    /// gave up): a failure for the breaker, never cached.
    pub fn failed(&mut self, key: TokenKey, now_ms: u64) {
        if let Some(f) = self.flights.remove(&key) {
            if let Some(c) = f.call {
                self.calls.remove(&c);
            }
            self.breaker.failed(now_ms);
        }
    }

    /// The answer to `call`: cached when it is one, the breaker told either way. Gives the
    /// token key whose waiters can be decided now.
    pub fn answered(
        &mut self,
        call: u32,
        result: &Result<Answer, Failure>,
        now_ms: u64,
    ) -> Option<TokenKey> {
        let key = self.calls.remove(&call)?;
        self.flights.remove(&key);
        match result {
            Ok(answer) => {
                self.breaker.succeeded();
                let until = cache::until_ms(&self.settings, answer, now_ms);
                self.cache.insert(key, answer.clone(), until, now_ms);
            }
            Err(_) => self.breaker.failed(now_ms),
        }
        Some(key)
    }

    /// The stream `context` ended: the calls it sent will never be answered to this VM.
    /// Gives those calls' keys; the caller sends them again from the root context (while
    /// requests wait for them) or drops them with [`Introspector::drop_flight`].
    pub fn owner_gone(&mut self, context: u32) -> Vec<TokenKey> {
        let mut orphaned = Vec::new();
        for (key, f) in self.flights.iter_mut() {
            if f.owner == Some(context) {
                if let Some(c) = f.call.take() {
                    self.calls.remove(&c);
                }
                f.owner = None;
                orphaned.push(*key);
            }
        }
        orphaned
    }

    /// Calls that have no live call id (orphaned), with their tokens, to send again.
    pub fn orphans(&self) -> impl Iterator<Item = (TokenKey, &Secret)> {
        self.flights
            .iter()
            .filter(|(_, f)| f.call.is_none() && f.owner.is_none())
            .map(|(k, f)| (*k, &f.token))
    }

    /// Calls past their timeout plus `LOST_AFTER_MS`, to end as failed with [`Introspector::failed`].
    pub fn lost(&self, now_ms: u64) -> Vec<TokenKey> {
        let limit = self.settings.timeout_ms.saturating_add(LOST_AFTER_MS);
        self.flights
            .iter()
            .filter(|(_, f)| now_ms.saturating_sub(f.started_ms) >= limit)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Forgets a call nobody waits for any more.
    pub fn drop_flight(&mut self, key: TokenKey) {
        if let Some(f) = self.flights.remove(&key) {
            if let Some(c) = f.call {
                self.calls.remove(&c);
            }
            if f.probe {
                self.breaker.abandoned();
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    pub fn breaker_state(&self) -> super::breaker::State {
        self.breaker.state()
    }

    pub fn breaker_gauge(&self) -> u64 {
        self.breaker.gauge()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::introspection::settings::Tokens;

    fn settings(max_in_flight: usize) -> Introspection {
        Introspection {
            uri: String::new(),
            cluster: "idp".into(),
            authority: "idp".into(),
            path: "/introspect".into(),
            authorization: Secret::default(),
            tokens: Tokens::Opaque,
            timeout_ms: 1000,
            cache_s: 60,
            negative_cache_s: 10,
            max_entries: 100,
            require_exp: true,
            max_in_flight,
            breaker_failures: 2,
            breaker_cool_down_s: 5,
        }
    }

    #[test]
    fn one_call_per_token_and_a_cap() {
        let mut i = Introspector::new(settings(2));
        assert_eq!(i.begin(TokenKey(1), "t1", Some(7), 0), Ok(Begin::Start));
        assert_eq!(i.begin(TokenKey(1), "t1", Some(8), 0), Ok(Begin::Join));
        assert_eq!(i.begin(TokenKey(2), "t2", Some(8), 0), Ok(Begin::Start));
        assert_eq!(
            i.begin(TokenKey(3), "t3", Some(9), 0).map_err(|r| r.detail),
            Err("too many introspection calls in flight")
        );
        i.dispatched(TokenKey(1), 100);
        assert!(i.owns_call(100));
        let key = i.answered(100, &Ok(Answer::Inactive), 0);
        assert_eq!(key, Some(TokenKey(1)));
        assert_eq!(i.lookup(TokenKey(1), 9_999), Some(&Answer::Inactive));
        assert_eq!(i.lookup(TokenKey(1), 10_000), None);
        assert_eq!(i.answered(100, &Ok(Answer::Inactive), 0), None, "once");
        assert_eq!(i.in_flight(), 1);
    }

    #[test]
    fn failures_are_not_cached_and_open_the_breaker() {
        let mut i = Introspector::new(settings(8));
        for (n, key) in [(1u32, TokenKey(1)), (2, TokenKey(2))] {
            assert_eq!(i.begin(key, "t", None, 0), Ok(Begin::Start));
            i.dispatched(key, n);
            assert_eq!(i.answered(n, &Err(Failure::Status5xx), 0), Some(key));
            assert_eq!(i.lookup(key, 0), None);
        }
        assert_eq!(i.breaker_gauge(), 1);
        assert_eq!(
            i.begin(TokenKey(3), "t", None, 1000),
            Err(Refused {
                retry_after_s: 4,
                detail: "introspection circuit breaker open"
            })
        );
        // After the cool-down one call tests the endpoint; its success closes the breaker.
        assert_eq!(i.begin(TokenKey(3), "t", None, 5000), Ok(Begin::Start));
        assert!(i.begin(TokenKey(4), "t", None, 5000).is_err());
        i.dispatched(TokenKey(3), 3);
        i.answered(3, &Ok(Answer::Inactive), 5000);
        assert_eq!(i.breaker_gauge(), 0);
        assert_eq!(i.begin(TokenKey(4), "t", None, 5000), Ok(Begin::Start));
    }

    #[test]
    fn calls_of_a_stream_that_ended_are_sent_again_or_dropped() {
        let mut i = Introspector::new(settings(8));
        i.begin(TokenKey(1), "tok", Some(7), 0).unwrap();
        i.dispatched(TokenKey(1), 11);
        assert_eq!(i.orphans().count(), 0);
        assert_eq!(i.owner_gone(7), vec![TokenKey(1)]);
        assert!(!i.owns_call(11), "its answer will never come here");
        let orphans: Vec<_> = i
            .orphans()
            .map(|(k, t)| (k, t.expose().to_owned()))
            .collect();
        assert_eq!(orphans, vec![(TokenKey(1), "tok".to_owned())]);
        assert_eq!(i.begin(TokenKey(1), "tok", Some(8), 0), Ok(Begin::Join));
        i.dispatched(TokenKey(1), 12);
        assert_eq!(i.orphans().count(), 0);
        i.drop_flight(TokenKey(1));
        assert_eq!(i.in_flight(), 0);
        assert!(!i.owns_call(12));
    }

    #[test]
    fn a_call_never_answered_is_lost_after_its_timeout_and_a_grace() {
        let mut i = Introspector::new(settings(8));
        i.begin(TokenKey(1), "t", Some(7), 0).unwrap();
        i.begin(TokenKey(2), "u", Some(7), 500).unwrap();
        assert!(i.lost(1000 + LOST_AFTER_MS - 1).is_empty());
        assert_eq!(i.lost(1000 + LOST_AFTER_MS), vec![TokenKey(1)]);
        i.failed(TokenKey(1), 3000);
        assert_eq!(i.in_flight(), 1);
    }
}
