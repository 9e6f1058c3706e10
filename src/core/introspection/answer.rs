//! An introspection answer (RFC 7662 section 2.2): a bounded JSON object with a boolean
//! `active`; the other members of an active answer are the token's claims. Anything else is
//! a failed call, never an inactive token.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::core::denial::{Denial, Reason};
use crate::core::token::claims::{self, Expected};

/// Larger answers are refused unread (an introspection answer is a few hundred bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The token's claims, shared with the cache entry.
    Active(Arc<Map<String, Value>>),
    Inactive,
}

/// Why a call gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No response at all. Envoy answers most of these itself (a timeout with 504, a
    /// connection refused or dropped with 503), and those count as `Status5xx`.
    Transport,
    Status4xx,
    Status5xx,
    /// A status other than 200 outside 4xx and 5xx.
    StatusOther,
    TooLarge,
    NotJson,
    /// No boolean `active` member.
    NoActive,
    /// The host refused to start the call.
    NotDispatched,
    /// No answer within the call's timeout plus `flights::LOST_AFTER_MS`: the call was lost.
    TimedOut,
}

impl Failure {
    /// For `okta_jwt_introspection_calls_<class>_<provider>`.
    pub fn class(self) -> &'static str {
        match self {
            Failure::Transport => "transport",
            Failure::Status4xx => "status_4xx",
            Failure::Status5xx => "status_5xx",
            Failure::StatusOther => "status_other",
            Failure::TooLarge => "too_large",
            Failure::NotJson => "not_json",
            Failure::NoActive => "no_active",
            Failure::NotDispatched => "not_dispatched",
            Failure::TimedOut => "timed_out",
        }
    }
}

/// The answer in a response: `status` is `None` when no response came; `body_size` is read
/// before the body so an oversized one is never copied into the VM.
pub fn read(status: Option<u32>, body_size: usize, body: &[u8]) -> Result<Answer, Failure> {
    match status {
        None => return Err(Failure::Transport),
        Some(200) => {}
        Some(s) if (400..500).contains(&s) => return Err(Failure::Status4xx),
        Some(s) if (500..600).contains(&s) => return Err(Failure::Status5xx),
        Some(_) => return Err(Failure::StatusOther),
    }
    if body_size > MAX_ANSWER_BYTES || body.len() > MAX_ANSWER_BYTES {
        return Err(Failure::TooLarge);
    }
    let Ok(Value::Object(mut members)) = serde_json::from_slice::<Value>(body) else {
        return Err(Failure::NotJson);
    };
    match members.remove("active") {
        Some(Value::Bool(true)) => Ok(Answer::Active(Arc::new(members))),
        Some(Value::Bool(false)) => Ok(Answer::Inactive),
        _ => Err(Failure::NoActive),
    }
}

/// What a provider expects of an active answer's claims.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub issuer: &'a str,
    pub claims: Expected<'a>,
}

/// An active answer's claims, checked as a JWT's are, except that `iss` and `aud` are checked
/// only when present (RFC 7662 makes them optional) and `exp` as the provider says.
pub fn check_active(e: &Expect<'_>, claims: &Map<String, Value>, now: u64) -> Result<(), Denial> {
    match claims.get("iss") {
        None => {}
        Some(Value::String(iss)) if iss == e.issuer => {}
        Some(_) => {
            return Err(Denial::new(
                Reason::WrongIssuer,
                "the introspection answer names another issuer",
            ))
        }
    }
    claims::check(&e.claims, claims, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn active_inactive_and_failures() {
        let b = body(json!({"active": true, "sub": "u1", "scope": "a b"}));
        let Ok(Answer::Active(c)) = read(Some(200), b.len(), &b) else {
            panic!("active")
        };
        assert_eq!(c.get("sub"), Some(&json!("u1")));
        assert!(!c.contains_key("active"));
        let b = body(json!({"active": false}));
        assert_eq!(read(Some(200), b.len(), &b), Ok(Answer::Inactive));
        for (v, f) in [
            (json!({"active": "true"}), Failure::NoActive),
            (json!({"active": 1}), Failure::NoActive),
            (json!({"sub": "x"}), Failure::NoActive),
            (json!([true]), Failure::NotJson),
            (json!("active"), Failure::NotJson),
        ] {
            let b = body(v);
            assert_eq!(read(Some(200), b.len(), &b), Err(f));
        }
        assert_eq!(read(Some(200), 5, b"{nope"), Err(Failure::NotJson));
        assert_eq!(read(None, 0, b""), Err(Failure::Transport));
        assert_eq!(read(Some(401), 2, b"{}"), Err(Failure::Status4xx));
        assert_eq!(read(Some(503), 2, b"{}"), Err(Failure::Status5xx));
        assert_eq!(read(Some(302), 2, b"{}"), Err(Failure::StatusOther));
    }

    #[test]
    fn oversized_answers_are_refused_unread() {
        let big = format!(
            "{{\"active\": true, \"pad\": \"{}\"}}",
            "x".repeat(MAX_ANSWER_BYTES)
        );
        assert_eq!(
            read(Some(200), big.len(), big.as_bytes()),
            Err(Failure::TooLarge)
        );
        // The size announced by the host decides before any byte is read.
        assert_eq!(
            read(Some(200), MAX_ANSWER_BYTES + 1, b""),
            Err(Failure::TooLarge)
        );
    }

    #[test]
    fn deep_nesting_is_not_json_and_does_not_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(read(Some(200), 10, deep.as_bytes()), Err(Failure::TooLarge));
        let deep = format!(
            "{{\"active\":true,\"x\":{}{}}}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(
            read(Some(200), deep.len(), deep.as_bytes()),
            Err(Failure::NotJson)
        );
    }

    const NOW: u64 = 1_700_000_000;

    fn expect<'a>(aud: &'a [String], require_exp: bool) -> Expect<'a> {
        Expect {
            issuer: "https://org.example",
            claims: Expected {
                audiences: aud,
                clock_skew_s: 60,
                max_lifetime_s: None,
                client_ids: None,
                audience_optional: true,
                exp_optional: !require_exp,
            },
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn iss_and_aud_only_when_present_exp_as_configured() {
        let aud = vec!["api://default".to_owned()];
        let e = expect(&aud, true);
        let ok = claims(json!({"exp": NOW + 60}));
        assert_eq!(check_active(&e, &ok, NOW), Ok(()));
        let r = |v: Value| check_active(&e, &claims(v), NOW).map_err(|d| d.reason);
        assert_eq!(
            r(json!({"exp": NOW + 60, "iss": "https://other"})),
            Err(Reason::WrongIssuer)
        );
        assert_eq!(
            r(json!({"exp": NOW + 60, "iss": "https://org.example", "aud": "api://default"})),
            Ok(())
        );
        assert_eq!(
            r(json!({"exp": NOW + 60, "aud": ["x", "y"]})),
            Err(Reason::WrongAudience)
        );
        assert_eq!(r(json!({"sub": "u"})), Err(Reason::MissingExp));
        assert_eq!(r(json!({"exp": "soon"})), Err(Reason::Malformed));
        assert_eq!(r(json!({"exp": NOW - 3600})), Err(Reason::Expired));
        let lenient = expect(&aud, false);
        assert_eq!(check_active(&lenient, &claims(json!({})), NOW), Ok(()));
        // A non-numeric exp is refused even when exp is optional.
        assert_eq!(
            check_active(&lenient, &claims(json!({"exp": "x"})), NOW).map_err(|d| d.reason),
            Err(Reason::Malformed)
        );
    }
}
