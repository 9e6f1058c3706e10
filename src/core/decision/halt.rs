//! Why the pipeline stopped before allowing: a denial, or a denial that carries what its
//! response needs (the scope to name, the rate-limit state), or a wait for keys.

use crate::core::denial::{Denial, Reason};
use crate::core::introspection::settings::Secret;
use crate::core::introspection::token_key::TokenKey;
use crate::core::ratelimit::bucket::LimitState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    Deny(Denial),
    /// 403 `insufficient_scope`, naming the scopes in `WWW-Authenticate`.
    Scope(String),
    /// 429, with the limit's state for the `RateLimit-*` headers.
    Limited {
        state: LimitState,
        retry_after_s: u64,
    },
    /// Decide again after the provider's next fetch (see `Outcome::Wait`).
    Wait {
        provider: usize,
        refetch: bool,
        detail: &'static str,
    },
    /// Decide again once the shell has read the client certificate (a certificate-bound
    /// token; the read is a host call, made only then).
    NeedClientCert,
    /// Decide again once the introspection answer for this token is in (see
    /// `Outcome::Introspect`).
    Introspect {
        provider: usize,
        key: TokenKey,
        token: Secret,
    },
}

impl From<Denial> for Halt {
    fn from(d: Denial) -> Halt {
        Halt::Deny(d)
    }
}

impl Halt {
    pub fn deny(reason: Reason, detail: &'static str) -> Halt {
        Halt::Deny(Denial::new(reason, detail))
    }
}
