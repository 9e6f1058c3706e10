//! What the pipeline decides for one request, and the header changes that go with it.

use crate::core::denial::{Denial, Reason};
use crate::core::introspection::settings::Secret;
use crate::core::introspection::token_key::TokenKey;
use crate::core::ratelimit::bucket::LimitState;

use super::trace::Check;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    Remove(String),
    Set(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny {
        reason: Reason,
        /// For `insufficient_scope`: the scopes to name in `WWW-Authenticate`.
        scope: Option<String>,
    },
    /// Decide again once the provider's next fetch ends: its first fetch is in flight
    /// (`refetch: false`), or the token's kid is unknown and a refetch may find it
    /// (`refetch: true`).
    Wait {
        provider: usize,
        refetch: bool,
    },
    /// Decide again with the client certificate read (see `Halt::NeedClientCert`).
    NeedClientCert,
    /// Decide again once the provider's introspection endpoint answered for this token: the
    /// gate starts the call (or joins the one in flight) with `token`.
    Introspect {
        provider: usize,
        key: TokenKey,
        token: Secret,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Header changes to apply when the request is allowed.
    pub ops: Vec<HeaderOp>,
    /// A new `:path` to send upstream (normalized, or with a query token removed).
    pub path: Option<String>,
    /// The index of the matched rule in `rules`; `None` when no rule matched.
    pub rule: Option<usize>,
    pub provider: Option<usize>,
    /// `sub` and client id, for the log.
    pub sub: Option<String>,
    pub cid: Option<String>,
    /// False when `sub` and `cid` come from a token refused before its signature was
    /// checked (its claims failed): they are only what the token claims.
    pub identity_verified: bool,
    /// Precise reason for the log; never token bytes.
    pub detail: &'static str,
    /// Whether the verified-token cache answered (`None`: no token was verified).
    pub cache_hit: Option<bool>,
    /// Whether an introspection answer came from the cache (`None`: none was needed).
    pub introspection_hit: Option<bool>,
    /// The most restrictive rate limit that applied, for the `RateLimit-*` headers.
    pub rate: Option<LimitState>,
    /// For 429: whole seconds until a token is available.
    pub retry_after_s: Option<u64>,
    /// The token's `kid` and `alg`, for the decision log, when it was parsed.
    pub kid: Option<String>,
    pub alg: Option<&'static str>,
    /// Values of the claims `log.claims` names, when a token was verified.
    pub logged_claims: Vec<(String, serde_json::Value)>,
    /// Every check in order, when tracing (`okta-jwt explain`).
    pub checks: Option<Vec<Check>>,
}

impl Decision {
    pub fn new(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            ops: Vec::new(),
            path: None,
            rule: None,
            provider: None,
            sub: None,
            cid: None,
            identity_verified: true,
            detail: "",
            cache_hit: None,
            introspection_hit: None,
            rate: None,
            retry_after_s: None,
            kid: None,
            alg: None,
            logged_claims: Vec::new(),
            checks: None,
        }
    }

    /// A denial decided before any rule applies.
    pub fn rejected(reason: Reason, detail: &'static str) -> Decision {
        Decision::new(Outcome::Allow).deny(Denial::new(reason, detail))
    }

    pub fn deny(mut self, denial: Denial) -> Decision {
        self.outcome = Outcome::Deny {
            reason: denial.reason,
            scope: None,
        };
        self.detail = denial.detail;
        self
    }

    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }
}
