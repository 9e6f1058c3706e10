//! Bucket arithmetic. Tokens are integers in units of 1/(per_s*1000) token, so refill is
//! exactly `requests` units per millisecond, without drift; what a client is told
//! (`RateLimit-*`, `Retry-After`) is rounded up to whole seconds.

use crate::core::ratelimit::limits::RateLimit;

/// A stored refill time further ahead of `now` than this is taken as a clock step backwards:
/// the bucket keeps its tokens and refills from `now`. Smaller gaps are workers' requests
/// landing out of order and never refill the same milliseconds twice.
const REBASE_AFTER_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// The limit's `requests`, for `RateLimit-Limit`.
    pub limit: u64,
    /// Whole tokens left.
    pub remaining: u64,
    /// Whole seconds (rounded up) until the bucket is full again.
    pub reset_s: u64,
}

/// A limit in bucket units: one token is `unit` = per_s*1000 units, refill is `rate` =
/// requests units per millisecond, capacity is burst tokens.
pub(super) struct Params {
    pub(super) requests: u64,
    pub(super) per_s: u64,
    pub(super) unit: u128,
    pub(super) rate: u128,
    pub(super) cap: u128,
}

impl Params {
    pub(super) fn new(l: &RateLimit) -> Params {
        let per_s = l.per_s.max(1);
        let unit = u128::from(per_s) * 1000;
        Params {
            requests: l.requests,
            per_s,
            unit,
            rate: u128::from(l.requests),
            cap: u128::from(l.burst).saturating_mul(unit),
        }
    }

    pub(super) fn state(&self, tokens: u128) -> LimitState {
        LimitState {
            limit: self.requests,
            remaining: u64::try_from(tokens / self.unit).unwrap_or(u64::MAX),
            reset_s: whole_seconds(ceil_div(self.cap.saturating_sub(tokens), self.rate)),
        }
    }

    pub(super) fn retry_after_s(&self, tokens: u128) -> u64 {
        whole_seconds(ceil_div(self.unit.saturating_sub(tokens), self.rate)).max(1)
    }
}

fn ceil_div(a: u128, b: u128) -> u128 {
    if a == 0 {
        return 0;
    }
    // Dividing by zero (a refill rate of zero) means never.
    a.checked_div(b)
        .map_or(u128::MAX, |q| q + u128::from(!a.is_multiple_of(b)))
}

fn whole_seconds(ms: u128) -> u64 {
    u64::try_from(ceil_div(ms, 1000)).unwrap_or(u64::MAX)
}

/// One key's bucket: the keyed hash of the key value it belongs to, its tokens (in units) and
/// when they were last refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bucket {
    pub(super) hash: u64,
    pub(super) tokens: u128,
    pub(super) last_ms: u64,
}

impl Bucket {
    pub(super) fn refilled(mut self, p: &Params, now: u64) -> Bucket {
        self.tokens = self.tokens.min(p.cap);
        if now > self.last_ms {
            let gained = u128::from(now - self.last_ms).saturating_mul(p.rate);
            self.tokens = self.tokens.saturating_add(gained).min(p.cap);
            self.last_ms = now;
        } else if self.last_ms - now > REBASE_AFTER_MS {
            self.last_ms = now;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ratelimit::limits::{Count, LimitKey, DEFAULT_MAX_KEYS};

    fn params(requests: u64, per_s: u64, burst: u64) -> Params {
        Params::new(&RateLimit {
            key: LimitKey::Route,
            requests,
            per_s,
            burst,
            max_keys: DEFAULT_MAX_KEYS,
            count: Count::All,
        })
    }

    #[test]
    fn divisions_round_up_and_a_zero_rate_means_never() {
        assert_eq!(ceil_div(0, 0), 0);
        assert_eq!(ceil_div(1, 0), u128::MAX);
        assert_eq!(ceil_div(6, 3), 2);
        assert_eq!(ceil_div(7, 3), 3);
        assert_eq!(whole_seconds(1), 1);
        assert_eq!(whole_seconds(1_000), 1);
        assert_eq!(whole_seconds(1_001), 2);
        assert_eq!(whole_seconds(u128::MAX), u64::MAX);
        assert_eq!(params(0, 60, 5).retry_after_s(0), u64::MAX);
    }

    #[test]
    fn refill_is_exact_capped_and_a_clock_step_back_only_moves_the_time() {
        // 5 per 60 s: one token (60_000 units) every 12 s, 5 units a millisecond.
        let p = params(5, 60, 5);
        let empty = Bucket {
            hash: 1,
            tokens: 0,
            last_ms: 100_000,
        };
        let one = empty.refilled(&p, 112_000);
        assert_eq!((one.tokens, one.last_ms), (p.unit, 112_000));
        assert_eq!(
            p.state(one.tokens),
            LimitState {
                limit: 5,
                remaining: 1,
                reset_s: 48
            }
        );
        assert_eq!(empty.refilled(&p, u64::MAX).tokens, p.cap);
        // Readings out of order by less than the bound change nothing.
        assert_eq!(one.refilled(&p, 111_000), one);
        // A step back past it: the tokens stay, the refill restarts from the new time.
        let back = one.refilled(&p, 112_000 - REBASE_AFTER_MS - 1);
        assert_eq!(back.tokens, p.unit);
        assert_eq!(back.last_ms, 112_000 - REBASE_AFTER_MS - 1);
    }
}
