//! `okta-jwt explain`: runs the filter's own decision (`decision::pipeline::decide`, the code
//! the filter runs) on one request, with the key sets given as files, and shows every check in
//! order, the answer and what would go upstream. Signatures are checked by the pure-Rust
//! verifier; the filter's two backends agree on every test vector and integration test.

use crate::core::introspection::answers::NoAnswers;
use serde_json::{json, Map, Value};

use crate::core::config::compile;
use crate::core::config::model::Config;
use crate::core::crypto::pure::PureVerifier;
use crate::core::decision::env::{Env, Incoming};
use crate::core::decision::outcome::{Decision, HeaderOp, Outcome as Verdict};
use crate::core::decision::pipeline;
use crate::core::decision::response;
use crate::core::denial::Reason;
use crate::core::keys::jwk_set::{self, KeySet};
use crate::core::keys::source::JwksSource;
use crate::core::keys::state::{KeySource, KeyState};
use crate::core::ratelimit::charge::ensure_records;
use crate::core::ratelimit::hash_key::KeyHasher;
use crate::core::request::extract::Source;
use crate::core::store::MemoryStore;

use super::args::Explain;
use super::{read, Outcome};

/// Each provider's key set: inline, from a file, or none (as if never fetched: 503).
struct Files(Vec<Option<KeySet>>);

impl KeySource for Files {
    fn keys(&self, provider: usize) -> KeyState<'_> {
        match self.0.get(provider) {
            Some(Some(set)) => KeyState::Ready(set),
            _ => KeyState::Unavailable,
        }
    }

    /// The files are all there is: an unknown kid is answered at once.
    fn unknown_kid_may_wait(&self, _provider: usize) -> bool {
        false
    }
}

pub fn run(a: &Explain) -> Outcome {
    match prepare(a) {
        Ok((config, keys, token)) => decide(a, &config, &keys, &token),
        Err(o) => o,
    }
}

fn prepare(a: &Explain) -> Result<(Config, Files, String), Outcome> {
    let bytes = read("config", &a.config)?;
    let config = compile::parse(&bytes)
        .map_err(|e| Outcome::input_error(format!("config {}: {e}", a.config)))?;
    let keys = key_sets(&config, &a.jwks)?;
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => t.trim().to_owned(),
        (None, Some(f)) => String::from_utf8(read("token file", f)?)
            .map_err(|_| Outcome::input_error(format!("token file {f}: not UTF-8")))?
            .trim()
            .to_owned(),
        (None, None) => return Err(Outcome::input_error("no token given")),
    };
    Ok((config, keys, token))
}

fn key_sets(config: &Config, files: &[(Option<String>, String)]) -> Result<Files, Outcome> {
    let mut sets: Vec<Option<KeySet>> = config
        .providers
        .iter()
        .map(|p| match &p.jwks.source {
            JwksSource::Inline(set) => Some(set.clone()),
            _ => None,
        })
        .collect();
    for (name, file) in files {
        let parsed = jwk_set::parse(&read("jwks", file)?)
            .map_err(|e| Outcome::input_error(format!("jwks {file}: not a usable JWK Set: {e}")))?;
        for (slot, p) in sets.iter_mut().zip(&config.providers) {
            let remote = !matches!(p.jwks.source, JwksSource::Inline(_));
            let chosen = name.as_deref().is_none_or(|n| n == p.name);
            if remote && chosen {
                *slot = Some(parsed.set.clone());
            }
        }
        if let Some(n) = name
            .as_deref()
            .filter(|n| !config.providers.iter().any(|p| p.name == *n))
        {
            return Err(Outcome::input_error(format!(
                "--jwks {n}=...: no provider {n:?}"
            )));
        }
    }
    Ok(Files(sets))
}

/// The request, with the token where the first provider reads it first, unless `--path` or a
/// `--header` carries it already.
fn request(config: &Config, a: &Explain, token: &str) -> (String, Vec<(String, String)>) {
    let mut path = a.path.clone();
    let mut headers = a.headers.clone();
    let placed = !token.is_empty()
        && (path.contains(token) || headers.iter().any(|(_, v)| v.contains(token)));
    if placed {
        return (path, headers);
    }
    if let Some(scheme) = &a.scheme {
        headers.push(("authorization".into(), format!("{scheme} {token}")));
        return (path, headers);
    }
    match config.providers.first().and_then(|p| p.from.first()) {
        Some(Source::Query(name)) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            path = format!("{path}{sep}{name}={token}");
        }
        Some(Source::Cookie(name)) => headers.push(("cookie".into(), format!("{name}={token}"))),
        Some(Source::Header { name, prefix }) => {
            headers.push((name.clone(), format!("{prefix}{token}")))
        }
        None => {}
    }
    (path, headers)
}

fn decide(a: &Explain, config: &Config, keys: &Files, token: &str) -> Outcome {
    let (path, headers) = request(config, a, token);
    let now = a.now.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    // A fresh process: every bucket full.
    let store = MemoryStore::default();
    for (i, r) in config.rules.iter().enumerate() {
        let _ = ensure_records(&store, i, &r.rate_limits);
    }
    let mut env = Env {
        config,
        cache: None,
        keys,
        // explain makes no network calls: an opaque token (or `tokens: "all"`) is reported
        // as the filter answers when its introspection endpoint cannot be reached.
        answers: &NoAnswers,
        verifier: &PureVerifier,
        now,
        now_ms: now.saturating_mul(1000),
        store: Some(&store),
        limit_hasher: KeyHasher::new(0, 0),
        trace: true,
    };
    let incoming = Incoming {
        method: &a.method,
        path: &path,
        headers: &headers,
        client_ip: a.client_ip.as_deref(),
        // No connection: no client certificate.
        client_cert: crate::core::request::view::ClientCert::Absent,
    };
    let d = pipeline::decide(&mut env, &incoming);
    let d = pipeline::charge_failure(&env, &incoming, d);
    let report = report(config, &d);
    let allowed = report.get("allowed") == Some(&json!(true));
    let stdout = match a.json {
        true => format!("{report}\n"),
        false => text(&report),
    };
    Outcome::ok(if allowed { 0 } else { 1 }, stdout)
}

/// SPEC's `--json` object.
pub fn report(config: &Config, d: &Decision) -> Value {
    let provider = d
        .provider
        .and_then(|p| config.providers.get(p))
        .map(|p| p.name.clone());
    let (reason, scope) = match &d.outcome {
        Verdict::Allow => (None, None),
        Verdict::Deny { reason, scope } => (Some(*reason), scope.as_deref()),
        // The files are all there is; a wait can only be for keys that never come.
        Verdict::Wait { .. } => (Some(Reason::JwksUnavailable), None),
        Verdict::Introspect { .. } => (Some(Reason::IntrospectionUnavailable), None),
        // explain has no connection, so it never asks for a certificate; total all the same.
        Verdict::NeedClientCert => (Some(Reason::CertificateMismatch), None),
    };
    let (status, www) = match reason {
        None => (200, None),
        Some(r) => {
            let resp = response::denial(
                response::Challenge::of(config, d.rule),
                r,
                scope,
                d.retry_after_s.unwrap_or(1),
                d.rate.as_ref(),
            );
            let www = resp
                .headers
                .iter()
                .find(|(n, _)| *n == "www-authenticate")
                .map(|(_, v)| v.clone());
            (resp.status, www)
        }
    };
    let mut upstream = Map::new();
    if reason.is_none() {
        for op in &d.ops {
            match op {
                HeaderOp::Set(n, v) => upstream.insert(n.clone(), json!(v)),
                HeaderOp::Remove(n) => upstream.insert(n.clone(), Value::Null),
            };
        }
        if let Some(p) = &d.path {
            upstream.insert(":path".into(), json!(p));
        }
    }
    json!({
        "allowed": reason.is_none(),
        "status": status,
        "reason": reason.map(Reason::as_str),
        "rule": d.rule,
        "provider": provider,
        "checks": d.checks.clone().unwrap_or_default(),
        "www_authenticate": www,
        "upstream_headers": upstream,
    })
}

fn text(r: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let verdict = if r["allowed"] == json!(true) {
        "allow"
    } else {
        "deny"
    };
    out.push_str(&format!("decision: {verdict} {}", r["status"]));
    if let Some(reason) = r["reason"].as_str() {
        out.push_str(&format!(" {reason}"));
    }
    out.push('\n');
    let rule = r["rule"]
        .as_u64()
        .map_or("none matched (auth required)".into(), |i| {
            format!("rules[{i}]")
        });
    out.push_str(&format!(
        "rule: {rule}\nprovider: {}\nchecks:\n",
        s(&r["provider"])
    ));
    for c in r["checks"].as_array().into_iter().flatten() {
        let mark = if c["ok"] == json!(true) {
            "ok  "
        } else {
            "FAIL"
        };
        let detail = c["detail"]
            .as_str()
            .map(|d| format!("  {d}"))
            .unwrap_or_default();
        out.push_str(&format!("  {mark} {}{detail}\n", s(&c["name"])));
    }
    if let Some(w) = r["www_authenticate"].as_str() {
        out.push_str(&format!("www-authenticate: {w}\n"));
    }
    if let Some(h) = r["upstream_headers"].as_object().filter(|h| !h.is_empty()) {
        out.push_str("upstream headers:\n");
        for (name, v) in h {
            let v = v.as_str().map_or("(removed)".into(), str::to_owned);
            out.push_str(&format!("  {name}: {v}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_keys;

    /// A file under the system temp dir, unique per test and process.
    fn file(name: &str, content: &str) -> String {
        let dir = std::env::temp_dir().join(format!("okta-jwt-explain-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn config(name: &str, jwks: Value) -> String {
        let c = json!({
            "providers": {"okta": {"issuer": "joe", "audiences": ["api://default"], "jwks": jwks}},
            "rules": [{"match": {"prefix": "/open"}, "auth": "none"}],
            "realm": "api"
        });
        file(name, &c.to_string())
    }

    fn explain(config: String, token: &str, extra: &[&str]) -> Outcome {
        let mut args = vec![
            "explain".to_string(),
            "--config".into(),
            config,
            "--token".into(),
            token.into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        super::super::run(args)
    }

    #[test]
    fn runs_the_filters_checks_in_order_and_stops_at_the_first_failure() {
        let jwk: Value = serde_json::from_str(test_keys::RFC7515_A2_JWK).unwrap();
        let c = config("inline.json", json!({"inline": {"keys": [jwk]}}));
        // RFC 7515 A.2 is a real RS256 token of issuer "joe", with no `aud`.
        let o = explain(
            c,
            test_keys::RFC7515_A2_TOKEN,
            &["--json", "--path", "/x", "--now", "1300819000"],
        );
        assert_eq!(o.code, 1, "{o:?}");
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(
            (v["allowed"].clone(), v["status"].clone()),
            (json!(false), json!(401))
        );
        assert_eq!(v["reason"], "wrong_audience");
        assert_eq!(v["rule"], Value::Null);
        assert_eq!(v["provider"], "okta");
        let names: Vec<&str> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "path",
                "rule",
                "token",
                "jws",
                "provider",
                "algorithm",
                "claims"
            ]
        );
        assert_eq!(v["checks"][6]["ok"], false);
        assert!(v["www_authenticate"]
            .as_str()
            .unwrap()
            .contains("invalid_token"));
        assert_eq!(v["upstream_headers"], json!({}));
    }

    #[test]
    fn an_open_rule_is_allowed_and_a_non_jwt_is_decided_like_the_filter() {
        let c = config(
            "remote.json",
            json!({"uri": "https://idp/keys", "cluster": "idp"}),
        );
        let o = explain(c.clone(), "x", &["--path", "/open"]);
        assert_eq!(o.code, 0, "{o:?}");
        assert!(o.stdout.starts_with("decision: allow 200"), "{}", o.stdout);
        let o = explain(c, "not-a-jwt", &["--json"]);
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!((o.code, v["reason"].clone()), (1, json!("malformed")));
    }

    #[test]
    fn bad_input_is_one_line_and_exit_2() {
        let c = config(
            "ok.json",
            json!({"uri": "https://idp/keys", "cluster": "idp"}),
        );
        let not_a_set = file("not-a-set.json", "{\"kids\": []}");
        let cases = [
            explain("/nonexistent/config.json".into(), "t", &[]),
            explain(file("bad.json", "{}"), "t", &[]),
            explain(c.clone(), "t", &["--jwks", &not_a_set]),
            explain(c.clone(), "t", &["--jwks", "/nonexistent/keys.json"]),
            explain(c, "t", &["--jwks", &format!("nobody={not_a_set}")]),
        ];
        for o in cases {
            assert_eq!(o.code, 2, "{o:?}");
            assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
        }
    }
}
