//! The decision log line (SPEC "Observability"): one JSON object per decision, so that log
//! pipelines can parse it. Members are absent when unknown. It never holds a token: the path
//! is logged without its query (a query parameter may carry the token), and no header value
//! but `x-request-id` and `traceparent` is read.

use serde_json::{json, Map, Value};

use crate::core::denial::Reason;

use super::outcome::Decision;

/// Client-chosen values are cut to these lengths, so one request cannot flood the log.
const MAX_ID_CHARS: usize = 128;
const MAX_PATH_CHARS: usize = 1024;

/// What the line needs besides the decision.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub status: u32,
    /// `None` when allowed.
    pub reason: Option<Reason>,
    pub provider: Option<&'a str>,
    pub method: &'a str,
    /// `:path` as received; the query and fragment are left out.
    pub path: &'a str,
    pub request_id: Option<&'a str>,
    pub traceparent: Option<&'a str>,
}

fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

pub fn line(d: &Decision, ctx: &Context<'_>) -> String {
    let mut o = Map::new();
    let mut put = |k: &str, v: Value| {
        o.insert(k.to_owned(), v);
    };
    put(
        "decision",
        json!(if ctx.reason.is_some() {
            "deny"
        } else {
            "allow"
        }),
    );
    put("status", json!(ctx.status));
    let path = ctx.path.split(['?', '#']).next().unwrap_or_default();
    let optional: [(&str, Option<Value>); 12] = [
        ("reason", ctx.reason.map(|r| json!(r.as_str()))),
        ("detail", (!d.detail.is_empty()).then(|| json!(d.detail))),
        ("rule", d.rule.map(|r| json!(r))),
        ("provider", ctx.provider.map(|p| json!(p))),
        ("sub", d.sub.as_deref().map(|s| json!(cut(s, MAX_ID_CHARS)))),
        ("cid", d.cid.as_deref().map(|s| json!(cut(s, MAX_ID_CHARS)))),
        (
            "identity",
            (!d.identity_verified).then(|| json!("unverified")),
        ),
        ("kid", d.kid.as_deref().map(|s| json!(cut(s, MAX_ID_CHARS)))),
        ("alg", d.alg.map(|a| json!(a))),
        ("method", Some(json!(cut(ctx.method, MAX_ID_CHARS)))),
        ("path", Some(json!(cut(path, MAX_PATH_CHARS)))),
        (
            "request_id",
            ctx.request_id.map(|s| json!(cut(s, MAX_ID_CHARS))),
        ),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            put(k, v);
        }
    }
    if let Some(t) = ctx.traceparent {
        put("traceparent", json!(cut(t, MAX_ID_CHARS)));
    }
    if !d.logged_claims.is_empty() {
        let claims: Map<String, Value> = d.logged_claims.iter().cloned().collect();
        put("claims", Value::Object(claims));
    }
    Value::Object(o).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::decision::outcome::Outcome;
    use crate::core::denial::Denial;

    fn ctx<'a>(reason: Option<Reason>, path: &'a str) -> Context<'a> {
        Context {
            status: reason.map_or(200, Reason::status),
            reason,
            provider: Some("okta"),
            method: "GET",
            path,
            request_id: Some("rid-1"),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        }
    }

    #[test]
    fn a_denial_is_one_json_object_with_the_known_members() {
        let mut d =
            Decision::new(Outcome::Allow).deny(Denial::new(Reason::Expired, "exp is in the past"));
        d.rule = Some(1);
        d.sub = Some("alice\"\n{forged}".into());
        d.identity_verified = false;
        d.kid = Some("k1".into());
        d.alg = Some("RS256");
        let line = line(
            &d,
            &ctx(Some(Reason::Expired), "/x?access_token=eyJ.secret.sig"),
        );
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["status"], 401);
        assert_eq!(v["reason"], "expired");
        assert_eq!(v["rule"], 1);
        assert_eq!(v["provider"], "okta");
        assert_eq!(v["sub"], "alice\"\n{forged}");
        assert_eq!(v["identity"], "unverified");
        assert_eq!(v["kid"], "k1");
        assert_eq!(v["alg"], "RS256");
        assert_eq!(v["path"], "/x");
        assert_eq!(v["request_id"], "rid-1");
        assert!(v["traceparent"].as_str().unwrap().starts_with("00-4bf9"));
        assert!(!line.contains("secret"), "{line}");
        assert!(v.get("cid").is_none() && v.get("claims").is_none());
    }

    #[test]
    fn an_allowed_line_names_chosen_claims_and_cuts_long_values() {
        let mut d = Decision::new(Outcome::Allow);
        d.logged_claims = vec![("groups".into(), json!(["Admins"]))];
        let long = "r".repeat(10_000);
        let mut c = ctx(None, "/x");
        c.request_id = Some(&long);
        let v: Value = serde_json::from_str(&line(&d, &c)).unwrap();
        assert_eq!(v["decision"], "allow");
        assert_eq!(v["status"], 200);
        assert!(v.get("reason").is_none());
        assert_eq!(v["claims"]["groups"][0], "Admins");
        assert_eq!(v["request_id"].as_str().unwrap().len(), MAX_ID_CHARS);
    }
}
