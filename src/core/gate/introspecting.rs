//! The gate's introspection calls: a request whose token has no cached answer waits for one
//! call per token (later requests with the same token join it), within the breaker and the
//! cap on calls in flight; the answer, or the failure, settles every request waiting for it.

use crate::core::decision::env::SavedRequest;
use crate::core::decision::outcome::{Decision, Outcome};
use crate::core::denial::{Denial, Reason};
use crate::core::introspection::answer::{self, Answer, Failure};
use crate::core::introspection::call;
use crate::core::introspection::flights::Begin;
use crate::core::introspection::token_key::TokenKey;

use super::action::Action;
use super::state::{Gate, Handled};
use super::waiting_room::Waiter;

/// A provider's introspection gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntrospectionGauge {
    pub provider: usize,
    pub in_flight: u64,
    pub cached: u64,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker: u64,
}

/// Grace past the call's own timeout before a waiter gives up: the host's timeout answers
/// first, as a failed call, unless the call was lost.
const WAIT_GRACE_MS: u64 = 1000;

impl Gate {
    /// A request whose decision needs an introspection answer: parked on the call in flight
    /// for its token, or on a new one the shell sends; refused with 503 when no call may
    /// start.
    pub(super) fn wait_for_answer(
        &mut self,
        context: u32,
        d: Decision,
        req: SavedRequest,
        now_ms: u64,
    ) -> Handled {
        let Outcome::Introspect {
            provider,
            key,
            ref token,
        } = d.outcome
        else {
            return Handled::Decided(self.finish(d, &req, now_ms), req);
        };
        let Some(intro) = self
            .introspectors
            .get_mut(provider)
            .and_then(Option::as_mut)
        else {
            return Handled::Decided(self.finish(d, &req, now_ms), req);
        };
        if self.room.is_full() {
            let d = unavailable(d, "too many requests waiting", 1);
            return Handled::Decided(self.finish(d, &req, now_ms), req);
        }
        let begin = match intro.begin(key, token.expose(), Some(context), now_ms) {
            Ok(b) => b,
            Err(refused) => {
                let d = unavailable(d, refused.detail, refused.retry_after_s);
                return Handled::Decided(self.finish(d, &req, now_ms), req);
            }
        };
        let call = match begin {
            Begin::Start => Some(call::request(
                &intro.settings,
                provider,
                key,
                token.expose(),
            )),
            Begin::Join => None,
        };
        let deadline_ms = now_ms + intro.settings.timeout_ms + WAIT_GRACE_MS;
        let waiter = Waiter {
            context,
            provider,
            deadline_ms,
            request: req,
            introspection: Some(key),
        };
        match self.room.park(waiter) {
            Ok(()) => Handled::Parked(call),
            // Checked above; kept total all the same.
            Err(w) => {
                if let Some(i) = self
                    .introspectors
                    .get_mut(provider)
                    .and_then(Option::as_mut)
                {
                    i.drop_flight(key);
                }
                let d = unavailable(d, "too many requests waiting", 1);
                Handled::Decided(self.finish(d, &w.request, now_ms), w.request)
            }
        }
    }

    /// The host accepted the call: its answer will name `call_id`.
    pub fn introspection_dispatched(&mut self, provider: usize, key: TokenKey, call_id: u32) {
        if let Some(i) = self
            .introspectors
            .get_mut(provider)
            .and_then(Option::as_mut)
        {
            i.dispatched(key, call_id);
        }
    }

    /// The host refused the call: a failure, and its waiters answered 503.
    pub fn introspection_not_dispatched(
        &mut self,
        provider: usize,
        key: TokenKey,
        now_ms: u64,
    ) -> Vec<Action> {
        if let Some(i) = self
            .introspectors
            .get_mut(provider)
            .and_then(Option::as_mut)
        {
            i.failed(key, now_ms);
        }
        let mut out = vec![Action::Introspected {
            provider,
            class: Failure::NotDispatched.class(),
        }];
        self.settle_answer(provider, key, Err(Failure::NotDispatched), now_ms, &mut out);
        out
    }

    /// Whether `call_id` is one of this VM's introspection calls.
    pub fn is_introspection_call(&self, call_id: u32) -> bool {
        self.introspectors
            .iter()
            .flatten()
            .any(|i| i.owns_call(call_id))
    }

    /// The response to an introspection call (`status` is `None` when none came): cached,
    /// and every request waiting for it decided. Calls this VM did not make are ignored.
    pub fn on_introspection_answer(
        &mut self,
        call_id: u32,
        status: Option<u32>,
        body_size: usize,
        body: &[u8],
        now_ms: u64,
    ) -> Vec<Action> {
        let Some(provider) = self
            .introspectors
            .iter()
            .position(|i| i.as_ref().is_some_and(|i| i.owns_call(call_id)))
        else {
            return Vec::new();
        };
        let result = answer::read(status, body_size, body);
        let Some(key) = self
            .introspectors
            .get_mut(provider)
            .and_then(Option::as_mut)
            .and_then(|i| i.answered(call_id, &result, now_ms))
        else {
            return Vec::new();
        };
        let class = match &result {
            Ok(Answer::Active(_)) => "active",
            Ok(Answer::Inactive) => "inactive",
            Err(f) => f.class(),
        };
        let mut out = vec![Action::Introspected { provider, class }];
        self.settle_answer(provider, key, result, now_ms, &mut out);
        out
    }

    /// Decides every request waiting for `key`'s answer: with the answer (cached or not),
    /// or 503 when the call failed.
    fn settle_answer(
        &mut self,
        provider: usize,
        key: TokenKey,
        result: Result<Answer, Failure>,
        now_ms: u64,
        out: &mut Vec<Action>,
    ) {
        let waiters = self.room.take_answer(provider, key);
        let failed = result.is_err();
        if let Ok(a) = result {
            self.fresh = Some((provider, key, a));
        }
        for w in waiters {
            let mut d = self.decide(now_ms, &w.request);
            // It waited: a miss, whatever the second decision read.
            d.introspection_hit = Some(false);
            if matches!(d.outcome, Outcome::Introspect { .. }) {
                let detail = match failed {
                    true => "the introspection call failed",
                    false => "no introspection answer",
                };
                d = unavailable(d, detail, self.introspection_retry_s(provider, now_ms));
            }
            out.push(Action::Answer {
                context: w.context,
                decision: self.finish(d, &w.request, now_ms),
                request: w.request,
            });
        }
        self.fresh = None;
    }

    /// Seconds a client should wait: until the breaker lets a call through, else 1.
    fn introspection_retry_s(&self, provider: usize, now_ms: u64) -> u64 {
        let Some(i) = self.introspectors.get(provider).and_then(Option::as_ref) else {
            return 1;
        };
        match i.breaker_state() {
            crate::core::introspection::breaker::State::Open { until_ms } => {
                until_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
            }
            _ => 1,
        }
    }

    /// Every tick: lost calls end as failed (their waiters get 503), calls whose sender went
    /// away are sent again from the root context while requests wait for them (dropped
    /// otherwise), and the gauges.
    pub(super) fn tick_introspection(&mut self, now_ms: u64, out: &mut Vec<Action>) {
        for provider in 0..self.introspectors.len() {
            let lost = self
                .introspectors
                .get(provider)
                .and_then(Option::as_ref)
                .map(|i| i.lost(now_ms))
                .unwrap_or_default();
            for key in lost {
                if let Some(i) = self
                    .introspectors
                    .get_mut(provider)
                    .and_then(Option::as_mut)
                {
                    i.failed(key, now_ms);
                }
                out.push(Action::Introspected {
                    provider,
                    class: Failure::TimedOut.class(),
                });
                self.settle_answer(provider, key, Err(Failure::TimedOut), now_ms, out);
            }
        }
        for (provider, slot) in self.introspectors.iter_mut().enumerate() {
            let Some(i) = slot.as_mut() else { continue };
            let orphans: Vec<(TokenKey, String)> = i
                .orphans()
                .map(|(k, t)| (k, t.expose().to_owned()))
                .collect();
            for (key, token) in orphans {
                match self.room.waits_for(provider, key) {
                    true => {
                        out.push(Action::Introspect(call::request(
                            &i.settings,
                            provider,
                            key,
                            &token,
                        )));
                    }
                    false => i.drop_flight(key),
                }
            }
        }
        let gauges = self
            .introspectors
            .iter()
            .enumerate()
            .filter_map(|(provider, i)| {
                i.as_ref().map(|i| IntrospectionGauge {
                    provider,
                    in_flight: i.in_flight() as u64,
                    cached: i.cached() as u64,
                    breaker: i.breaker_gauge(),
                })
            })
            .collect::<Vec<_>>();
        if !gauges.is_empty() {
            out.push(Action::IntrospectionGauges(gauges));
        }
    }
}

/// A decision turned into 503 `introspection_unavailable`.
fn unavailable(d: Decision, detail: &'static str, retry_after_s: u64) -> Decision {
    let provider = d.provider;
    let mut d = d.deny(Denial::new(Reason::IntrospectionUnavailable, detail));
    d.provider = provider;
    d.retry_after_s = Some(retry_after_s);
    d
}
