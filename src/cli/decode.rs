//! `okta-jwt decode TOKEN`: the header and claims as JSON, with `exp`, `iat` and `nbf` also as
//! RFC 3339 times. It verifies nothing, so its output proves nothing about the token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};

use super::time::rfc3339;
use super::Outcome;

pub fn run(token: &str) -> Outcome {
    match decode(token.trim()) {
        Ok(v) => Outcome::ok(
            0,
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()),
        ),
        Err(why) => Outcome::input_error(format!("not a JWT: {why}")),
    }
}

fn segment(s: Option<&str>, what: &str) -> Result<Map<String, Value>, String> {
    let s = s.ok_or(format!("no {what} segment"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("the {what} is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| format!("the {what} is not a JSON object"))
}

fn decode(token: &str) -> Result<Value, String> {
    let mut parts = token.split('.');
    let header = segment(parts.next(), "header")?;
    let claims = segment(parts.next(), "payload")?;
    if parts.next().is_none() || parts.next().is_some() {
        return Err("not three dot-separated segments".into());
    }
    let mut times = Map::new();
    for name in ["exp", "iat", "nbf"] {
        if let Some(t) = claims.get(name).and_then(Value::as_i64) {
            times.insert(name.into(), json!(rfc3339(t)));
        }
    }
    Ok(json!({"header": header, "claims": claims, "times": times, "verified": false}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn decodes_without_verifying() {
        let t = format!(
            "{}.{}.c2ln",
            b(json!({"alg": "RS256", "kid": "k1"})),
            b(json!({"sub": "a", "exp": 1_700_000_000}))
        );
        let o = run(&t);
        assert_eq!(o.code, 0);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["header"]["kid"], "k1");
        assert_eq!(v["claims"]["sub"], "a");
        assert_eq!(v["times"]["exp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["verified"], false);
    }

    #[test]
    fn not_a_jwt_is_one_line_and_exit_2() {
        for bad in ["", "abc", "a.b", "a.b.c.d", "!!.e30.x", "e30.bm90anNvbg.x"] {
            let o = run(bad);
            assert_eq!(o.code, 2, "{bad}");
            assert_eq!(o.stderr.lines().count(), 1, "{bad}: {}", o.stderr);
            assert!(o.stdout.is_empty());
        }
    }
}
