//! The circuit breaker of a provider's introspection calls: after `failures` failed calls in
//! a row it opens and refuses calls for the cool-down (requests with a cached answer are
//! still served), then lets one call through; that call's result closes or reopens it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open {
        until_ms: u64,
    },
    /// The cool-down is over; `probing` while the one test call is in flight.
    HalfOpen {
        probing: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    failures_to_open: u32,
    cool_down_ms: u64,
    failures: u32,
    state: State,
}

impl Breaker {
    pub fn new(failures_to_open: u32, cool_down_s: u64) -> Breaker {
        Breaker {
            failures_to_open: failures_to_open.max(1),
            cool_down_ms: cool_down_s.saturating_mul(1000),
            failures: 0,
            state: State::Closed,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// May a call start now? When not: whole seconds until one may (for `Retry-After`).
    pub fn admit(&mut self, now_ms: u64) -> Result<(), u64> {
        match self.state {
            State::Closed => Ok(()),
            State::Open { until_ms } if now_ms < until_ms => {
                Err((until_ms - now_ms).div_ceil(1000).max(1))
            }
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Ok(())
            }
            State::HalfOpen { probing: true } => Err(1),
        }
    }

    /// A call ended with an answer (active or not).
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.state = State::Closed;
    }

    /// A call failed: the test call reopens the breaker; enough failures in a row open it.
    pub fn failed(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        let open = match self.state {
            State::HalfOpen { .. } => true,
            State::Closed => self.failures >= self.failures_to_open,
            State::Open { .. } => false,
        };
        if open {
            self.state = State::Open {
                until_ms: now_ms.saturating_add(self.cool_down_ms),
            };
        }
    }

    /// A test call that will never report (its owner went away): the next call tests instead.
    pub fn abandoned(&mut self) {
        if self.state == (State::HalfOpen { probing: true }) {
            self.state = State::HalfOpen { probing: false };
        }
    }

    /// For the `introspection_breaker_<provider>` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(&self) -> u64 {
        match self.state {
            State::Closed => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_tests_with_one_call() {
        let mut b = Breaker::new(3, 10);
        b.failed(0);
        b.failed(0);
        b.succeeded();
        b.failed(0);
        b.failed(0);
        assert_eq!(b.admit(0), Ok(()), "a success reset the count");
        b.failed(1000);
        assert_eq!(b.state(), State::Open { until_ms: 11_000 });
        assert_eq!(b.admit(1000), Err(10));
        assert_eq!(b.admit(10_500), Err(1));
        assert_eq!(b.admit(11_000), Ok(()), "the test call");
        assert_eq!(b.admit(11_001), Err(1), "only one test call at a time");
        b.failed(12_000);
        assert_eq!(b.state(), State::Open { until_ms: 22_000 });
        assert_eq!(b.admit(22_000), Ok(()));
        b.succeeded();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.gauge(), 0);
    }

    #[test]
    fn an_abandoned_test_call_lets_the_next_one_test() {
        let mut b = Breaker::new(1, 1);
        b.failed(0);
        assert_eq!(b.gauge(), 1);
        assert_eq!(b.admit(1000), Ok(()));
        assert_eq!(b.admit(1000), Err(1));
        b.abandoned();
        assert_eq!(b.gauge(), 2);
        assert_eq!(b.admit(1000), Ok(()));
    }
}
