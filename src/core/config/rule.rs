//! Compiling one rule: its match, `auth`, providers, scopes, claim requirements, rate limits
//! and client address ranges. A rule refers to providers by name; they are resolved to indexes here.

use crate::core::config::error::{err, ConfigError};
use crate::core::config::matching::compile_match;
use crate::core::config::model::{Auth, Provider, Rule};
use crate::core::config::rate_limit;
use crate::core::config::raw::{RawClaim, RawIp, RawRule, RawScopes};
use crate::core::policy::requirements::{ClaimCheck, ClaimRequirement, Scopes};
use crate::core::ratelimit::limits::{Count, RateLimit};
use crate::core::request::cidr::{Cidr, IpList};
use crate::core::request::extract::Source;
use crate::core::token::claim_path::ClaimPath;
use serde_json::Value;

pub fn compile_rule(
    index: usize,
    r: RawRule,
    provider_names: &[&str],
) -> Result<Rule, ConfigError> {
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
    let scopes = scopes(&at, r.scopes)?;
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
    let rate_limits = rate_limits(&at, &r.rate_limits, auth)?;
    let ip = ip_list(&format!("{at}.ip"), r.ip)?;
    Ok(Rule {
        matcher,
        auth,
        providers: providers(&at, r.providers, provider_names)?,
        sources: Vec::new(),
        scopes,
        claims,
        rate_limits,
        ip,
    })
}

fn rate_limits(at: &str, raw: &[Value], auth: Auth) -> Result<Vec<RateLimit>, ConfigError> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        let field = format!("{at}.rate_limits[{i}]");
        let limit = rate_limit::parse(&field, v)?;
        if limit.count == Count::Denied && auth == Auth::None {
            // Such a limit would never count anything: say so rather than protect nothing.
            return err(
                format!("{field}.count"),
                "\"denied\" counts failed authentication, which a rule with auth \"none\" never has",
            );
        }
        out.push(limit);
    }
    Ok(out)
}

/// At most this many ranges in one `allow` or `deny` list (each request scans them).
pub const MAX_IP_RANGES: usize = 1024;

/// `ip`: `allow` and/or `deny`, each a non-empty list of ranges.
fn ip_list(at: &str, raw: Option<RawIp>) -> Result<Option<IpList>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    if raw.allow.is_none() && raw.deny.is_none() {
        return err(at, "needs \"allow\" or \"deny\"");
    }
    let ranges = |name: &str, list: Option<Vec<String>>| -> Result<Vec<Cidr>, ConfigError> {
        let list = list.unwrap_or_default();
        if list.len() > MAX_IP_RANGES {
            return err(
                format!("{at}.{name}"),
                format!("at most {MAX_IP_RANGES} ranges"),
            );
        }
        list.iter()
            .enumerate()
            .map(|(i, text)| {
                Cidr::parse(text).map_err(|problem| ConfigError {
                    field: format!("{at}.{name}[{i}]"),
                    problem,
                })
            })
            .collect()
    };
    for (name, list) in [("allow", &raw.allow), ("deny", &raw.deny)] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            return err(format!("{at}.{name}"), "must not be empty");
        }
    }
    Ok(Some(IpList {
        allow: ranges("allow", raw.allow)?,
        deny: ranges("deny", raw.deny)?,
    }))
}

/// Provider names to indexes; all providers when the rule names none.
fn providers(
    at: &str,
    list: Option<Vec<String>>,
    provider_names: &[&str],
) -> Result<Vec<usize>, ConfigError> {
    let Some(list) = list else {
        return Ok((0..provider_names.len()).collect());
    };
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
    Ok(idx)
}

fn scopes(at: &str, raw: Option<RawScopes>) -> Result<Scopes, ConfigError> {
    let Some(s) = raw else {
        return Ok(Scopes::default());
    };
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
    Ok(Scopes { all, any })
}

/// The sources of the given providers, in order, without repeats, then the `DPoP`
/// authorization scheme: read whatever `from` lists, so that a `DPoP` token is never taken
/// for a missing one (with `dpop` disabled it is refused as `invalid_token`).
pub fn sources_of(providers: &[Provider], indexes: &[usize]) -> Vec<Source> {
    let mut out: Vec<Source> = Vec::new();
    for p in indexes.iter().filter_map(|&i| providers.get(i)) {
        for s in &p.from {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
    }
    if !indexes.is_empty() && !out.iter().any(is_dpop_scheme) {
        out.push(dpop_scheme());
    }
    out
}

/// `Authorization: DPoP <token>` (RFC 9449 section 7.1).
pub fn dpop_scheme() -> Source {
    Source::Header {
        name: "authorization".into(),
        prefix: "DPoP ".into(),
    }
}

pub fn is_dpop_scheme(s: &Source) -> bool {
    matches!(s, Source::Header { name, prefix }
        if name == "authorization" && prefix.eq_ignore_ascii_case("DPoP "))
}

fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\')
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
