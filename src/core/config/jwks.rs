//! Compiling `providers.NAME.jwks`: one of a URI, discovery or inline keys, and fetch timings.

use serde_json::Value;

use crate::core::config::error::{err, ConfigError};
use crate::core::config::raw::RawJwks;
use crate::core::keys::jwk_set as jwks;
use crate::core::keys::source::{authority_of, JwksConfig, JwksSource};

const MAX_TIMEOUT_MS: u64 = 60_000;
const MIN_CACHE_S: u64 = 30;
const MAX_CACHE_S: u64 = 86_400;

/// `at` is the provider's field (`providers.okta`).
pub fn compile_jwks(at: &str, j: RawJwks) -> Result<JwksConfig, ConfigError> {
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
    Ok(JwksConfig {
        source: source(&at, j)?,
        timeout_ms,
        cache_duration_s,
        min_refetch_interval_s,
    })
}

/// Exactly one of the three forms, with a cluster exactly when keys are fetched.
fn source(at: &str, j: RawJwks) -> Result<JwksSource, ConfigError> {
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
    let cluster = |required: bool| -> Result<String, ConfigError> {
        match &j.cluster {
            Some(c) if c.is_empty() => err(format!("{at}.cluster"), "must not be empty"),
            Some(_) if !required => err(format!("{at}.cluster"), "is not used with inline keys"),
            None if required => err(format!("{at}.cluster"), "is required to fetch keys"),
            c => Ok(c.clone().unwrap_or_default()),
        }
    };
    if let Some(uri) = &j.uri {
        if !(uri.starts_with("https://") || uri.starts_with("http://"))
            || authority_of(uri).is_none()
        {
            return err(format!("{at}.uri"), "must be an absolute http(s) URL");
        }
        return Ok(JwksSource::Remote {
            uri: uri.clone(),
            cluster: cluster(true)?,
        });
    }
    if discovery {
        return Ok(JwksSource::Discovery {
            cluster: cluster(true)?,
        });
    }
    cluster(false)?;
    let inline = j.inline.unwrap_or(Value::Null);
    let parsed = jwks::parse_value(&inline).map_err(|e| ConfigError {
        field: format!("{at}.inline"),
        problem: e.to_string(),
    })?;
    Ok(JwksSource::Inline(parsed.set))
}
