//! Where a provider's keys come from: a URI, discovery, or an inline set, and fetch timings.

use crate::core::keys::jwk_set::KeySet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Remote { uri: String, cluster: String },
    Discovery { cluster: String },
    Inline(KeySet),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    pub source: JwksSource,
    pub timeout_ms: u64,
    pub cache_duration_s: u64,
    pub min_refetch_interval_s: u64,
}

/// `(authority, path)` of an absolute http(s) URL.
pub fn authority_of(uri: &str) -> Option<(&str, &str)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((authority, path))
}
