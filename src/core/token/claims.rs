//! Registered-claim checks (RFC 7519 §4.1) against one provider: exp, nbf, iat, lifetime,
//! audience and client id. The issuer was already matched when the provider was chosen.

use serde_json::{Map, Value};

use crate::core::denial::{Denial, Reason};

fn fail<T>(reason: Reason, detail: &'static str) -> Result<T, Denial> {
    Err(Denial::new(reason, detail))
}

/// A NumericDate: a JSON number. Strings and other types are refused (RFC 7519 §2).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => Ok(Some(v)),
            _ => fail(Reason::Malformed, "time claim is not a finite number"),
        },
        Some(_) => fail(Reason::Malformed, "time claim is not a number"),
    }
}

/// The token's client id: Okta's `cid`, RFC 9068's `client_id`, or OIDC's `azp`.
pub fn client_id(claims: &Map<String, Value>) -> Option<&str> {
    ["cid", "client_id", "azp"]
        .iter()
        .find_map(|c| claims.get(*c).and_then(Value::as_str))
}

/// What a provider expects of a token's registered claims.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub audiences: &'a [String],
    pub clock_skew_s: u64,
    pub max_lifetime_s: Option<u64>,
    pub client_ids: Option<&'a [String]>,
    /// A missing `aud` passes (introspection answers: RFC 7662 makes it optional).
    pub audience_optional: bool,
    /// A missing `exp` passes (introspection with `require_exp: false`).
    pub exp_optional: bool,
}

pub fn check(p: &Expected<'_>, claims: &Map<String, Value>, now: u64) -> Result<(), Denial> {
    let now = now as f64;
    let skew = p.clock_skew_s as f64;
    let exp = numeric_date(claims, "exp")?;
    match exp {
        None if !p.exp_optional => return fail(Reason::MissingExp, "exp is missing"),
        Some(exp) if now > exp + skew => return fail(Reason::Expired, "exp is in the past"),
        _ => {}
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if nbf > now + skew {
            return fail(Reason::NotYetValid, "nbf is in the future");
        }
    }
    let iat = numeric_date(claims, "iat")?;
    if let Some(iat) = iat {
        if iat > now + skew {
            return fail(Reason::IssuedInFuture, "iat is in the future");
        }
    }
    if let Some(max) = p.max_lifetime_s {
        match iat {
            // Without iat the lifetime cannot be bounded, so the limit fails closed.
            None => {
                return fail(
                    Reason::LifetimeExceeded,
                    "iat is missing and max_lifetime_s is set",
                )
            }
            Some(iat) if exp.is_none_or(|exp| exp - iat > max as f64) => {
                return fail(Reason::LifetimeExceeded, "exp - iat exceeds max_lifetime_s")
            }
            Some(_) => {}
        }
    }
    let aud_ok = match claims.get("aud") {
        None => p.audience_optional,
        Some(Value::String(a)) => p.audiences.iter().any(|x| x == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| p.audiences.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        return fail(
            Reason::WrongAudience,
            "aud has none of the configured audiences",
        );
    }
    if let Some(allowed) = p.client_ids {
        match client_id(claims) {
            Some(c) if allowed.iter().any(|a| a == c) => {}
            Some(_) => return fail(Reason::WrongClient, "client id is not allowed"),
            None => return fail(Reason::WrongClient, "token has no cid, client_id or azp"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::compile as config;
    use crate::core::config::model::Provider;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn provider(extra: Value) -> Provider {
        let mut p = json!({
            "issuer": "https://idp/oauth2/default",
            "audiences": ["api://default", "api://other"],
            "jwks": {"uri": "https://idp/keys", "cluster": "idp"}
        });
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        let c = config::parse(json!({"providers": {"okta": p}}).to_string().as_bytes()).unwrap();
        c.providers[0].clone()
    }

    fn claims(v: Value) -> Map<String, Value> {
        let mut base =
            json!({"aud": "api://default", "iat": NOW - 10, "exp": NOW + 3600, "cid": "0oa1"});
        for (k, val) in v.as_object().unwrap() {
            if val.is_null() {
                base.as_object_mut().unwrap().remove(k);
            } else {
                base[k] = val.clone();
            }
        }
        base.as_object().unwrap().clone()
    }

    fn reason(p: &Provider, c: Value) -> Option<Reason> {
        check(&p.expected(), &claims(c), NOW)
            .err()
            .map(|e| e.reason)
    }

    #[test]
    fn valid_claims_pass() {
        let p = provider(json!({}));
        assert_eq!(reason(&p, json!({})), None);
        assert_eq!(reason(&p, json!({"aud": ["x", "api://other"]})), None);
        assert_eq!(reason(&p, json!({"iat": null, "nbf": NOW})), None);
        assert_eq!(reason(&p, json!({"exp": (NOW + 1) as f64 + 0.5})), None);
    }

    #[test]
    fn time_claims_use_the_skew() {
        let p = provider(json!({"clock_skew_s": 60}));
        assert_eq!(reason(&p, json!({"exp": NOW - 59})), None);
        assert_eq!(reason(&p, json!({"exp": NOW - 61})), Some(Reason::Expired));
        assert_eq!(reason(&p, json!({"exp": null})), Some(Reason::MissingExp));
        assert_eq!(
            reason(&p, json!({"exp": "9999999999"})),
            Some(Reason::Malformed)
        );
        assert_eq!(reason(&p, json!({"nbf": NOW + 59})), None);
        assert_eq!(
            reason(&p, json!({"nbf": NOW + 61})),
            Some(Reason::NotYetValid)
        );
        assert_eq!(reason(&p, json!({"nbf": true})), Some(Reason::Malformed));
        assert_eq!(
            reason(&p, json!({"iat": NOW + 61})),
            Some(Reason::IssuedInFuture)
        );
        assert_eq!(reason(&p, json!({"iat": [1]})), Some(Reason::Malformed));
    }

    #[test]
    fn lifetime_is_bounded_when_configured() {
        let p = provider(json!({"max_lifetime_s": 3600}));
        assert_eq!(reason(&p, json!({"iat": NOW, "exp": NOW + 3600})), None);
        assert_eq!(
            reason(&p, json!({"iat": NOW, "exp": NOW + 3601})),
            Some(Reason::LifetimeExceeded)
        );
        assert_eq!(
            reason(&p, json!({"iat": null})),
            Some(Reason::LifetimeExceeded)
        );
    }

    #[test]
    fn audience_and_client() {
        let p = provider(json!({"client_ids": ["0oa1", "0oa2"]}));
        assert_eq!(
            reason(&p, json!({"aud": "api://nope"})),
            Some(Reason::WrongAudience)
        );
        assert_eq!(reason(&p, json!({"aud": []})), Some(Reason::WrongAudience));
        assert_eq!(
            reason(&p, json!({"aud": null})),
            Some(Reason::WrongAudience)
        );
        assert_eq!(reason(&p, json!({"aud": 5})), Some(Reason::WrongAudience));
        assert_eq!(
            reason(&p, json!({"cid": "0oa3"})),
            Some(Reason::WrongClient)
        );
        assert_eq!(reason(&p, json!({"cid": null})), Some(Reason::WrongClient));
        assert_eq!(reason(&p, json!({"cid": null, "client_id": "0oa2"})), None);
        assert_eq!(reason(&p, json!({"cid": null, "azp": "0oa1"})), None);
    }
}
