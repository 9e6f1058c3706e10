//! Denial responses exactly as SPEC.md's table lists them (RFC 6750 §3).

use crate::core::config::model::{Config, DpopChallenge};
use crate::core::denial::{Class, Reason};
use crate::core::ratelimit::bucket::LimitState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// What the `WWW-Authenticate` challenges of a rule's denials say: the realm, and the `DPoP`
/// scheme when a provider of the rule accepts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge<'a> {
    pub realm: Option<&'a str>,
    pub dpop: Option<DpopChallenge>,
}

impl<'a> Challenge<'a> {
    /// The challenge for a decision under `rule` (`None`: the default rule).
    pub fn of(config: &'a Config, rule: Option<usize>) -> Challenge<'a> {
        Challenge {
            realm: config.realm.as_deref(),
            dpop: config.dpop_challenge(rule),
        }
    }

    /// The challenges to send: `Bearer`, and `DPoP` (with `algs`) when a provider accepts it;
    /// only `DPoP` when every provider requires it or the proof failed.
    fn headers(&self, params: &[(&str, &str)], dpop_only: bool) -> Vec<String> {
        let mut out = Vec::with_capacity(2);
        let only = dpop_only || self.dpop.as_ref().is_some_and(|d| d.only);
        if !only {
            out.push(scheme("Bearer", self.realm, params));
        }
        if only || self.dpop.is_some() {
            let mut with_algs = params.to_vec();
            if let Some(d) = &self.dpop {
                with_algs.push(("algs", &d.algs));
            }
            out.push(scheme("DPoP", self.realm, &with_algs));
        }
        out
    }
}

impl<'a> From<Option<&'a str>> for Challenge<'a> {
    fn from(realm: Option<&'a str>) -> Challenge<'a> {
        Challenge { realm, dpop: None }
    }
}

fn scheme(name: &str, realm: Option<&str>, params: &[(&str, &str)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(r) = realm {
        parts.push(format!("realm=\"{r}\""));
    }
    for (k, v) in params {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {}", parts.join(", "))
    }
}

fn challenge(realm: Option<&str>, params: &[(&str, &str)]) -> String {
    scheme("Bearer", realm, params)
}

/// The `RateLimit-*` fields (draft-ietf-httpapi-ratelimit-headers) for one limit's state; sent
/// with 429 and with every allowed response that a limit applied to, so clients can pace.
pub fn rate_headers(state: &LimitState) -> [(&'static str, String); 3] {
    [
        ("ratelimit-limit", state.limit.to_string()),
        ("ratelimit-remaining", state.remaining.to_string()),
        ("ratelimit-reset", state.reset_s.to_string()),
    ]
}

/// `retry_after_s` is used for 503 and 429; `rate` adds the `RateLimit-*` fields.
pub fn denial<'a>(
    challenge_of: impl Into<Challenge<'a>>,
    reason: Reason,
    scope: Option<&str>,
    retry_after_s: u64,
    rate: Option<&LimitState>,
) -> Response {
    let ch: Challenge<'a> = challenge_of.into();
    let realm = ch.realm;
    let mut headers = vec![("content-type", "application/json".to_owned())];
    let challenges = match reason.class() {
        Class::NoCredentials => ch.headers(&[], false),
        Class::InvalidToken => ch.headers(
            &[
                ("error", "invalid_token"),
                ("error_description", reason.description()),
            ],
            false,
        ),
        Class::InvalidDpopProof => ch.headers(&[("error", "invalid_dpop_proof")], true),
        Class::InsufficientScope => vec![challenge(
            realm,
            &[
                ("error", "insufficient_scope"),
                ("scope", scope.unwrap_or_default()),
            ],
        )],
        Class::Unavailable | Class::RateLimited => {
            headers.push(("retry-after", retry_after_s.max(1).to_string()));
            Vec::new()
        }
        Class::InvalidRequest => vec![challenge(
            realm,
            &[
                ("error", "invalid_request"),
                ("error_description", reason.description()),
            ],
        )],
        Class::Forbidden | Class::BadRequest => Vec::new(),
    };
    headers.extend(challenges.into_iter().map(|c| ("www-authenticate", c)));
    if let Some(state) = rate {
        headers.extend(rate_headers(state));
    }
    let body = serde_json::json!({
        "error": reason.error_code(),
        "error_description": reason.description(),
    })
    .to_string();
    Response {
        status: reason.status(),
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn spec_table_rows() {
        let r = denial(Some("api"), Reason::MissingToken, None, 0, None);
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(r#"Bearer realm="api""#)
        );

        let r = denial(Some("api"), Reason::Expired, None, 0, None);
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(
                r#"Bearer realm="api", error="invalid_token", error_description="The access token expired""#
            )
        );

        let r = denial(
            Some("api"),
            Reason::InsufficientScope,
            Some("orders:write"),
            0,
            None,
        );
        assert_eq!(r.status, 403);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(r#"Bearer realm="api", error="insufficient_scope", scope="orders:write""#)
        );

        let r = denial(Some("api"), Reason::ClaimMismatch, None, 0, None);
        assert_eq!(r.status, 403);
        assert_eq!(header(&r, "www-authenticate"), None);

        let r = denial(Some("api"), Reason::JwksUnavailable, None, 5, None);
        assert_eq!(r.status, 503);
        assert_eq!(header(&r, "retry-after"), Some("5"));
        assert_eq!(header(&r, "www-authenticate"), None);

        let r = denial(Some("api"), Reason::BadPath, None, 0, None);
        assert_eq!(r.status, 400);
        assert_eq!(header(&r, "www-authenticate"), None);
    }

    fn www(r: &Response) -> Vec<&str> {
        r.headers
            .iter()
            .filter(|(n, _)| *n == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn dpop(only: bool) -> Challenge<'static> {
        Challenge {
            realm: Some("api"),
            dpop: Some(DpopChallenge {
                algs: "RS256 ES256".into(),
                only,
            }),
        }
    }

    #[test]
    fn dpop_challenges_follow_the_rules_modes() {
        let r = denial(dpop(false), Reason::MissingToken, None, 0, None);
        assert_eq!(
            www(&r),
            [
                r#"Bearer realm="api""#,
                r#"DPoP realm="api", algs="RS256 ES256""#
            ]
        );
        let r = denial(dpop(true), Reason::MissingToken, None, 0, None);
        assert_eq!(www(&r), [r#"DPoP realm="api", algs="RS256 ES256""#]);
        let r = denial(dpop(true), Reason::DpopUnbound, None, 0, None);
        assert_eq!(
            www(&r),
            [
                r#"DPoP realm="api", error="invalid_token", error_description="The access token is invalid", algs="RS256 ES256""#
            ]
        );
        // A refused proof is answered with the DPoP challenge only, even where Bearer is allowed.
        for ch in [dpop(false), dpop(true)] {
            let r = denial(ch, Reason::InvalidDpopProof, None, 0, None);
            assert_eq!(r.status, 401);
            assert_eq!(
                www(&r),
                [r#"DPoP realm="api", error="invalid_dpop_proof", algs="RS256 ES256""#]
            );
            assert!(
                r.body.contains(r#""error":"invalid_dpop_proof""#),
                "{}",
                r.body
            );
        }
        // Scope and request errors stay Bearer; a full replay record is a 503.
        let r = denial(dpop(true), Reason::InsufficientScope, Some("s"), 0, None);
        assert_eq!(
            www(&r),
            [r#"Bearer realm="api", error="insufficient_scope", scope="s""#]
        );
        let r = denial(dpop(true), Reason::DpopReplayFull, None, 7, None);
        assert_eq!((r.status, www(&r).len()), (503, 0));
        assert_eq!(header(&r, "retry-after"), Some("7"));
    }

    #[test]
    fn rate_limited_carries_retry_after_and_ratelimit_fields() {
        let state = LimitState {
            limit: 5,
            remaining: 0,
            reset_s: 60,
        };
        let r = denial(Some("api"), Reason::RateLimited, None, 12, Some(&state));
        assert_eq!(r.status, 429);
        assert_eq!(header(&r, "retry-after"), Some("12"));
        assert_eq!(header(&r, "ratelimit-limit"), Some("5"));
        assert_eq!(header(&r, "ratelimit-remaining"), Some("0"));
        assert_eq!(header(&r, "ratelimit-reset"), Some("60"));
        assert_eq!(header(&r, "www-authenticate"), None);
    }

    #[test]
    fn realm_is_omitted_when_not_configured() {
        let r = denial(None, Reason::MissingToken, None, 0, None);
        assert_eq!(header(&r, "www-authenticate"), Some("Bearer"));
        let r = denial(None, Reason::BadSignature, None, 0, None);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some(
                r#"Bearer error="invalid_token", error_description="The access token is invalid""#
            )
        );
    }

    #[test]
    fn body_is_json_with_error_and_description() {
        for reason in crate::core::denial::ALL {
            let r = denial(Some("api"), reason, Some("s"), 1, None);
            assert_eq!(header(&r, "content-type"), Some("application/json"));
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["error"], reason.error_code());
            assert_eq!(v["error_description"], reason.description());
        }
    }
}
