//! What the decision reads of introspection: a token's cache key and its cached answer.

use super::answer::Answer;
use super::token_key::TokenKey;

pub trait Answers {
    fn key(&self, token: &str) -> TokenKey;
    /// The cached answer for `key` at `provider`, while it lasts.
    fn answer(&self, provider: usize, key: TokenKey, now_ms: u64) -> Option<Answer>;
}

/// No cache at all (`okta-jwt explain`, which makes no calls): every lookup misses.
pub struct NoAnswers;

impl Answers for NoAnswers {
    fn key(&self, _token: &str) -> TokenKey {
        TokenKey(0)
    }

    fn answer(&self, _provider: usize, _key: TokenKey, _now_ms: u64) -> Option<Answer> {
        None
    }
}
