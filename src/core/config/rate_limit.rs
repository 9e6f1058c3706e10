//! Compiling `rules[].rate_limits[]`: validated at load so a bad limit never reaches traffic.

use serde::Deserialize;
use serde_json::Value;

use crate::core::config::error::{err, ConfigError};
use crate::core::config::names::is_token_char;
use crate::core::ratelimit::limits::{Count, LimitKey, RateLimit, DEFAULT_MAX_KEYS, MAX_MAX_KEYS};
use crate::core::token::claim_path::ClaimPath;

const MAX_REQUESTS: u64 = 1_000_000_000;
const MAX_PERIOD_S: u64 = 86_400 * 366;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    key: String,
    requests: u64,
    per_s: u64,
    burst: Option<u64>,
    max_keys: Option<u64>,
    count: Option<String>,
}
pub fn parse(at: &str, value: &Value) -> Result<RateLimit, ConfigError> {
    let raw: RawRateLimit = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        };
        ConfigError {
            field,
            problem: e.into_inner().to_string(),
        }
    })?;
    let key = limit_key(&format!("{at}.key"), &raw.key)?;
    let burst = raw.burst.unwrap_or(raw.requests);
    let max_keys = raw.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    within(at, "requests", raw.requests, MAX_REQUESTS)?;
    within(at, "per_s", raw.per_s, MAX_PERIOD_S)?;
    within(at, "burst", burst, MAX_REQUESTS)?;
    within(at, "max_keys", max_keys, MAX_MAX_KEYS)?;
    let count = count(at, raw.count.as_deref(), &key)?;
    Ok(RateLimit {
        key,
        requests: raw.requests,
        per_s: raw.per_s,
        burst,
        max_keys,
        count,
    })
}

/// `count`; failures are counted under a key known before the token is verified, since a
/// throttled request is refused before that (a claim of a refused token is the sender's
/// choice).
fn count(at: &str, raw: Option<&str>, key: &LimitKey) -> Result<Count, ConfigError> {
    match raw {
        None | Some("all") => Ok(Count::All),
        Some("denied") if matches!(key, LimitKey::Claim(_)) => err(
            format!("{at}.count"),
            "\"denied\" needs a key known before the token is verified: ip, header:NAME or route",
        ),
        Some("denied") => Ok(Count::Denied),
        Some(other) => err(
            format!("{at}.count"),
            format!("{other:?} is not one of \"all\", \"denied\""),
        ),
    }
}

fn limit_key(field: &str, key: &str) -> Result<LimitKey, ConfigError> {
    if let Some(claim) = key.strip_prefix("claim:") {
        return ClaimPath::parse(claim)
            .map(LimitKey::Claim)
            .map_err(|problem| ConfigError {
                field: field.to_owned(),
                problem,
            });
    }
    if let Some(header) = key.strip_prefix("header:") {
        if header.is_empty() || !header.bytes().all(is_token_char) {
            return err(field, format!("{header:?} is not a valid header name"));
        }
        return Ok(LimitKey::Header(header.to_ascii_lowercase()));
    }
    match key {
        "ip" => Ok(LimitKey::Ip),
        "route" => Ok(LimitKey::Route),
        _ => err(
            field,
            format!("{key:?} is not one of claim:NAME, header:NAME, ip, route"),
        ),
    }
}

/// `value` of `at.name` must be between 1 and `max`.
fn within(at: &str, name: &str, value: u64, max: u64) -> Result<(), ConfigError> {
    if value == 0 || value > max {
        return err(
            format!("{at}.{name}"),
            format!("must be between 1 and {max}"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_keys_and_defaults_burst_to_requests() {
        let r = parse(
            "r",
            &json!({"key": "claim:org.id", "requests": 5, "per_s": 60}),
        )
        .unwrap();
        assert_eq!(r.key, LimitKey::Claim(ClaimPath::parse("org.id").unwrap()));
        assert_eq!(r.burst, 5);
        assert_eq!(r.max_keys, DEFAULT_MAX_KEYS);
        let r = parse(
            "r",
            &json!({"key": "header:X-Api-Key", "requests": 1, "per_s": 1, "burst": 3}),
        )
        .unwrap();
        assert_eq!(r.key, LimitKey::Header("x-api-key".into()));
        assert_eq!(r.burst, 3);
        assert_eq!(
            parse("r", &json!({"key": "ip", "requests": 1, "per_s": 1}))
                .unwrap()
                .key,
            LimitKey::Ip
        );
        assert_eq!(
            parse("r", &json!({"key": "route", "requests": 1, "per_s": 1}))
                .unwrap()
                .key,
            LimitKey::Route
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"key": "user", "requests": 1, "per_s": 1}), "r.key"),
            (json!({"key": "claim:", "requests": 1, "per_s": 1}), "r.key"),
            (
                json!({"key": "ip", "requests": 0, "per_s": 1}),
                "r.requests",
            ),
            (json!({"key": "ip", "requests": 1, "per_s": 0}), "r.per_s"),
            (
                json!({"key": "ip", "requests": 1, "per_s": 1, "burst": 0}),
                "r.burst",
            ),
            (
                json!({"key": "ip", "requests": -1, "per_s": 1}),
                "r.requests",
            ),
            (
                json!({"key": "ip", "requests": 1, "per_s": 1, "window": 2}),
                "r.window",
            ),
            (
                json!({"key": "ip", "requests": 1, "per_s": 1, "max_keys": 0}),
                "r.max_keys",
            ),
            (
                json!({"key": "ip", "requests": 1, "per_s": 1, "max_keys": 1_000_001}),
                "r.max_keys",
            ),
            (
                json!({"key": "ip", "requests": 1, "per_s": 1, "max_keys": "many"}),
                "r.max_keys",
            ),
        ];
        for (value, field) in cases {
            let e = parse("r", &value).unwrap_err();
            assert_eq!(e.field, field, "{value}: {e}");
        }
    }

    #[test]
    fn count_defaults_to_all_and_denied_needs_a_key_known_before_the_token() {
        let r = |v: Value| parse("rules[3].rate_limits[1]", &v);
        let l = r(json!({"key": "ip", "requests": 5, "per_s": 60})).unwrap();
        assert_eq!(l.count, Count::All);
        for key in ["ip", "route", "header:x-api-key"] {
            let l = r(json!({"key": key, "requests": 5, "per_s": 60, "count": "denied"})).unwrap();
            assert_eq!(l.count, Count::Denied, "{key}");
        }
        let l = r(json!({"key": "ip", "requests": 5, "per_s": 60, "count": "all"})).unwrap();
        assert_eq!(l.count, Count::All);
        for (count, problem) in [
            (json!("failures"), "not one of"),
            (json!("DENIED"), "not one of"),
            (json!(""), "not one of"),
        ] {
            let e =
                r(json!({"key": "ip", "requests": 5, "per_s": 60, "count": count})).unwrap_err();
            assert_eq!(e.field, "rules[3].rate_limits[1].count");
            assert!(e.problem.contains(problem), "{e}");
        }
        let e = r(json!({"key": "ip", "requests": 5, "per_s": 60, "count": 1})).unwrap_err();
        assert_eq!(e.field, "rules[3].rate_limits[1].count");
        let e = r(json!({"key": "claim:sub", "requests": 5, "per_s": 60, "count": "denied"}))
            .unwrap_err();
        assert_eq!(e.field, "rules[3].rate_limits[1].count");
        assert!(e.problem.contains("before the token is verified"), "{e}");
    }

    #[test]
    fn max_keys_is_optional_and_bounded() {
        let at = "rules[1].rate_limits[0]";
        let ok = |n: u64| {
            parse(
                at,
                &json!({"key": "ip", "requests": 1, "per_s": 1, "max_keys": n}),
            )
        };
        assert_eq!(ok(1).unwrap().max_keys, 1);
        assert_eq!(ok(MAX_MAX_KEYS).unwrap().max_keys, MAX_MAX_KEYS);
        let e = ok(MAX_MAX_KEYS + 1).unwrap_err();
        assert_eq!(e.field, "rules[1].rate_limits[0].max_keys");
        assert!(e.problem.contains("1000000"), "{e}");
    }
}
