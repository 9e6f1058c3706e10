//! What a VM's root context and its HTTP contexts share: the core's gate, the stats, and the
//! `RateLimit-*` values waiting for each stream's response.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::core::config::model::Config;
use crate::core::gate::action::Action;
use crate::core::gate::state::Gate;
use crate::core::ratelimit::bucket::LimitState;

use super::metrics::Metrics;

pub struct Plugin {
    /// Never borrowed across a host call that can call back into this VM (sending a local
    /// reply runs the stream's response callbacks).
    pub gate: RefCell<Gate>,
    /// The gate's configuration, readable without borrowing the gate.
    pub config: Rc<Config>,
    pub metrics: Metrics,
    /// `RateLimit-*` values to add to a stream's response, by HTTP context id.
    pub rate_headers: RefCell<HashMap<u32, LimitState>>,
    /// Answers for other streams that an introspection response brought to one stream: run
    /// on the next tick, from the root context, rather than re-entering Envoy's filter
    /// chain from inside that stream's callback.
    pub deferred: RefCell<Vec<Action>>,
    /// Requests decided since the last decision-time sample.
    pub decided: std::cell::Cell<u32>,
}

/// One request in this many records its decision time: the second clock read and the
/// histogram are host calls, and a sample describes the distribution as well.
pub const DECISION_TIME_SAMPLE: u32 = 16;

impl Plugin {
    /// Whether this request's decision time is recorded (the first, then one in
    /// `DECISION_TIME_SAMPLE`).
    pub fn sample_decision_time(&self) -> bool {
        let n = self.decided.get();
        self.decided.set((n + 1) % DECISION_TIME_SAMPLE);
        n == 0
    }

    pub fn provider_name(&self, provider: Option<usize>) -> &str {
        provider
            .and_then(|p| self.config.providers.get(p))
            .map_or("-", |p| p.name.as_str())
    }
}
