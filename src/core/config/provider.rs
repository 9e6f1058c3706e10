//! Compiling one provider: its name, issuer and audiences, key source, algorithms, claim
//! expectations, token sources and the headers its claims go to.

use crate::core::config::error::{err, ConfigError};
use crate::core::config::introspection::{compile_introspection, EnvLookup};
use crate::core::config::jwks::compile_jwks;
use crate::core::config::model::{ClaimHeader, Dpop, DpopMode, Provider};
use crate::core::config::names::{header_name, header_name_any, is_token_char};
use crate::core::config::raw::{RawClaimHeader, RawJwks, RawProvider, RawSource};
use crate::core::crypto::alg::{Alg, AlgSet};
use crate::core::keys::jwk_set::KeySet;
use crate::core::keys::source::{JwksConfig, JwksSource};
use crate::core::request::extract::Source;
use crate::core::token::claim_path::ClaimPath;

const MAX_CLOCK_SKEW_S: u64 = 3600;
/// A proof older than an hour is no proof of possession now.
const MAX_DPOP_AGE_S: u64 = 3600;

pub fn compile_provider(
    name: String,
    p: RawProvider,
    env: EnvLookup<'_>,
) -> Result<Provider, ConfigError> {
    let at = format!("providers.{name}");
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return err(at, "provider names are 1-64 characters of [A-Za-z0-9_-]");
    }
    // RFC 7519 StringOrURI, compared byte for byte; only discovery needs a URL.
    if p.issuer.is_empty() {
        return err(format!("{at}.issuer"), "must not be empty");
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
    let introspection = match p.introspection {
        Some(i) => Some(compile_introspection(&at, i, env)?),
        None => None,
    };
    let verifies_jwts = p.jwks.is_some();
    let jwks = keys(&at, p.jwks, introspection.is_some())?;
    if matches!(jwks.source, JwksSource::Discovery { .. }) && !is_http_url(&p.issuer) {
        return err(
            format!("{at}.issuer"),
            "must be an http(s) URL when jwks.discovery is true",
        );
    }
    let clock_skew_s = claim_fields(
        &at,
        p.clock_skew_s,
        p.max_lifetime_s,
        p.client_ids.as_deref(),
    )?;
    let payload_header = match p.payload_header {
        None => None,
        Some(h) => Some(header_name(&format!("{at}.payload_header"), &h)?),
    };
    Ok(Provider {
        name,
        issuer: p.issuer,
        audiences: p.audiences,
        jwks,
        algorithms: algorithms(&at, p.algorithms)?,
        clock_skew_s,
        max_lifetime_s: p.max_lifetime_s,
        client_ids: p.client_ids,
        from: sources(&at, p.from)?,
        forward_token: p.forward_token,
        claims_to_headers: claim_headers(&at, p.claims_to_headers)?,
        payload_header,
        require_at_jwt: p.require_at_jwt,
        dpop: dpop(
            &at,
            p.dpop,
            p.dpop_algorithms,
            p.dpop_max_age_s,
            p.dpop_origin,
        )?,
        mtls_binding: mtls_binding(&at, p.mtls_binding)?,
        verifies_jwts,
        introspection,
    })
}

/// `jwks`, required unless the provider introspects: then it takes only opaque tokens and
/// its key set stays empty.
fn keys(at: &str, jwks: Option<RawJwks>, introspects: bool) -> Result<JwksConfig, ConfigError> {
    match jwks {
        Some(j) => compile_jwks(at, j),
        None if introspects => Ok(JwksConfig {
            source: JwksSource::Inline(KeySet::default()),
            timeout_ms: 5000,
            cache_duration_s: 300,
            min_refetch_interval_s: 30,
        }),
        None => err(
            format!("{at}.jwks"),
            "is required (unless the provider has \"introspection\")",
        ),
    }
}

/// The DPoP fields (SPEC "Sender-constrained tokens").
fn dpop(
    at: &str,
    mode: Option<String>,
    algorithms: Option<Vec<String>>,
    max_age_s: Option<u64>,
    origin: Option<String>,
) -> Result<Dpop, ConfigError> {
    let mode = match mode.as_deref() {
        None | Some("disabled") => DpopMode::Disabled,
        Some("allowed") => DpopMode::Allowed,
        Some("required") => DpopMode::Required,
        Some(other) => {
            return err(
                format!("{at}.dpop"),
                format!("{other:?} is not one of \"disabled\", \"allowed\", \"required\""),
            )
        }
    };
    let mut d = Dpop {
        mode,
        ..Dpop::default()
    };
    if let Some(list) = algorithms {
        d.algorithms = self::algorithms(&format!("{at}.dpop_algorithms"), Some(list))?;
    }
    if let Some(s) = max_age_s {
        if s == 0 || s > MAX_DPOP_AGE_S {
            return err(
                format!("{at}.dpop_max_age_s"),
                format!("must be between 1 and {MAX_DPOP_AGE_S}"),
            );
        }
        d.max_age_s = s;
    }
    if let Some(o) = origin {
        if !is_origin(&o) {
            return err(
                format!("{at}.dpop_origin"),
                "must be an http(s) origin: scheme and host, no path, query or fragment",
            );
        }
        d.origin = Some(o);
    }
    Ok(d)
}

/// `https://host[:port]` without a path (a trailing `/` neither), query, fragment or userinfo.
fn is_origin(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && !r
                .bytes()
                .any(|b| matches!(b, b'/' | b'?' | b'#' | b'@') || b <= b' ')
    })
}

fn mtls_binding(at: &str, value: Option<String>) -> Result<bool, ConfigError> {
    match value.as_deref() {
        None => Ok(false),
        Some("required") => Ok(true),
        Some(other) => err(
            format!("{at}.mtls_binding"),
            format!("{other:?} is not \"required\" (omit the field to accept unbound tokens)"),
        ),
    }
}

/// The claim-check fields: gives the clock skew (default 60 s).
fn claim_fields(
    at: &str,
    clock_skew_s: Option<u64>,
    max_lifetime_s: Option<u64>,
    client_ids: Option<&[String]>,
) -> Result<u64, ConfigError> {
    let clock_skew_s = clock_skew_s.unwrap_or(60);
    if clock_skew_s > MAX_CLOCK_SKEW_S {
        return err(
            format!("{at}.clock_skew_s"),
            format!("must be at most {MAX_CLOCK_SKEW_S}"),
        );
    }
    if max_lifetime_s == Some(0) {
        return err(format!("{at}.max_lifetime_s"), "must be positive");
    }
    if let Some(ids) = client_ids {
        if ids.is_empty() || ids.iter().any(|c| c.is_empty()) {
            return err(
                format!("{at}.client_ids"),
                "must be a non-empty list of non-empty client ids",
            );
        }
    }
    Ok(clock_skew_s)
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("https://") && s.len() > 8) || (s.starts_with("http://") && s.len() > 7)
}

/// Default `RS256`; `none` and every HS* are refused with their own message.
fn algorithms(at: &str, list: Option<Vec<String>>) -> Result<AlgSet, ConfigError> {
    let Some(list) = list else {
        return Ok([Alg::RS256].into_iter().collect());
    };
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
    Ok(set)
}

/// Default: the `authorization` header with the prefix `Bearer `.
fn sources(at: &str, from: Option<Vec<RawSource>>) -> Result<Vec<Source>, ConfigError> {
    let Some(list) = from else {
        return Ok(vec![Source::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }]);
    };
    if list.is_empty() {
        return err(format!("{at}.from"), "must not be empty");
    }
    list.into_iter()
        .enumerate()
        .map(|(i, s)| compile_source(&format!("{at}.from[{i}]"), s))
        .collect()
}

fn claim_headers(at: &str, list: Vec<RawClaimHeader>) -> Result<Vec<ClaimHeader>, ConfigError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, ch) in list.into_iter().enumerate() {
        let field = format!("{at}.claims_to_headers[{i}]");
        let claim = ClaimPath::parse(&ch.claim).map_err(|problem| ConfigError {
            field: format!("{field}.claim"),
            problem,
        })?;
        let header = header_name(&format!("{field}.header"), &ch.header)?;
        out.push(ClaimHeader { claim, header });
    }
    Ok(out)
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
