//! What the pipeline reads besides the request: configuration, keys, verifier, clock, and the
//! per-VM and shared state it may update (the verified-token cache, rate-limit buckets).

use crate::core::config::model::Config;
use crate::core::crypto::verifier::SignatureVerifier;
use crate::core::introspection::answers::Answers;
use crate::core::keys::state::KeySource;
use crate::core::ratelimit::hash_key::KeyHasher;
use crate::core::request::view::{ClientCert, Headers};
use crate::core::store::SharedStore;
use crate::core::token::cache::TokenCache;

pub struct Env<'a> {
    pub config: &'a Config,
    /// Tokens verified earlier by this VM; `None` disables the shortcut.
    pub cache: Option<&'a mut TokenCache>,
    pub keys: &'a dyn KeySource,
    /// Cached introspection answers (and the key they are cached under).
    pub answers: &'a dyn Answers,
    pub verifier: &'a dyn SignatureVerifier,
    /// Seconds since the Unix epoch.
    pub now: u64,
    /// The same instant in milliseconds, for rate-limit refill.
    pub now_ms: u64,
    /// Where rate-limit buckets live (shared by every worker); `None` disables limits.
    pub store: Option<&'a dyn SharedStore>,
    /// The fleet's key for placing rate-limit key values in buckets.
    pub limit_hasher: KeyHasher,
    /// Record every check in `Decision::checks` (for `okta-jwt explain`).
    pub trace: bool,
}

/// The request as it arrived, before any normalization.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'r> {
    pub method: &'r str,
    /// `:path` as received, query included.
    pub path: &'r str,
    pub headers: &'r Headers,
    /// The downstream address without its port, when something keys on it.
    pub client_ip: Option<&'r str>,
    /// The client certificate's SHA-256 thumbprint, base64url (see `Request::client_cert`).
    pub client_cert: ClientCert<'r>,
}

/// A request's inputs, owned, so a parked request can be decided again later.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Read only when something keys on it.
    pub client_ip: Option<String>,
    /// Read only when a provider may need it (certificate-bound tokens).
    /// `None` until the shell read it (see `ClientCert`); then the thumbprint, if any.
    pub client_cert: Option<Option<String>>,
}

impl SavedRequest {
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming {
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
            client_ip: self.client_ip.as_deref(),
            client_cert: match &self.client_cert {
                None => ClientCert::Unread,
                Some(t) => ClientCert::from_option(t.as_deref()),
            },
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == "x-request-id")
            .map(|(_, v)| v.as_str())
    }
}
