//! What a rule's rate limit is: the key it counts under and its bucket size. Compiled from the
//! configuration by `config::rate_limit`.

use crate::core::token::claim_path::ClaimPath;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    Claim(ClaimPath),
    /// Lower-case header name.
    Header(String),
    Ip,
    Route,
}

/// Which requests take a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Every request of the rule that reaches the rate-limit stage (`"count": "all"`).
    All,
    /// Only requests that end in 401, and while the bucket is empty every request of the key
    /// is refused before any token work (`"count": "denied"`, failure throttling).
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub key: LimitKey,
    pub requests: u64,
    pub per_s: u64,
    pub burst: u64,
    /// Distinct key values tracked per limit; past it requests share one strict overflow
    /// bucket (see `ratelimit`), so a key flood cannot grow shared memory.
    pub max_keys: u64,
    pub count: Count,
}

pub const DEFAULT_MAX_KEYS: u64 = 10_000;
pub const MAX_MAX_KEYS: u64 = 1_000_000;
