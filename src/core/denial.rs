//! Why a request was denied: one precise reason for logs and stats, and the generic answer the
//! client sees (RFC 6750). The two are kept apart so a response never says more than it should.

/// A stage's refusal: the precise reason, and a detail for the log that never holds token
/// bytes. Every stage of the pipeline returns `Result<_, Denial>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    pub reason: Reason,
    pub detail: &'static str,
}

impl Denial {
    pub fn new(reason: Reason, detail: &'static str) -> Denial {
        Denial { reason, detail }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MissingToken,
    MultipleTokens,
    TokenTooLarge,
    Malformed,
    UnsupportedAlg,
    ForbiddenHeader,
    UnknownKid,
    BadSignature,
    MissingExp,
    Expired,
    NotYetValid,
    IssuedInFuture,
    LifetimeExceeded,
    WrongIssuer,
    WrongAudience,
    WrongClient,
    NotAccessToken,
    DpopBound,
    DpopUnbound,
    DpopDisabled,
    InvalidDpopProof,
    DpopReplayFull,
    CertificateMismatch,
    InsufficientScope,
    ClaimMismatch,
    RateLimited,
    JwksUnavailable,
    BadPath,
    IpDenied,
    /// The introspection endpoint says the token is not active (revoked, expired, unknown).
    InactiveToken,
    /// No introspection answer: the call failed, the breaker is open or too many are in flight.
    IntrospectionUnavailable,
}

/// The RFC 6750 error class a reason is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 401 without an error code: the request carried no credentials.
    NoCredentials,
    /// 401 `invalid_token`.
    InvalidToken,
    /// 403 `insufficient_scope`.
    InsufficientScope,
    /// 403 without `WWW-Authenticate`.
    Forbidden,
    /// 429.
    RateLimited,
    /// 503 with `Retry-After`.
    Unavailable,
    /// 400 without `WWW-Authenticate`.
    BadRequest,
    /// 400 `invalid_request` (RFC 6750 section 3.1), with a `Bearer` challenge.
    InvalidRequest,
    /// 401 `invalid_dpop_proof` (RFC 9449 section 7.1), with a `DPoP` challenge.
    InvalidDpopProof,
}

pub const ALL: [Reason; 31] = [
    Reason::MissingToken,
    Reason::MultipleTokens,
    Reason::TokenTooLarge,
    Reason::Malformed,
    Reason::UnsupportedAlg,
    Reason::ForbiddenHeader,
    Reason::UnknownKid,
    Reason::BadSignature,
    Reason::MissingExp,
    Reason::Expired,
    Reason::NotYetValid,
    Reason::IssuedInFuture,
    Reason::LifetimeExceeded,
    Reason::WrongIssuer,
    Reason::WrongAudience,
    Reason::WrongClient,
    Reason::NotAccessToken,
    Reason::DpopBound,
    Reason::DpopUnbound,
    Reason::DpopDisabled,
    Reason::InvalidDpopProof,
    Reason::DpopReplayFull,
    Reason::CertificateMismatch,
    Reason::InsufficientScope,
    Reason::ClaimMismatch,
    Reason::RateLimited,
    Reason::JwksUnavailable,
    Reason::BadPath,
    Reason::IpDenied,
    Reason::InactiveToken,
    Reason::IntrospectionUnavailable,
];

impl Reason {
    /// Stable snake_case name used in stats and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::MultipleTokens => "multiple_tokens",
            Reason::TokenTooLarge => "token_too_large",
            Reason::Malformed => "malformed",
            Reason::UnsupportedAlg => "unsupported_alg",
            Reason::ForbiddenHeader => "forbidden_header",
            Reason::UnknownKid => "unknown_kid",
            Reason::BadSignature => "bad_signature",
            Reason::MissingExp => "missing_exp",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::IssuedInFuture => "issued_in_future",
            Reason::LifetimeExceeded => "lifetime_exceeded",
            Reason::WrongIssuer => "wrong_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::WrongClient => "wrong_client",
            Reason::NotAccessToken => "not_access_token",
            Reason::DpopBound => "dpop_bound_token",
            Reason::DpopUnbound => "dpop_unbound_token",
            Reason::DpopDisabled => "dpop_disabled",
            Reason::InvalidDpopProof => "invalid_dpop_proof",
            Reason::DpopReplayFull => "dpop_replay_full",
            Reason::CertificateMismatch => "certificate_mismatch",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::ClaimMismatch => "claim_mismatch",
            Reason::RateLimited => "rate_limited",
            Reason::JwksUnavailable => "jwks_unavailable",
            Reason::BadPath => "bad_path",
            Reason::IpDenied => "ip_denied",
            Reason::InactiveToken => "inactive_token",
            Reason::IntrospectionUnavailable => "introspection_unavailable",
        }
    }

    pub fn class(self) -> Class {
        match self {
            Reason::MissingToken => Class::NoCredentials,
            Reason::InsufficientScope => Class::InsufficientScope,
            Reason::ClaimMismatch | Reason::IpDenied => Class::Forbidden,
            Reason::RateLimited => Class::RateLimited,
            Reason::JwksUnavailable | Reason::DpopReplayFull | Reason::IntrospectionUnavailable => {
                Class::Unavailable
            }
            Reason::InvalidDpopProof => Class::InvalidDpopProof,
            Reason::BadPath => Class::BadRequest,
            Reason::MultipleTokens => Class::InvalidRequest,
            _ => Class::InvalidToken,
        }
    }

    /// The short, generic text a client sees. It never says which check failed beyond what
    /// RFC 6750 already reveals, so it cannot be used as an oracle.
    pub fn description(self) -> &'static str {
        match self {
            Reason::MissingToken => "An access token is required",
            Reason::Expired => "The access token expired",
            Reason::NotYetValid | Reason::IssuedInFuture => "The access token is not yet valid",
            Reason::InsufficientScope => {
                "The access token does not carry the scope this request requires"
            }
            Reason::ClaimMismatch => "The access token does not grant access to this resource",
            Reason::RateLimited => "Too many requests",
            Reason::JwksUnavailable => "The token signing keys are unavailable; retry later",
            Reason::BadPath => "The request path is not acceptable",
            Reason::IpDenied => "Requests from this address are not allowed",
            Reason::MultipleTokens => "The request carries more than one access token",
            Reason::InvalidDpopProof => "The DPoP proof is invalid",
            Reason::DpopReplayFull => "Too many DPoP proofs to remember; retry later",
            Reason::IntrospectionUnavailable => {
                "The access token cannot be checked right now; retry later"
            }
            _ => "The access token is invalid",
        }
    }

    /// The `error` member of the JSON body.
    pub fn error_code(self) -> &'static str {
        match self.class() {
            Class::NoCredentials => "unauthorized",
            Class::InvalidToken => "invalid_token",
            Class::InsufficientScope => "insufficient_scope",
            Class::Forbidden => "access_denied",
            Class::RateLimited => "rate_limited",
            Class::Unavailable => "temporarily_unavailable",
            Class::BadRequest | Class::InvalidRequest => "invalid_request",
            Class::InvalidDpopProof => "invalid_dpop_proof",
        }
    }

    pub fn status(self) -> u32 {
        match self.class() {
            Class::NoCredentials | Class::InvalidToken | Class::InvalidDpopProof => 401,
            Class::InsufficientScope | Class::Forbidden => 403,
            Class::RateLimited => 429,
            Class::Unavailable => 503,
            Class::BadRequest | Class::InvalidRequest => 400,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_snake_case() {
        let names: HashSet<_> = ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), ALL.len());
        for n in names {
            assert!(
                n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
        }
    }

    #[test]
    fn statuses_follow_the_spec_table() {
        assert_eq!(Reason::MissingToken.status(), 401);
        assert_eq!(Reason::BadSignature.status(), 401);
        assert_eq!(Reason::UnknownKid.status(), 401);
        assert_eq!(Reason::InsufficientScope.status(), 403);
        assert_eq!(Reason::ClaimMismatch.status(), 403);
        assert_eq!(Reason::RateLimited.status(), 429);
        assert_eq!(Reason::JwksUnavailable.status(), 503);
        assert_eq!(Reason::BadPath.status(), 400);
        assert_eq!(Reason::IpDenied.status(), 403);
        assert_eq!(Reason::IpDenied.class(), Class::Forbidden);
        assert_eq!(Reason::IpDenied.as_str(), "ip_denied");
        assert_eq!(Reason::InactiveToken.status(), 401);
        assert_eq!(Reason::InactiveToken.class(), Class::InvalidToken);
        assert_eq!(Reason::IntrospectionUnavailable.status(), 503);
        assert_eq!(
            Reason::IntrospectionUnavailable.as_str(),
            "introspection_unavailable"
        );
    }

    #[test]
    fn invalid_token_descriptions_do_not_reveal_the_check() {
        for r in [
            Reason::BadSignature,
            Reason::WrongIssuer,
            Reason::WrongAudience,
            Reason::UnknownKid,
            Reason::WrongClient,
            Reason::InactiveToken,
        ] {
            assert_eq!(r.description(), "The access token is invalid");
        }
    }
}
