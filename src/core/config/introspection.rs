//! Compiling `providers.NAME.introspection` (RFC 7662): endpoint, client credentials (given,
//! or read from the VM's environment), which tokens, and the limits of calls and cache.

use crate::core::config::error::{err, ConfigError};
use crate::core::config::raw::{RawIntrospection, RawSecret};
use crate::core::introspection::call::basic_authorization;
use crate::core::introspection::settings::{Introspection, Tokens};
use crate::core::keys::source::authority_of;

const MAX_TIMEOUT_MS: u64 = 60_000;
const MAX_CACHE_S: u64 = 86_400;
const MAX_ENTRIES: usize = 1_000_000;
const MAX_IN_FLIGHT: usize = 10_000;

/// Where a secret named by `{"env": NAME}` is looked up: the VM's environment (Envoy
/// `vm_config.environment_variables`, which WASI hands to `std::env`).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `at` is the provider's field (`providers.okta`).
pub fn compile_introspection(
    at: &str,
    r: RawIntrospection,
    env: EnvLookup<'_>,
) -> Result<Introspection, ConfigError> {
    let at = format!("{at}.introspection");
    // Only an absolute http(s) URL with an authority has one.
    let Some((authority, path)) = authority_of(&r.uri) else {
        return err(format!("{at}.uri"), "must be an absolute http(s) URL");
    };
    if r.cluster.is_empty() {
        return err(format!("{at}.cluster"), "must not be empty");
    }
    if r.client_id.is_empty() {
        return err(format!("{at}.client_id"), "must not be empty");
    }
    let secret = secret(&at, r.client_secret, env)?;
    let breaker = r.breaker.unwrap_or(crate::core::config::raw::RawBreaker {
        failures: None,
        cool_down_s: None,
    });
    Ok(Introspection {
        uri: r.uri.clone(),
        cluster: r.cluster,
        authority: authority.to_owned(),
        path: path.to_owned(),
        authorization: basic_authorization(&r.client_id, &secret),
        tokens: tokens(&at, r.tokens.as_deref())?,
        timeout_ms: within(&at, "timeout_ms", r.timeout_ms, 5000, 1, MAX_TIMEOUT_MS)?,
        cache_s: within(&at, "cache_s", r.cache_s, 60, 0, MAX_CACHE_S)?,
        negative_cache_s: within(&at, "negative_cache_s", r.negative_cache_s, 10, 0, 3600)?,
        max_entries: within(&at, "max_entries", r.max_entries, 10_000, 1, MAX_ENTRIES)?,
        require_exp: r.require_exp.unwrap_or(true),
        max_in_flight: within(&at, "max_in_flight", r.max_in_flight, 64, 1, MAX_IN_FLIGHT)?,
        breaker_failures: within(&at, "breaker.failures", breaker.failures, 5, 1, 1000)?,
        breaker_cool_down_s: within(&at, "breaker.cool_down_s", breaker.cool_down_s, 10, 1, 3600)?,
    })
}

fn secret(at: &str, s: RawSecret, env: EnvLookup<'_>) -> Result<String, ConfigError> {
    let field = format!("{at}.client_secret");
    let value = match s {
        RawSecret::Value(v) => v,
        RawSecret::Env(r) => match env(&r.env) {
            Some(v) => v,
            None => {
                return err(
                    field,
                    format!("environment variable {:?} is not set in the Wasm VM", r.env),
                )
            }
        },
    };
    match value.is_empty() {
        true => err(field, "must not be empty"),
        false => Ok(value),
    }
}

fn tokens(at: &str, t: Option<&str>) -> Result<Tokens, ConfigError> {
    match t {
        None | Some("opaque") => Ok(Tokens::Opaque),
        Some("all") => Ok(Tokens::All),
        Some(other) => err(
            format!("{at}.tokens"),
            format!("{other:?} is not one of \"opaque\", \"all\""),
        ),
    }
}

fn within<T: PartialOrd + Copy + std::fmt::Display>(
    at: &str,
    name: &str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    match min <= v && v <= max {
        true => Ok(v),
        false => err(
            format!("{at}.{name}"),
            format!("must be between {min} and {max}"),
        ),
    }
}
