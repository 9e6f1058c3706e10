//! The filter's JSON configuration (SPEC.md): parsing, validation and compilation into the
//! shapes the request path uses. Every error names the field it is about.

use serde_json::Value;

use crate::core::config::error::{err, ConfigError};
use crate::core::config::model::{Auth, ClaimHeader, Config, Provider, Rule, SignatureBackend};
use crate::core::config::rate_limit;
use crate::core::config::raw::*;
use crate::core::crypto::alg::{Alg, AlgSet};
use crate::core::keys::jwk_set as jwks;
use crate::core::keys::source::{authority_of, JwksConfig, JwksSource};
use crate::core::policy::requirements::{ClaimCheck, ClaimRequirement, Scopes};
use crate::core::request::extract::Source;
use crate::core::request::matcher::{HeaderMatch, HeaderMatchKind, Match, PathTemplate};
use crate::core::token::cache as token_cache;
use crate::core::token::claim_path::ClaimPath;

/// A configuration larger than this is refused before parsing.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

const MAX_CLOCK_SKEW_S: u64 = 3600;
const MAX_TIMEOUT_MS: u64 = 60_000;
const MIN_CACHE_S: u64 = 30;
const MAX_CACHE_S: u64 = 86_400;

/// Headers a claim may never be written to: they change routing, framing or authentication.
const RESERVED_HEADERS: [&str; 10] = [
    "authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "x-request-id",
];

pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
    if json.len() > MAX_CONFIG_BYTES {
        return err(
            "",
            format!("configuration exceeds {MAX_CONFIG_BYTES} bytes"),
        );
    }
    let de = &mut serde_json::Deserializer::from_slice(json);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        ConfigError {
            field: if path == "." { String::new() } else { path },
            problem: e.into_inner().to_string(),
        }
    })?;
    compile(raw)
}

fn compile(raw: RawConfig) -> Result<Config, ConfigError> {
    if raw.providers.is_empty() {
        return err("providers", "at least one provider is required");
    }
    let mut providers = Vec::with_capacity(raw.providers.len());
    for (name, p) in raw.providers {
        providers.push(compile_provider(name, p)?);
    }
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (i, r) in raw.rules.into_iter().enumerate() {
        rules.push(compile_rule(i, r, &names)?);
    }
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
    let signature_backend = match raw.signature_backend.as_deref() {
        None | Some("auto") => SignatureBackend::Auto,
        Some("host") => SignatureBackend::Host,
        Some("pure") => SignatureBackend::Pure,
        Some(other) => {
            return err(
                "signature_backend",
                format!("{other:?} is not one of \"auto\", \"host\", \"pure\""),
            )
        }
    };
    let token_cache_entries = raw
        .token_cache_entries
        .unwrap_or(token_cache::DEFAULT_ENTRIES);
    if token_cache_entries > token_cache::MAX_ENTRIES {
        return err(
            "token_cache_entries",
            format!("must be at most {}", token_cache::MAX_ENTRIES),
        );
    }
    let mut protected_headers = Vec::new();
    for p in &providers {
        let names = p
            .claims_to_headers
            .iter()
            .map(|c| &c.header)
            .chain(p.payload_header.iter());
        for h in names {
            if !protected_headers.contains(h) {
                protected_headers.push(h.clone());
            }
        }
    }
    for rule in rules.iter_mut() {
        rule.sources = sources_of(&providers, &rule.providers);
    }
    let all: Vec<usize> = (0..providers.len()).collect();
    let default_rule = Rule {
        matcher: Match::default(),
        auth: Auth::Required,
        sources: sources_of(&providers, &all),
        providers: all,
        scopes: Scopes::default(),
        claims: Vec::new(),
        rate_limits: Vec::new(),
    };
    Ok(Config {
        providers,
        rules,
        realm: raw.realm,
        bypass_cors_preflight: raw.bypass_cors_preflight.unwrap_or(true),
        signature_backend,
        token_cache_entries,
        protected_headers,
        default_rule,
    })
}

fn compile_provider(name: String, p: RawProvider) -> Result<Provider, ConfigError> {
    let at = format!("providers.{name}");
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return err(at, "provider names are 1-64 characters of [A-Za-z0-9_-]");
    }
    if !(p.issuer.starts_with("https://") || p.issuer.starts_with("http://")) || p.issuer.len() <= 8
    {
        return err(format!("{at}.issuer"), "must be an http(s) URL");
    }
    if p.audiences.is_empty() {
        return err(format!("{at}.audiences"), "must not be empty");
    }
    if p.audiences.iter().any(|a| a.is_empty()) {
        return err(
            format!("{at}.audiences"),
            "must not contain an empty string",
        );
    }
    let jwks = compile_jwks(&at, p.jwks)?;
    let algorithms = match p.algorithms {
        None => [Alg::RS256].into_iter().collect(),
        Some(list) => {
            if list.is_empty() {
                return err(format!("{at}.algorithms"), "must not be empty");
            }
            let mut set = AlgSet::default();
            for (i, name) in list.iter().enumerate() {
                match Alg::parse(name) {
                    Some(alg) => set.insert(alg),
                    None if name == "none" || name.to_ascii_uppercase().starts_with("HS") => {
                        return err(
                            format!("{at}.algorithms[{i}]"),
                            format!("{name:?} is refused: only asymmetric signature algorithms are allowed"),
                        )
                    }
                    None => {
                        return err(
                            format!("{at}.algorithms[{i}]"),
                            format!("unsupported algorithm {name:?}; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"),
                        )
                    }
                }
            }
            set
        }
    };
    let clock_skew_s = p.clock_skew_s.unwrap_or(60);
    if clock_skew_s > MAX_CLOCK_SKEW_S {
        return err(
            format!("{at}.clock_skew_s"),
            format!("must be at most {MAX_CLOCK_SKEW_S}"),
        );
    }
    if p.max_lifetime_s == Some(0) {
        return err(format!("{at}.max_lifetime_s"), "must be positive");
    }
    if let Some(ids) = &p.client_ids {
        if ids.is_empty() || ids.iter().any(|c| c.is_empty()) {
            return err(
                format!("{at}.client_ids"),
                "must be a non-empty list of non-empty client ids",
            );
        }
    }
    let from = match p.from {
        None => vec![Source::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }],
        Some(list) => {
            if list.is_empty() {
                return err(format!("{at}.from"), "must not be empty");
            }
            list.into_iter()
                .enumerate()
                .map(|(i, s)| compile_source(&format!("{at}.from[{i}]"), s))
                .collect::<Result<_, _>>()?
        }
    };
    let mut claims_to_headers = Vec::with_capacity(p.claims_to_headers.len());
    for (i, ch) in p.claims_to_headers.into_iter().enumerate() {
        let field = format!("{at}.claims_to_headers[{i}]");
        let claim = ClaimPath::parse(&ch.claim).map_err(|problem| ConfigError {
            field: format!("{field}.claim"),
            problem,
        })?;
        let header = header_name(&format!("{field}.header"), &ch.header)?;
        claims_to_headers.push(ClaimHeader { claim, header });
    }
    let payload_header = match p.payload_header {
        None => None,
        Some(h) => Some(header_name(&format!("{at}.payload_header"), &h)?),
    };
    Ok(Provider {
        name,
        issuer: p.issuer,
        audiences: p.audiences,
        jwks,
        algorithms,
        clock_skew_s,
        max_lifetime_s: p.max_lifetime_s,
        client_ids: p.client_ids,
        from,
        forward_token: p.forward_token,
        claims_to_headers,
        payload_header,
    })
}

fn compile_jwks(at: &str, j: RawJwks) -> Result<JwksConfig, ConfigError> {
    let at = format!("{at}.jwks");
    let timeout_ms = j.timeout_ms.unwrap_or(5000);
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return err(
            format!("{at}.timeout_ms"),
            format!("must be between 1 and {MAX_TIMEOUT_MS}"),
        );
    }
    let cache_duration_s = j.cache_duration_s.unwrap_or(300);
    if !(MIN_CACHE_S..=MAX_CACHE_S).contains(&cache_duration_s) {
        return err(
            format!("{at}.cache_duration_s"),
            format!("must be between {MIN_CACHE_S} and {MAX_CACHE_S}"),
        );
    }
    let min_refetch_interval_s = j.min_refetch_interval_s.unwrap_or(30);
    if !(1..=MAX_CACHE_S).contains(&min_refetch_interval_s) {
        return err(
            format!("{at}.min_refetch_interval_s"),
            format!("must be between 1 and {MAX_CACHE_S}"),
        );
    }
    let discovery = j.discovery.unwrap_or(false);
    let forms = [j.uri.is_some(), discovery, j.inline.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if forms != 1 {
        return err(
            at,
            "exactly one of \"uri\", \"discovery\": true or \"inline\" is required",
        );
    }
    let cluster = |required: bool| -> Result<Option<String>, ConfigError> {
        match &j.cluster {
            Some(c) if c.is_empty() => err(format!("{at}.cluster"), "must not be empty"),
            Some(_) if !required => err(format!("{at}.cluster"), "is not used with inline keys"),
            None if required => err(format!("{at}.cluster"), "is required to fetch keys"),
            c => Ok(c.clone()),
        }
    };
    let source = if let Some(uri) = j.uri {
        if !(uri.starts_with("https://") || uri.starts_with("http://"))
            || authority_of(&uri).is_none()
        {
            return err(format!("{at}.uri"), "must be an absolute http(s) URL");
        }
        JwksSource::Remote {
            uri,
            cluster: cluster(true)?.unwrap_or_default(),
        }
    } else if discovery {
        JwksSource::Discovery {
            cluster: cluster(true)?.unwrap_or_default(),
        }
    } else {
        cluster(false)?;
        let inline = j.inline.unwrap_or(Value::Null);
        let parsed = jwks::parse_value(&inline).map_err(|e| ConfigError {
            field: format!("{at}.inline"),
            problem: e.to_string(),
        })?;
        JwksSource::Inline(parsed.set)
    };
    Ok(JwksConfig {
        source,
        timeout_ms,
        cache_duration_s,
        min_refetch_interval_s,
    })
}

fn compile_source(at: &str, s: RawSource) -> Result<Source, ConfigError> {
    let given = [s.header.is_some(), s.query.is_some(), s.cookie.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given != 1 {
        return err(
            at,
            "exactly one of \"header\", \"query\" or \"cookie\" is required",
        );
    }
    if s.prefix.is_some() && s.header.is_none() {
        return err(format!("{at}.prefix"), "only applies to \"header\"");
    }
    if let Some(h) = s.header {
        let name = header_name_any(&format!("{at}.header"), &h)?;
        return Ok(Source::Header {
            name,
            prefix: s.prefix.unwrap_or_default(),
        });
    }
    if let Some(q) = s.query {
        if q.is_empty() {
            return err(format!("{at}.query"), "must not be empty");
        }
        return Ok(Source::Query(q));
    }
    let c = s.cookie.unwrap_or_default();
    if c.is_empty() || !c.bytes().all(is_token_char) {
        return err(format!("{at}.cookie"), "must be a valid cookie name");
    }
    Ok(Source::Cookie(c))
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A lower-cased header name that the filter reads.
fn header_name_any(field: &str, name: &str) -> Result<String, ConfigError> {
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return err(field, format!("{name:?} is not a valid header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// A lower-cased header name that the filter writes.
fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let lower = header_name_any(field, name)?;
    if RESERVED_HEADERS.contains(&lower.as_str()) {
        return err(
            field,
            format!("{name:?} is reserved and cannot carry claims"),
        );
    }
    Ok(lower)
}

fn compile_rule(index: usize, r: RawRule, provider_names: &[&str]) -> Result<Rule, ConfigError> {
    let at = format!("rules[{index}]");
    let matcher = compile_match(&format!("{at}.match"), r.match_)?;
    let auth = match r.auth.as_deref() {
        None | Some("required") => Auth::Required,
        Some("optional") => Auth::Optional,
        Some("none") => Auth::None,
        Some(other) => {
            return err(
                format!("{at}.auth"),
                format!("{other:?} is not one of \"required\", \"optional\", \"none\""),
            )
        }
    };
    let providers = match r.providers {
        None => (0..provider_names.len()).collect(),
        Some(list) => {
            if list.is_empty() {
                return err(format!("{at}.providers"), "must not be empty");
            }
            let mut idx = Vec::with_capacity(list.len());
            for (i, name) in list.iter().enumerate() {
                match provider_names.iter().position(|p| p == name) {
                    Some(p) => idx.push(p),
                    None => {
                        return err(
                            format!("{at}.providers[{i}]"),
                            format!("unknown provider {name:?}"),
                        )
                    }
                }
            }
            idx
        }
    };
    let scopes = match r.scopes {
        None => Scopes::default(),
        Some(s) => {
            let all = s.all.unwrap_or_default();
            let any = s.any.unwrap_or_default();
            if all.is_empty() && any.is_empty() {
                return err(
                    format!("{at}.scopes"),
                    "needs a non-empty \"all\" or \"any\"",
                );
            }
            for (kind, list) in [("all", &all), ("any", &any)] {
                if let Some(i) = list.iter().position(|s| !valid_scope(s)) {
                    return err(
                        format!("{at}.scopes.{kind}[{i}]"),
                        "scopes are non-empty and contain no spaces, quotes or backslashes",
                    );
                }
            }
            Scopes { all, any }
        }
    };
    let params = matcher
        .template
        .as_ref()
        .map(|t| t.params())
        .unwrap_or_default();
    let mut claims = Vec::with_capacity(r.claims.len());
    for (i, c) in r.claims.into_iter().enumerate() {
        claims.push(compile_claim(&format!("{at}.claims[{i}]"), c, &params)?);
    }
    if auth == Auth::None
        && (!scopes.all.is_empty() || !scopes.any.is_empty() || !claims.is_empty())
    {
        return err(
            format!("{at}.auth"),
            "\"none\" cannot be combined with scopes or claims",
        );
    }
    let mut rate_limits = Vec::with_capacity(r.rate_limits.len());
    for (i, v) in r.rate_limits.iter().enumerate() {
        rate_limits.push(rate_limit::parse(&format!("{at}.rate_limits[{i}]"), v)?);
    }
    Ok(Rule {
        matcher,
        auth,
        providers,
        sources: Vec::new(),
        scopes,
        claims,
        rate_limits,
    })
}

/// The sources of the given providers, in order, without repeats.
fn sources_of(providers: &[Provider], indexes: &[usize]) -> Vec<Source> {
    let mut out: Vec<Source> = Vec::new();
    for p in indexes.iter().filter_map(|&i| providers.get(i)) {
        for s in &p.from {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
    }
    out
}

fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\')
}

fn compile_match(at: &str, m: RawMatch) -> Result<Match, ConfigError> {
    let paths = [m.prefix.is_some(), m.exact.is_some(), m.template.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if paths > 1 {
        return err(
            at,
            "use at most one of \"prefix\", \"exact\" and \"template\"",
        );
    }
    for (name, value) in [("prefix", &m.prefix), ("exact", &m.exact)] {
        if let Some(v) = value {
            if !v.starts_with('/') {
                return err(format!("{at}.{name}"), "must start with \"/\"");
            }
        }
    }
    let template = match m.template {
        None => None,
        Some(t) => Some(PathTemplate::parse(&t).map_err(|problem| ConfigError {
            field: format!("{at}.template"),
            problem,
        })?),
    };
    let methods = match m.methods {
        None => Vec::new(),
        Some(list) => {
            if list.is_empty() {
                return err(format!("{at}.methods"), "must not be empty");
            }
            if let Some(i) = list
                .iter()
                .position(|x| x.is_empty() || !x.bytes().all(|b| b.is_ascii_uppercase()))
            {
                return err(
                    format!("{at}.methods[{i}]"),
                    "methods are upper-case, like \"GET\"",
                );
            }
            list
        }
    };
    let mut headers = Vec::new();
    for (i, h) in m.headers.unwrap_or_default().into_iter().enumerate() {
        let field = format!("{at}.headers[{i}]");
        let name = header_name_any(&format!("{field}.name"), &h.name)?;
        let kind = match (h.exact, h.prefix, h.present) {
            (Some(v), None, None) => HeaderMatchKind::Exact(v),
            (None, Some(v), None) => HeaderMatchKind::Prefix(v),
            (None, None, Some(p)) => HeaderMatchKind::Present(p),
            _ => {
                return err(
                    field,
                    "exactly one of \"exact\", \"prefix\" or \"present\" is required",
                )
            }
        };
        headers.push(HeaderMatch { name, kind });
    }
    Ok(Match {
        prefix: m.prefix,
        exact: m.exact,
        template,
        methods,
        headers,
    })
}

fn compile_claim(
    at: &str,
    c: RawClaim,
    params: &[String],
) -> Result<ClaimRequirement, ConfigError> {
    let claim = ClaimPath::parse(&c.claim).map_err(|problem| ConfigError {
        field: format!("{at}.claim"),
        problem,
    })?;
    let check =
        match (c.equals, c.in_, c.contains, c.equals_param) {
            (Some(v), None, None, None) => ClaimCheck::Equals(v),
            (None, Some(v), None, None) => {
                if v.is_empty() {
                    return err(format!("{at}.in"), "must not be empty");
                }
                ClaimCheck::In(v)
            }
            (None, None, Some(v), None) => ClaimCheck::Contains(v),
            (None, None, None, Some(p)) => {
                if !params.contains(&p) {
                    return err(
                        format!("{at}.equals_param"),
                        format!("{p:?} is not a parameter of this rule's match.template"),
                    );
                }
                ClaimCheck::EqualsParam(p)
            }
            _ => return err(
                at,
                "exactly one of \"equals\", \"in\", \"contains\" or \"equals_param\" is required",
            ),
        };
    Ok(ClaimRequirement { claim, check })
}

/// Used by tests of other modules: a set of unique header names is easier to assert on.
#[cfg(test)]
pub(crate) fn header_set(c: &Config) -> std::collections::HashSet<String> {
    c.protected_headers.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
