//! The configuration as operators write it: serde types that refuse unknown fields. Nothing
//! here validates beyond types; `compile` turns these into the model.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
    pub realm: Option<String>,
    pub bypass_cors_preflight: Option<bool>,
    pub path_parameters: Option<String>,
    pub log: Option<RawLog>,
    pub signature_backend: Option<String>,
    pub token_cache_entries: Option<usize>,
    pub client_ip: Option<RawClientIp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    pub xff_trusted_hops: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: Option<RawJwks>,
    pub algorithms: Option<Vec<String>>,
    pub clock_skew_s: Option<u64>,
    pub max_lifetime_s: Option<u64>,
    pub client_ids: Option<Vec<String>>,
    pub from: Option<Vec<RawSource>>,
    #[serde(default)]
    pub forward_token: bool,
    #[serde(default)]
    pub claims_to_headers: Vec<RawClaimHeader>,
    pub payload_header: Option<String>,
    #[serde(default)]
    pub require_at_jwt: bool,
    pub dpop: Option<String>,
    pub dpop_algorithms: Option<Vec<String>>,
    pub dpop_max_age_s: Option<u64>,
    pub dpop_origin: Option<String>,
    pub mtls_binding: Option<String>,
    pub introspection: Option<RawIntrospection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntrospection {
    pub uri: String,
    pub cluster: String,
    pub client_id: String,
    pub client_secret: RawSecret,
    pub tokens: Option<String>,
    pub timeout_ms: Option<u64>,
    pub cache_s: Option<u64>,
    pub negative_cache_s: Option<u64>,
    pub max_entries: Option<usize>,
    pub require_exp: Option<bool>,
    pub max_in_flight: Option<usize>,
    pub breaker: Option<RawBreaker>,
}

/// A secret given in the configuration, or the name of a VM environment variable holding it.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum RawSecret {
    Value(String),
    Env(RawEnvRef),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvRef {
    pub env: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failures: Option<u32>,
    pub cool_down_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    pub uri: Option<String>,
    pub discovery: Option<bool>,
    pub cluster: Option<String>,
    pub inline: Option<Value>,
    pub timeout_ms: Option<u64>,
    pub cache_duration_s: Option<u64>,
    pub min_refetch_interval_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub header: Option<String>,
    pub prefix: Option<String>,
    pub query: Option<String>,
    pub cookie: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaimHeader {
    pub claim: String,
    pub header: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    #[serde(rename = "match", default)]
    pub match_: RawMatch,
    pub auth: Option<String>,
    pub providers: Option<Vec<String>>,
    pub scopes: Option<RawScopes>,
    #[serde(default)]
    pub claims: Vec<RawClaim>,
    #[serde(default)]
    pub rate_limits: Vec<Value>,
    pub ip: Option<RawIp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIp {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub prefix: Option<String>,
    pub exact: Option<String>,
    pub template: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<Vec<RawHeaderMatch>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatch {
    pub name: String,
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub present: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScopes {
    pub all: Option<Vec<String>>,
    pub any: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClaim {
    pub claim: String,
    pub equals: Option<Value>,
    #[serde(rename = "in")]
    pub in_: Option<Vec<Value>>,
    pub contains: Option<Value>,
    pub equals_param: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub allowed: Option<bool>,
    pub claims: Option<Vec<String>>,
}
