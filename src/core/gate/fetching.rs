//! The gate's clockwork: each tick takes in what other VMs fetched, starts the fetches that
//! are due, and answers the parked requests whose fetch ended or whose deadline passed; the
//! answer of one of this VM's fetches is recorded and settles its waiters.

use crate::core::decision::outcome::Outcome;
pub use crate::core::keys::lifecycle::FetchAnswer;
use crate::core::keys::lifecycle::{FetchOutcome, Want};
use crate::core::ratelimit::charge as ratelimit;

use super::action::Action;
use super::state::Gate;

/// A provider's key-set gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyGauge {
    pub provider: usize,
    pub keys: u64,
    /// Seconds since the set was fetched (0 before the first fetch).
    pub age_s: u64,
    /// Seconds until the set goes stale (0 when stale or never fetched).
    pub stale_in_s: u64,
}

/// The class of a fetch's end, for `okta_jwt_jwks_fetch_outcome_<class>_<provider>`.
pub fn fetch_class(status: Option<u32>, outcome: &FetchOutcome) -> &'static str {
    match (outcome, status) {
        (FetchOutcome::Updated { .. } | FetchOutcome::Discovered, _) => "ok",
        (FetchOutcome::Failed { .. }, None) => "transport",
        (FetchOutcome::Failed { .. }, Some(200)) => "invalid_body",
        (FetchOutcome::Failed { .. }, Some(s)) if (400..500).contains(&s) => "status_4xx",
        (FetchOutcome::Failed { .. }, Some(_)) => "status_5xx",
    }
}

impl Gate {
    /// Every tick (about 50 ms).
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        for provider in 0..self.caches.len() {
            if self.caches.get(provider).is_some_and(|c| c.is_remote()) {
                self.tick_provider(provider, now_ms, &mut actions);
            }
        }
        actions.push(Action::KeyGauges(self.key_gauges(now_ms)));
        self.tick_introspection(now_ms, &mut actions);
        if self.second_done_s != now_ms / 1000 && self.setup.config.has_rate_limits() {
            self.second_done_s = now_ms / 1000;
            // Adopt the stored hash key: VMs that raced to create it converge on one.
            if let Some(h) = ratelimit::stored_hasher(&*self.setup.store) {
                self.setup.limit_hasher = h;
            }
            actions.push(Action::BucketGauges(self.bucket_gauges()));
        }
        self.expire(now_ms, &mut actions);
        actions
    }

    fn tick_provider(&mut self, provider: usize, now_ms: u64, out: &mut Vec<Action>) {
        let Some(c) = self.caches.get_mut(provider) else {
            return;
        };
        let synced = c.sync(&*self.setup.store);
        let due = c.routine_due(now_ms);
        if synced.keys_changed {
            self.purge_token_cache(provider);
        }
        if synced.epoch_moved | self.room.take_settle_want(provider) {
            self.settle(provider, now_ms, out);
        }
        if self.room.take_refetch_want(provider)
            && !self.start(provider, now_ms, Want::UnknownKid, out)
        {
            // Another VM refetched first, or too recently: the parked requests get their
            // answer from what is there now.
            self.settle(provider, now_ms, out);
        }
        if due {
            self.start(provider, now_ms, Want::Routine, out);
        }
    }

    /// Starts a fetch for `provider` if this VM wins the process-wide lease.
    fn start(&mut self, provider: usize, now_ms: u64, want: Want, out: &mut Vec<Action>) -> bool {
        let owner = self.setup.owner;
        let store = &*self.setup.store;
        let started =
            (self.caches.get_mut(provider)).and_then(|c| c.try_start(store, now_ms, owner, want));
        let Some(request) = started else {
            return false;
        };
        out.push(Action::Fetch {
            provider,
            request,
            unknown_kid: want == Want::UnknownKid,
        });
        true
    }

    /// The host accepted the call: its answer will name `token`.
    pub fn fetch_dispatched(&mut self, provider: usize, token: u32) {
        self.fetches.insert(token, provider);
    }

    /// The host refused the call: recorded as a failed fetch, and its waiters answered.
    pub fn fetch_not_dispatched(
        &mut self,
        provider: usize,
        now_ms: u64,
        jitter: u64,
    ) -> Vec<Action> {
        let owner = self.setup.owner;
        let Some(c) = self.caches.get_mut(provider) else {
            return Vec::new();
        };
        let outcome = c.dispatch_failed(&*self.setup.store, now_ms, owner, jitter);
        let mut out = vec![Action::Fetched {
            provider,
            outcome,
            class: "not_dispatched",
        }];
        self.settle(provider, now_ms, &mut out);
        out
    }

    /// The answer to one of this VM's calls; calls it did not make are ignored.
    pub fn on_fetch_answer(
        &mut self,
        token: u32,
        answer: FetchAnswer<'_>,
        now_ms: u64,
        jitter: u64,
    ) -> Vec<Action> {
        let Some(provider) = self.fetches.remove(&token) else {
            return Vec::new();
        };
        let Some(c) = self.caches.get_mut(provider) else {
            return Vec::new();
        };
        let (outcome, next) =
            c.finish(&*self.setup.store, now_ms, self.setup.owner, answer, jitter);
        self.purge_token_cache(provider);
        let class = fetch_class(answer.status, &outcome);
        let mut out = vec![Action::Fetched {
            provider,
            outcome,
            class,
        }];
        match next {
            // After discovery, the keys themselves (the lease is kept for it).
            Some(request) => out.push(Action::Fetch {
                provider,
                request,
                unknown_kid: false,
            }),
            None => self.settle(provider, now_ms, &mut out),
        }
        out
    }

    /// Decides again every request parked on `provider`, now that a fetch has ended.
    fn settle(&mut self, provider: usize, now_ms: u64, out: &mut Vec<Action>) {
        let mut refetch = false;
        for w in self.room.take_provider(provider) {
            let d = self.decide(now_ms, &w.request);
            if let Outcome::Wait { refetch: r, .. } = d.outcome {
                refetch |= r;
                self.room.repark(w);
                continue;
            }
            out.push(Action::Answer {
                context: w.context,
                decision: self.finish(d, &w.request, now_ms),
                request: w.request,
            });
        }
        if refetch {
            self.room.want_refetch(provider);
        }
    }

    /// Answers the requests that waited past their deadline.
    fn expire(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        for w in self.room.take_expired(now_ms) {
            let mut d = self.decide(now_ms, &w.request);
            match d.outcome {
                Outcome::Wait { .. } => d.detail = "timed out waiting for a key fetch",
                Outcome::Introspect { .. } => d.detail = "timed out waiting for introspection",
                _ => {}
            }
            out.push(Action::Answer {
                context: w.context,
                decision: self.finish(d, &w.request, now_ms),
                request: w.request,
            });
        }
    }

    /// Each remote provider's key count and age.
    fn key_gauges(&self, now_ms: u64) -> Vec<KeyGauge> {
        self.caches
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_remote())
            .map(|(provider, c)| KeyGauge {
                provider,
                keys: c.keys().map_or(0, |k| k.keys.len() as u64),
                age_s: match c.fetched_at_ms() {
                    0 => 0,
                    at => now_ms.saturating_sub(at) / 1000,
                },
                stale_in_s: c.fresh_until_ms().saturating_sub(now_ms) / 1000,
            })
            .collect()
    }

    /// Buckets in use per rate limit `(rule, limit, in_use)`, read from shared data.
    fn bucket_gauges(&self) -> Vec<(usize, usize, u64)> {
        let store = &*self.setup.store;
        let mut out = Vec::new();
        for (rule, r) in self.setup.config.rules.iter().enumerate() {
            for limit in 0..r.rate_limits.len() {
                out.push((rule, limit, ratelimit::buckets_in_use(store, rule, limit)));
            }
        }
        out
    }
}
