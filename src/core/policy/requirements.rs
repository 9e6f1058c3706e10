//! Per-rule authorization on a verified token: scopes, then claim requirements.

use serde_json::{Map, Value};

use crate::core::denial::Reason;
use crate::core::token::claim_path::ClaimPath;
use crate::core::token::scopes;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes {
    pub all: Vec<String>,
    pub any: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimCheck {
    Equals(Value),
    In(Vec<Value>),
    Contains(Value),
    EqualsParam(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequirement {
    pub claim: ClaimPath,
    pub check: ClaimCheck,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The scopes to name in `WWW-Authenticate`, space-separated.
    Scope(String),
    /// The dotted name of the claim requirement that failed, for the log.
    Claim(String),
}

impl Denied {
    pub fn reason(&self) -> Reason {
        match self {
            Denied::Scope(_) => Reason::InsufficientScope,
            Denied::Claim(_) => Reason::ClaimMismatch,
        }
    }
}

pub fn check(
    s: &Scopes,
    requirements: &[ClaimRequirement],
    claims: &Map<String, Value>,
    params: &[(&str, &str)],
) -> Result<(), Denied> {
    if !s.all.is_empty() || !s.any.is_empty() {
        let granted = scopes::granted(claims);
        let has = |want: &String| granted.contains(&want.as_str());
        if !s.all.iter().all(has) {
            return Err(Denied::Scope(s.all.join(" ")));
        }
        if !s.any.is_empty() && !s.any.iter().any(has) {
            return Err(Denied::Scope(s.any.join(" ")));
        }
    }
    for req in requirements {
        let value = req.claim.lookup(claims);
        let ok = match (&req.check, value) {
            (_, None) => false,
            (ClaimCheck::Equals(want), Some(v)) => v == want,
            (ClaimCheck::In(list), Some(v)) => list.contains(v),
            (ClaimCheck::Contains(want), Some(Value::Array(items))) => items.contains(want),
            (ClaimCheck::Contains(Value::String(want)), Some(Value::String(s))) => {
                s.split(' ').any(|part| part == want)
            }
            (ClaimCheck::Contains(_), Some(_)) => false,
            (ClaimCheck::EqualsParam(name), Some(v)) => {
                let param = params.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
                match (param, v) {
                    (Some(p), Value::String(s)) => p == s,
                    (Some(p), Value::Number(n)) => p == n.to_string(),
                    _ => false,
                }
            }
        };
        if !ok {
            return Err(Denied::Claim(req.claim.as_dotted()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::compile as config;
    use crate::core::config::model::Rule;
    use serde_json::json;

    fn rule(r: Value) -> Rule {
        let c = json!({
            "providers": {"okta": {"issuer": "https://idp/o", "audiences": ["a"],
                                   "jwks": {"uri": "https://idp/k", "cluster": "c"}}},
            "rules": [r]
        });
        config::parse(c.to_string().as_bytes())
            .unwrap()
            .rules
            .remove(0)
    }

    fn check_v(r: &Rule, claims: Value, params: &[(&str, &str)]) -> Result<(), Denied> {
        check(&r.scopes, &r.claims, claims.as_object().unwrap(), params)
    }

    #[test]
    fn scopes_all_and_any() {
        let r =
            rule(json!({"scopes": {"all": ["orders:write", "orders:read"], "any": ["a", "b"]}}));
        assert_eq!(
            check_v(
                &r,
                json!({"scp": ["orders:write", "orders:read", "b"]}),
                &[]
            ),
            Ok(())
        );
        assert_eq!(
            check_v(&r, json!({"scp": ["orders:read", "a"]}), &[]),
            Err(Denied::Scope("orders:write orders:read".into()))
        );
        assert_eq!(
            check_v(
                &r,
                json!({"scp": ["orders:read"], "scope": "orders:write"}),
                &[]
            ),
            Err(Denied::Scope("a b".into()))
        );
    }

    #[test]
    fn claim_checks() {
        let r = rule(json!({"match": {"template": "/users/{id}"}, "claims": [
            {"claim": "groups", "contains": "Admins"},
            {"claim": "org.tier", "in": ["gold", "silver"]},
            {"claim": "ver", "equals": 1},
            {"claim": "uid", "equals_param": "id"}
        ]}));
        let good = json!({"groups": ["Everyone", "Admins"], "org": {"tier": "gold"}, "ver": 1, "uid": "00u1"});
        assert_eq!(check_v(&r, good.clone(), &[("id", "00u1")]), Ok(()));
        assert_eq!(
            check_v(&r, good.clone(), &[("id", "00u2")]),
            Err(Denied::Claim("uid".into()))
        );
        let mut g = good.clone();
        g["groups"] = json!("Everyone Admins");
        assert_eq!(check_v(&r, g, &[("id", "00u1")]), Ok(()));
        let mut g = good.clone();
        g["groups"] = json!(["Administrators"]);
        assert_eq!(
            check_v(&r, g, &[("id", "00u1")]),
            Err(Denied::Claim("groups".into()))
        );
        let mut g = good.clone();
        g["org"]["tier"] = json!("bronze");
        assert_eq!(
            check_v(&r, g, &[("id", "00u1")]),
            Err(Denied::Claim("org.tier".into()))
        );
        let mut g = good.clone();
        g["ver"] = json!("1");
        assert_eq!(
            check_v(&r, g, &[("id", "00u1")]),
            Err(Denied::Claim("ver".into()))
        );
        let mut g = good;
        g["uid"] = json!(7);
        assert_eq!(check_v(&r, g, &[("id", "7")]), Ok(()));
    }
}
