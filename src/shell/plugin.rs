//! State shared by a VM's root context and its HTTP contexts: the compiled configuration,
//! key caches, the signature verifier, stats, and requests waiting for keys.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

use crate::core::config::model::Config;
use crate::core::crypto::verifier::SignatureVerifier;
use crate::core::decision::env::{Env, Incoming};
use crate::core::decision::outcome::{Decision, Outcome};
use crate::core::decision::pipeline as authenticator;
use crate::core::denial::Reason;
use crate::core::keys::lifecycle::ProviderCache;
use crate::core::keys::state::{KeySource, KeyState};
use crate::core::ratelimit::charge::{KeyHasher, LimitState};
use crate::core::token::cache::TokenCache;

use super::metrics::Metrics;
use super::shared_data::HostStore;

/// Requests parked per VM while a first key fetch is in flight. Past this, new arrivals are
/// answered 503 at once rather than holding unbounded memory.
pub const MAX_WAITERS: usize = 4096;

/// A request's inputs, owned, so a parked request can be decided again later.
#[derive(Default)]
pub struct SavedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Read only when a rate limit keys on it.
    pub client_ip: Option<String>,
}

impl SavedRequest {
    pub fn request_id(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == "x-request-id")
            .map(|(_, v)| v.as_str())
    }
}

pub struct Waiter {
    pub context_id: u32,
    pub provider: usize,
    /// Set once when the request is parked; re-parking after a fetch keeps it.
    pub deadline_ms: u64,
    pub request: SavedRequest,
}

pub struct Plugin {
    /// This VM's identity in shared-data leases.
    pub owner: u64,
    /// Whether requests need their client address read (an `ip` rate limit exists).
    pub needs_client_ip: bool,
    pub config: Config,
    pub verifier: Box<dyn SignatureVerifier>,
    pub metrics: Metrics,
    pub caches: RefCell<Vec<ProviderCache>>,
    pub token_cache: RefCell<TokenCache>,
    pub waiters: RefCell<Vec<Waiter>>,
    /// In-flight HTTP call token → provider index.
    pub fetches: RefCell<HashMap<u32, usize>>,
    /// Providers for which a parked request asked for an unknown-kid refetch.
    pub refetch_wanted: RefCell<HashSet<usize>>,
    /// Providers whose parked requests must be decided again on the next tick.
    pub settle_wanted: RefCell<HashSet<usize>>,
    /// `RateLimit-*` values to add to a stream's response, by HTTP context id.
    pub rate_headers: RefCell<HashMap<u32, LimitState>>,
    /// The second in which the once-a-second rate-limit work (hash key re-read, bucket
    /// gauges) last ran.
    pub second_done_s: Cell<u64>,
    /// The fleet's rate-limit hash key, as last read from shared data.
    pub limit_hasher: Cell<KeyHasher>,
}

struct Caches<'a> {
    caches: &'a [ProviderCache],
    now_ms: u64,
}

impl KeySource for Caches<'_> {
    fn keys(&self, provider: usize) -> KeyState<'_> {
        self.caches
            .get(provider)
            .map_or(KeyState::Unavailable, ProviderCache::key_state)
    }

    fn unknown_kid_may_wait(&self, provider: usize) -> bool {
        self.caches
            .get(provider)
            .is_some_and(|c| c.unknown_kid_may_wait(self.now_ms))
    }
}

impl Plugin {
    /// Decides, and when the answer hinges on this VM's copy of a key set being current (no
    /// keys yet, or an unknown kid), reads the shared record and decides once more: another
    /// worker may have fetched since this VM's last tick.
    pub fn decide(&self, now_ms: u64, req: &SavedRequest) -> Decision {
        let d = self.decide_once(now_ms, req);
        let stale_possible = matches!(
            d.outcome,
            Outcome::Deny {
                reason: Reason::JwksUnavailable | Reason::UnknownKid,
                ..
            }
        );
        let Some(provider) = d.provider.filter(|_| stale_possible) else {
            return d;
        };
        let synced = match self.caches.borrow_mut().get_mut(provider) {
            Some(c) => c.sync(&HostStore),
            None => return d,
        };
        if synced.epoch_moved {
            self.settle_wanted.borrow_mut().insert(provider);
            if synced.keys_changed {
                self.purge_token_cache(provider);
            }
            return self.decide_once(now_ms, req);
        }
        d
    }

    fn decide_once(&self, now_ms: u64, req: &SavedRequest) -> Decision {
        let caches = self.caches.borrow();
        let mut token_cache = self.token_cache.borrow_mut();
        let mut env = Env {
            config: &self.config,
            cache: (self.config.token_cache_entries > 0).then_some(&mut *token_cache),
            keys: &Caches {
                caches: &caches,
                now_ms,
            },
            verifier: self.verifier.as_ref(),
            now: now_ms / 1000,
            now_ms,
            store: Some(&HostStore),
            limit_hasher: self.limit_hasher.get(),
        };
        authenticator::decide(
            &mut env,
            &Incoming {
                method: &req.method,
                path: &req.path,
                headers: &req.headers,
                client_ip: req.client_ip.as_deref(),
            },
        )
    }

    /// Forgets cached tokens whose verifying key `provider`'s set no longer has.
    pub fn purge_token_cache(&self, provider: usize) {
        if let Some(set) = self.caches.borrow().get(provider).and_then(|c| c.keys()) {
            self.token_cache.borrow_mut().retain_keys(provider, set);
        }
    }

    pub fn retry_after_s(&self, provider: Option<usize>, now_ms: u64) -> u64 {
        provider
            .and_then(|p| self.caches.borrow().get(p).map(|c| c.retry_after_s(now_ms)))
            .unwrap_or(1)
    }

    pub fn provider_name(&self, provider: Option<usize>) -> &str {
        provider
            .and_then(|p| self.config.providers.get(p))
            .map_or("-", |p| p.name.as_str())
    }
}
