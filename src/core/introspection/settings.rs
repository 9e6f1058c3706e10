//! A provider's `introspection` settings, compiled (see `config/introspection.rs`).

/// A value that must never reach a log line, a response or a debug print: a client secret, a
/// token on its way to the introspection endpoint.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value, for the one place that sends it (the call's header or body).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Which of a provider's tokens are introspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// Tokens that are not a compact JWS; JWTs are verified locally only.
    Opaque,
    /// Opaque tokens, and every JWT after it passed its local checks (revocation).
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspection {
    /// For logs: the endpoint, without credentials.
    pub uri: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    /// `Basic base64(form(client_id) ":" form(client_secret))`, ready to send.
    pub authorization: Secret,
    pub tokens: Tokens,
    pub timeout_ms: u64,
    /// How long an active answer is used (never past the token's `exp`).
    pub cache_s: u64,
    /// How long an inactive answer is used.
    pub negative_cache_s: u64,
    /// Cached answers per VM.
    pub max_entries: usize,
    /// An active answer without a numeric `exp` is refused.
    pub require_exp: bool,
    /// Calls in flight per VM; a request that would need one more gets 503.
    pub max_in_flight: usize,
    /// Consecutive failed calls that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before one is let through to test the endpoint.
    pub breaker_cool_down_s: u64,
}
