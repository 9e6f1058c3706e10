//! The filter's JSON configuration (SPEC.md): parsing, validation and compilation into the
//! shapes the request path uses. Every error names the field it is about.

use crate::core::config::error::{err, ConfigError};
use crate::core::config::introspection::{process_env, EnvLookup};
use crate::core::config::model::{Auth, Config, LogConfig, Provider, Rule, SignatureBackend};
use crate::core::config::provider::compile_provider;
use crate::core::config::raw::{RawClientIp, RawConfig, RawLog};
use crate::core::config::rule::{compile_rule, sources_of};
use crate::core::policy::requirements::Scopes;
use crate::core::request::matcher::Match;
use crate::core::request::path::PathParameters;
use crate::core::token::cache as token_cache;
use crate::core::token::claim_path::ClaimPath;

/// A configuration larger than this is refused before parsing.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    parse_with_env(json, &process_env)
}

/// `parse`, with the environment that `{"env": NAME}` secrets are read from.
pub fn parse_with_env(json: &[u8], env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    compile_all(deserialize(json)?, env).map_err(|mut errors| errors.remove(0))
}

fn deserialize(json: &[u8]) -> Result<RawConfig, ConfigError> {
    if json.len() > MAX_CONFIG_BYTES {
        return err(
            "",
            format!("configuration exceeds {MAX_CONFIG_BYTES} bytes"),
        );
    }
    let de = &mut serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            field: if path == "." { String::new() } else { path },
            problem: e.into_inner().to_string(),
        }
    })
}

/// Like `parse`, but reports the first error of each provider, each rule and the top level,
/// for `okta-jwt validate`.
pub fn parse_all(json: &[u8]) -> Result<Config, Vec<ConfigError>> {
    let raw = deserialize(json).map_err(|e| vec![e])?;
    compile_all(raw, &process_env)
}

fn compile_all(mut raw: RawConfig, env: EnvLookup<'_>) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Vec::new();
    if raw.providers.is_empty() {
        errors.push(ConfigError {
            field: "providers".into(),
            problem: "at least one provider is required".into(),
        });
    }
    let names: Vec<String> = raw.providers.keys().cloned().collect();
    let mut providers = Vec::with_capacity(raw.providers.len());
    for (name, p) in std::mem::take(&mut raw.providers) {
        compile_provider(name, p, env).map_or_else(|e| errors.push(e), |p| providers.push(p));
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in std::mem::take(&mut raw.rules).into_iter().enumerate() {
        match compile_rule(i, r, &names) {
            Ok(mut rule) => {
                rule.sources = sources_of(&providers, &rule.providers);
                rules.push(rule);
            }
            Err(e) => errors.push(e),
        }
    }
    match (top_level(raw, providers, rules), errors.is_empty()) {
        (Ok(config), true) => Ok(config),
        (Ok(_), false) => Err(errors),
        (Err(e), _) => {
            errors.push(e);
            Err(errors)
        }
    }
}

/// The top-level fields, around the compiled providers and rules.
fn top_level(
    raw: RawConfig,
    providers: Vec<Provider>,
    rules: Vec<Rule>,
) -> Result<Config, ConfigError> {
    if let Some(realm) = &raw.realm {
        if realm.is_empty()
            || !realm
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return err(
                "realm",
                "must be non-empty printable ASCII without quotes or backslashes",
            );
        }
    }
    Ok(Config {
        introspects: providers.iter().any(|p| p.introspection.is_some()),
        protected_headers: protected_headers(&providers),
        default_rule: default_rule(&providers),
        providers,
        rules,
        realm: raw.realm,
        bypass_cors_preflight: raw.bypass_cors_preflight.unwrap_or(true),
        path_parameters: path_parameters(raw.path_parameters.as_deref())?,
        log: log_config(raw.log)?,
        signature_backend: signature_backend(raw.signature_backend.as_deref())?,
        token_cache_entries: token_cache_entries(raw.token_cache_entries)?,
        xff_trusted_hops: client_ip(raw.client_ip)?,
    })
}

/// At most this many claims in each decision log line.
const MAX_LOG_CLAIMS: usize = 16;

fn log_config(raw: Option<RawLog>) -> Result<LogConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(LogConfig::default());
    };
    let names = raw.claims.unwrap_or_default();
    if names.len() > MAX_LOG_CLAIMS {
        return err("log.claims", format!("at most {MAX_LOG_CLAIMS} claims"));
    }
    let mut claims = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        claims.push(ClaimPath::parse(name).map_err(|problem| ConfigError {
            field: format!("log.claims[{i}]"),
            problem,
        })?);
    }
    Ok(LogConfig {
        allowed: raw.allowed.unwrap_or(false),
        claims,
    })
}

fn path_parameters(raw: Option<&str>) -> Result<PathParameters, ConfigError> {
    match raw {
        None | Some("reject") => Ok(PathParameters::Reject),
        Some("strip") => Ok(PathParameters::Strip),
        Some(other) => err(
            "path_parameters",
            format!("{other:?} is not one of \"reject\", \"strip\""),
        ),
    }
}

fn signature_backend(raw: Option<&str>) -> Result<SignatureBackend, ConfigError> {
    match raw {
        None | Some("auto") => Ok(SignatureBackend::Auto),
        Some("host") => Ok(SignatureBackend::Host),
        Some("pure") => Ok(SignatureBackend::Pure),
        Some(other) => err(
            "signature_backend",
            format!("{other:?} is not one of \"auto\", \"host\", \"pure\""),
        ),
    }
}

/// At most this many proxies in front of Envoy: more is a configuration mistake.
pub const MAX_XFF_TRUSTED_HOPS: u32 = 32;

fn client_ip(raw: Option<RawClientIp>) -> Result<Option<u32>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let hops = raw.xff_trusted_hops;
    if hops == 0 || hops > MAX_XFF_TRUSTED_HOPS {
        return err(
            "client_ip.xff_trusted_hops",
            format!("must be between 1 and {MAX_XFF_TRUSTED_HOPS}"),
        );
    }
    Ok(Some(hops))
}

fn token_cache_entries(raw: Option<usize>) -> Result<usize, ConfigError> {
    let entries = raw.unwrap_or(token_cache::DEFAULT_ENTRIES);
    if entries > token_cache::MAX_ENTRIES {
        return err(
            "token_cache_entries",
            format!("must be at most {}", token_cache::MAX_ENTRIES),
        );
    }
    Ok(entries)
}

/// Every claim and payload header of every provider, once each.
fn protected_headers(providers: &[Provider]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in providers {
        let names = p
            .claims_to_headers
            .iter()
            .map(|c| &c.header)
            .chain(p.payload_header.iter());
        for h in names {
            if !out.contains(h) {
                out.push(h.clone());
            }
        }
    }
    out
}

/// `auth: required`, any provider, nothing more.
fn default_rule(providers: &[Provider]) -> Rule {
    let all: Vec<usize> = (0..providers.len()).collect();
    Rule {
        matcher: Match::default(),
        auth: Auth::Required,
        sources: sources_of(providers, &all),
        providers: all,
        scopes: Scopes::default(),
        claims: Vec::new(),
        rate_limits: Vec::new(),
        ip: None,
    }
}

/// Used by tests of other modules: a set of unique header names is easier to assert on.
#[cfg(test)]
pub(crate) fn header_set(c: &Config) -> std::collections::HashSet<String> {
    c.protected_headers.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::rule::MAX_IP_RANGES;
    use crate::core::crypto::alg::Alg;
    use crate::core::keys::source::authority_of;
    use crate::core::request::extract::Source;
    use serde_json::json;
    use serde_json::Value;

    fn base() -> Value {
        json!({
            "providers": {
                "okta": {
                    "issuer": "https://dev-1.okta.com/oauth2/default",
                    "audiences": ["api://default"],
                    "jwks": {"uri": "https://dev-1.okta.com/oauth2/default/v1/keys", "cluster": "okta"},
                    "claims_to_headers": [{"claim": "sub", "header": "X-Jwt-Sub"}],
                    "payload_header": "x-jwt-payload"
                }
            },
            "rules": [
                {"match": {"prefix": "/healthz"}, "auth": "none"},
                {"match": {"template": "/users/{id}/profile", "methods": ["GET"]},
                 "scopes": {"all": ["profile"]},
                 "claims": [{"claim": "uid", "equals_param": "id"}],
                 "rate_limits": [{"key": "claim:sub", "requests": 10, "per_s": 60}]}
            ],
            "realm": "api"
        })
    }

    fn parse_value(v: &Value) -> Result<Config, ConfigError> {
        parse(v.to_string().as_bytes())
    }

    fn expect_err(v: Value, field: &str, problem_part: &str) {
        let e = parse_value(&v).expect_err("config should be refused");
        assert_eq!(e.field, field, "{e}");
        assert!(e.problem.contains(problem_part), "{e}");
    }

    #[test]
    fn spec_example_compiles_with_defaults() {
        let c = parse_value(&base()).unwrap();
        let p = &c.providers[0];
        assert_eq!(p.clock_skew_s, 60);
        assert!(p.algorithms.contains(Alg::RS256));
        assert!(!p.algorithms.contains(Alg::ES256));
        assert_eq!(p.jwks.timeout_ms, 5000);
        assert_eq!(p.jwks.cache_duration_s, 300);
        assert_eq!(p.jwks.min_refetch_interval_s, 30);
        assert_eq!(
            p.from,
            vec![Source::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into()
            }]
        );
        assert!(!p.forward_token);
        assert!(c.bypass_cors_preflight);
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].auth, Auth::None);
        assert_eq!(c.rules[1].providers, vec![0]);
        assert_eq!(
            header_set(&c),
            ["x-jwt-sub", "x-jwt-payload"]
                .into_iter()
                .map(String::from)
                .collect()
        );
    }

    #[test]
    fn the_spec_example_parses() {
        // Copied verbatim from SPEC.md's "Shape" section.
        let example = r#"
{
  "providers": {
    "okta": {
      "issuer": "https://dev-123456.okta.com/oauth2/default",
      "audiences": ["api://default"],
      "jwks": { "uri": "https://dev-123456.okta.com/oauth2/default/v1/keys",
                "cluster": "okta_idp", "timeout_ms": 5000,
                "cache_duration_s": 300, "min_refetch_interval_s": 30 },
      "algorithms": ["RS256"],
      "clock_skew_s": 60,
      "max_lifetime_s": 86400,
      "client_ids": ["0oa1example"],
      "from": [ { "header": "authorization", "prefix": "Bearer " },
                { "query": "access_token" }, { "cookie": "access_token" } ],
      "forward_token": false,
      "claims_to_headers": [ { "claim": "sub", "header": "x-jwt-sub" },
                             { "claim": "scp", "header": "x-jwt-scopes" } ],
      "payload_header": "x-jwt-payload"
    }
  },
  "rules": [
    { "match": { "prefix": "/healthz" }, "auth": "none" },
    { "match": { "prefix": "/api/orders", "methods": ["POST", "PUT"] },
      "providers": ["okta"],
      "scopes": { "all": ["orders:write"] },
      "claims": [ { "claim": "groups", "contains": "Admins" } ],
      "rate_limits": [ { "key": "claim:sub", "requests": 100, "per_s": 60, "burst": 20 } ] },
    { "match": { "template": "/users/{id}/profile" },
      "claims": [ { "claim": "uid", "equals_param": "id" } ] }
  ],
  "realm": "api",
  "bypass_cors_preflight": true
}
"#;
        let c = parse(example.as_bytes()).unwrap();
        assert_eq!(c.rules.len(), 3);
        assert_eq!(c.rules[1].rate_limits.len(), 1);
        assert_eq!(c.realm.as_deref(), Some("api"));
    }

    #[test]
    fn issuer_is_any_non_empty_string_unless_discovery_needs_a_url() {
        let mut v = base();
        v["providers"]["okta"]["issuer"] = json!("urn:example:issuer");
        let c = parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.providers[0].issuer, "urn:example:issuer");
        v["providers"]["okta"]["issuer"] = json!("");
        expect_err(v.clone(), "providers.okta.issuer", "must not be empty");
        v["providers"]["okta"]["issuer"] = json!("urn:example:issuer");
        v["providers"]["okta"]["jwks"] = json!({"discovery": true, "cluster": "okta"});
        expect_err(
            v,
            "providers.okta.issuer",
            "http(s) URL when jwks.discovery",
        );
    }

    #[test]
    fn path_parameters_default_to_reject() {
        let mut v = base();
        let c = parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.path_parameters, PathParameters::Reject);
        v["path_parameters"] = json!("strip");
        let c = parse(v.to_string().as_bytes()).unwrap();
        assert_eq!(c.path_parameters, PathParameters::Strip);
        v["path_parameters"] = json!("keep");
        expect_err(v, "path_parameters", "not one of");
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = base();
        v["providers"]["okta"]["audiences"] = json!([]);
        expect_err(v, "providers.okta.audiences", "must not be empty");

        let mut v = base();
        v["providers"]["okta"]["algorithms"] = json!(["RS256", "HS256"]);
        expect_err(v, "providers.okta.algorithms[1]", "refused");

        let mut v = base();
        v["providers"]["okta"]["algorithms"] = json!(["none"]);
        expect_err(v, "providers.okta.algorithms[0]", "refused");

        let mut v = base();
        v["rules"][1]["providers"] = json!(["nope"]);
        expect_err(v, "rules[1].providers[0]", "unknown provider");

        let mut v = base();
        v["rules"][1]["claims"][0]["equals_param"] = json!("user");
        expect_err(v, "rules[1].claims[0].equals_param", "not a parameter");

        let mut v = base();
        v["rules"][0]["auth"] = json!("sometimes");
        expect_err(v, "rules[0].auth", "not one of");

        let mut v = base();
        v["providers"]["okta"]["jwks"] = json!({"uri": "https://x/keys"});
        expect_err(v, "providers.okta.jwks.cluster", "required");

        let mut v = base();
        v["providers"]["okta"]["jwks"]["discovery"] = json!(true);
        expect_err(v, "providers.okta.jwks", "exactly one");

        let mut v = base();
        v["providers"]["okta"]["claims_to_headers"][0]["header"] = json!("Authorization");
        expect_err(v, "providers.okta.claims_to_headers[0].header", "reserved");

        let mut v = base();
        v["providers"]["okta"]["from"] = json!([{"query": "t", "prefix": "x"}]);
        expect_err(v, "providers.okta.from[0].prefix", "only applies");

        let mut v = base();
        v["rules"][1]["match"]["prefix"] = json!("/x");
        expect_err(v, "rules[1].match", "at most one");

        let mut v = base();
        v["rules"][1]["rate_limits"][0]["key"] = json!("color");
        expect_err(v, "rules[1].rate_limits[0].key", "");
    }

    #[test]
    fn ip_lists_and_client_ip() {
        let mut v = base();
        v["rules"][1]["ip"] = json!({"allow": ["10.0.0.0/8", "::1"], "deny": ["10.0.0.13"]});
        v["client_ip"] = json!({"xff_trusted_hops": 2});
        let c = parse_value(&v).unwrap();
        let ip = c.rules[1].ip.as_ref().unwrap();
        assert_eq!((ip.allow.len(), ip.deny.len()), (2, 1));
        assert_eq!(c.xff_trusted_hops, Some(2));
        assert!(c.needs_client_ip());
        assert!(!parse_value(&base()).unwrap().needs_client_ip());
        assert_eq!(parse_value(&base()).unwrap().xff_trusted_hops, None);

        let bad = |rule_ip: Value, field: &str, problem: &str| {
            let mut v = base();
            v["rules"][1]["ip"] = rule_ip;
            expect_err(v, field, problem);
        };
        bad(
            json!({"allow": ["10.0.0.0/8", "10.1.0.0/8"]}),
            "rules[1].ip.allow[1]",
            "bits set",
        );
        bad(
            json!({"deny": ["10.0.0.0/33"]}),
            "rules[1].ip.deny[0]",
            "prefix length",
        );
        bad(
            json!({"deny": ["fe80::1%eth0"]}),
            "rules[1].ip.deny[0]",
            "not an IPv4 or IPv6",
        );
        bad(
            json!({"allow": []}),
            "rules[1].ip.allow",
            "must not be empty",
        );
        bad(json!({}), "rules[1].ip", "\"allow\" or \"deny\"");
        bad(json!({"allow": [1]}), "rules[1].ip.allow[0]", "");
        bad(
            json!({"permit": ["10.0.0.0/8"]}),
            "rules[1].ip.permit",
            "unknown field",
        );
        let many: Vec<String> = (0..=MAX_IP_RANGES)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        bad(json!({"deny": many}), "rules[1].ip.deny", "at most 1024");

        for hops in [json!(0), json!(MAX_XFF_TRUSTED_HOPS + 1)] {
            let mut v = base();
            v["client_ip"] = json!({"xff_trusted_hops": hops});
            expect_err(v, "client_ip.xff_trusted_hops", "between 1 and 32");
        }
        for (client_ip, field) in [
            (json!({}), "client_ip"),
            (
                json!({"xff_trusted_hops": -1}),
                "client_ip.xff_trusted_hops",
            ),
            (
                json!({"xff_trusted_hops": 1, "header": "x-real-ip"}),
                "client_ip.header",
            ),
        ] {
            let mut v = base();
            v["client_ip"] = client_ip;
            let e = parse_value(&v).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn failure_limits_need_authentication() {
        let mut v = base();
        v["rules"][0]["rate_limits"] =
            json!([{"key": "ip", "requests": 5, "per_s": 60, "count": "denied"}]);
        expect_err(v, "rules[0].rate_limits[0].count", "auth \"none\"");
        let mut v = base();
        v["rules"][1]["rate_limits"] =
            json!([{"key": "ip", "requests": 5, "per_s": 60, "count": "denied"}]);
        let c = parse_value(&v).unwrap();
        assert!(c.needs_client_ip());
    }

    #[test]
    fn unknown_fields_are_errors_with_their_path() {
        let mut v = base();
        v["providers"]["okta"]["audience"] = json!("api://default");
        let e = parse_value(&v).unwrap_err();
        assert_eq!(e.field, "providers.okta.audience");
        assert!(e.problem.contains("unknown field `audience`"), "{e}");

        let mut v = base();
        v["rules"][0]["match"]["prefixx"] = json!("/");
        let e = parse_value(&v).unwrap_err();
        assert_eq!(e.field, "rules[0].match.prefixx");

        let mut v = base();
        v["extra"] = json!(1);
        assert!(parse_value(&v)
            .unwrap_err()
            .problem
            .contains("unknown field `extra`"));
    }

    #[test]
    fn type_errors_name_the_field() {
        let mut v = base();
        v["providers"]["okta"]["clock_skew_s"] = json!("60");
        let e = parse_value(&v).unwrap_err();
        assert_eq!(e.field, "providers.okta.clock_skew_s");
    }

    #[test]
    fn inline_jwks_is_parsed_at_load() {
        let mut v = base();
        v["providers"]["okta"]["jwks"] = json!({"inline": {"keys": []}});
        expect_err(v, "providers.okta.jwks.inline", "no keys");
    }

    #[test]
    fn sources_and_header_names_are_normalised() {
        let mut v = base();
        v["providers"]["okta"]["from"] = json!([
            {"header": "X-Token"}, {"query": "access_token"}, {"cookie": "at"}
        ]);
        let c = parse_value(&v).unwrap();
        assert_eq!(
            c.providers[0].from,
            vec![
                Source::Header {
                    name: "x-token".into(),
                    prefix: String::new()
                },
                Source::Query("access_token".into()),
                Source::Cookie("at".into()),
            ]
        );
    }

    #[test]
    fn authority_split() {
        assert_eq!(
            authority_of("https://idp.example:8443/oauth2/v1/keys"),
            Some(("idp.example:8443", "/oauth2/v1/keys"))
        );
        assert_eq!(authority_of("http://idp"), Some(("idp", "/")));
        assert_eq!(authority_of("https://user@idp/x"), None);
        assert_eq!(authority_of("ftp://idp/x"), None);
    }
}
