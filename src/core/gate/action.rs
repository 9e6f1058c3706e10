//! What the gate asks the shell to do: each is one host call or a log line and a stat.

use crate::core::decision::env::SavedRequest;
use crate::core::decision::outcome::Decision;
use crate::core::keys::lifecycle::{FetchOutcome, FetchRequest};

use crate::core::introspection::call::CallRequest;

use super::fetching::KeyGauge;
use super::introspecting::IntrospectionGauge;

// Not boxed: actions are moved once, from the gate to the shell.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    /// Carry out `decision` on the parked stream `context`: make it the effective context,
    /// answer it, or resume it when allowed.
    Answer {
        context: u32,
        decision: Decision,
        request: SavedRequest,
    },
    /// Send this key fetch through the host; then report `Gate::fetch_dispatched` or
    /// `Gate::fetch_not_dispatched`.
    Fetch {
        provider: usize,
        request: FetchRequest,
        /// Started for a token with an unknown kid (a stat).
        unknown_kid: bool,
    },
    /// A fetch of this VM ended: a log line and a stat.
    Fetched {
        provider: usize,
        outcome: FetchOutcome,
        /// `ok`, `status_4xx`, `status_5xx`, `transport`, `invalid_body`, `not_dispatched`.
        class: &'static str,
    },
    /// Send this introspection call from the root context (its first sender went away);
    /// then report `Gate::introspection_dispatched` or `Gate::introspection_not_dispatched`.
    Introspect(CallRequest),
    /// An introspection call ended: a stat (`active`, `inactive`, or a failure class).
    Introspected {
        provider: usize,
        class: &'static str,
    },
    /// Each introspecting provider's calls in flight, cached answers and breaker (every
    /// tick).
    IntrospectionGauges(Vec<IntrospectionGauge>),
    /// Each remote provider's key count and age (every tick).
    KeyGauges(Vec<KeyGauge>),
    /// Buckets in use per rate limit, `(rule, limit, in_use)` (about once a second).
    BucketGauges(Vec<(usize, usize, u64)>),
}
