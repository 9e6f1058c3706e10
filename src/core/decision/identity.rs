//! Who a verified token speaks for: what authentication hands to authorization.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::core::request::extract::Source;
use crate::core::token::claims;

/// How the token was found good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// This VM verified the same token earlier (the verified-token cache).
    Cached,
    /// Its signature was checked now.
    Signature,
    /// An opaque token, described by the provider's introspection endpoint.
    Introspected,
}

#[derive(Debug, Clone)]
pub struct Identity<'c, 'r> {
    /// Index into `Config::providers`.
    pub provider: usize,
    /// Where the token came from, so it can be removed before the request goes upstream.
    pub source: &'c Source,
    pub token: Cow<'r, str>,
    /// Shared with the cache entry, so a hit copies no JSON.
    pub claims: Arc<Map<String, Value>>,
    pub verification: Verification,
}

impl Identity<'_, '_> {
    /// The payload segment as sent, for `payload_header`; for an opaque token, the
    /// introspection answer's claims as compact JSON, base64url like a JWT payload.
    pub fn payload_b64(&self) -> Cow<'_, str> {
        use base64::Engine;
        match self.verification {
            Verification::Introspected => Cow::Owned(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(serde_json::to_vec(&*self.claims).unwrap_or_default()),
            ),
            _ => Cow::Borrowed(self.token.split('.').nth(1).unwrap_or_default()),
        }
    }

    pub fn sub(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    pub fn client_id(&self) -> Option<&str> {
        claims::client_id(&self.claims)
    }
}
