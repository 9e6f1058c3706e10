//! A VM's gate: configuration, key caches, the verified-token cache, the waiting room, and
//! the handling of one request (decide, or park until keys arrive).

use std::collections::HashMap;
use std::rc::Rc;

use crate::core::config::model::Config;
use crate::core::crypto::verifier::SignatureVerifier;
use crate::core::decision::env::{Env, SavedRequest};
use crate::core::decision::outcome::{Decision, Outcome};
use crate::core::decision::pipeline;
use crate::core::denial::{Denial, Reason};
use crate::core::introspection::answer::Answer;
use crate::core::introspection::answers::Answers;
use crate::core::introspection::call::CallRequest;
use crate::core::introspection::flights::Introspector;
use crate::core::introspection::token_key::{TokenKey, TokenKeyer};
use crate::core::keys::lifecycle::ProviderCache;
use crate::core::keys::state::{KeySource, KeyState};
use crate::core::ratelimit::hash_key::KeyHasher;
use crate::core::store::SharedStore;
use crate::core::token::cache::TokenCache;

use super::waiting_room::{Waiter, WaitingRoom, MAX_WAITERS};

/// What a VM is made of, decided at configuration.
pub struct Setup {
    pub config: Rc<Config>,
    pub verifier: Box<dyn SignatureVerifier>,
    /// Shared by every VM of the process.
    pub store: Rc<dyn SharedStore>,
    /// This VM's identity in shared-data leases (random, non-zero).
    pub owner: u64,
    /// The fleet's rate-limit hash key, as read or created at configuration.
    pub limit_hasher: KeyHasher,
}

pub struct Gate {
    pub(super) setup: Setup,
    pub(super) caches: Vec<ProviderCache>,
    pub(super) token_cache: TokenCache,
    pub(super) room: WaitingRoom,
    /// In-flight HTTP call token -> provider.
    pub(super) fetches: HashMap<u32, usize>,
    /// The second in which the once-a-second rate-limit work last ran.
    pub(super) second_done_s: u64,
    /// Per provider: its introspection state, when it introspects.
    pub(super) introspectors: Vec<Option<Introspector>>,
    /// This VM's key for introspection cache keys.
    pub(super) keyer: TokenKeyer,
    /// An answer just received, seen by the decisions of its waiters even when it is not
    /// cached (`cache_s: 0`, or an `exp` already reached).
    pub(super) fresh: Option<(usize, TokenKey, Answer)>,
}

/// What became of a request.
// Not boxed: it is moved once per request, and a box would cost an allocation on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Handled {
    /// Carry out this decision now.
    Decided(Decision, SavedRequest),
    /// Paused until a fetch or an introspection call ends or its deadline passes: an
    /// `Action::Answer` will come. With a call: send it from this stream, then report
    /// `Gate::introspection_dispatched` or `Gate::introspection_not_dispatched`.
    Parked(Option<CallRequest>),
    /// Read the stream's client certificate into the request and hand it back: the token is
    /// certificate-bound.
    NeedClientCert(SavedRequest),
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

/// The introspection answers a VM holds, as the pipeline reads them.
pub(super) struct Held<'a> {
    pub introspectors: &'a [Option<Introspector>],
    pub keyer: TokenKeyer,
    pub fresh: Option<&'a (usize, TokenKey, Answer)>,
}

impl Answers for Held<'_> {
    fn key(&self, token: &str) -> TokenKey {
        self.keyer.key(token)
    }

    fn answer(&self, provider: usize, key: TokenKey, now_ms: u64) -> Option<Answer> {
        if let Some((p, k, a)) = self.fresh {
            if *p == provider && *k == key {
                return Some(a.clone());
            }
        }
        self.introspectors
            .get(provider)?
            .as_ref()?
            .lookup(key, now_ms)
            .cloned()
    }
}

/// What the pipeline reads of a VM: its setup, key caches, introspection answers and (when
/// deciding) token cache.
fn env<'a>(
    setup: &'a Setup,
    keys: &'a Caches<'a>,
    answers: &'a Held<'a>,
    cache: Option<&'a mut TokenCache>,
) -> Env<'a> {
    Env {
        config: &setup.config,
        cache,
        keys,
        answers,
        verifier: setup.verifier.as_ref(),
        now: keys.now_ms / 1000,
        now_ms: keys.now_ms,
        store: Some(&*setup.store),
        limit_hasher: setup.limit_hasher,
        trace: false,
    }
}

impl Gate {
    /// A gate whose key caches have taken in what the shared records hold already.
    pub fn new(setup: Setup) -> Gate {
        let caches = setup
            .config
            .providers
            .iter()
            .map(|p| ProviderCache::new(&p.name, &p.issuer, &p.jwks))
            .collect();
        let introspectors = setup
            .config
            .providers
            .iter()
            .map(|p| p.introspection.clone().map(Introspector::new))
            .collect();
        let mut gate = Gate {
            introspectors,
            keyer: TokenKeyer::random(),
            fresh: None,
            token_cache: TokenCache::new(setup.config.token_cache_entries),
            setup,
            caches,
            room: WaitingRoom::new(MAX_WAITERS),
            fetches: HashMap::new(),
            second_done_s: 0,
        };
        for c in gate.caches.iter_mut() {
            c.ensure_record(&*gate.setup.store);
            c.sync(&*gate.setup.store);
        }
        gate
    }

    pub fn config(&self) -> &Rc<Config> {
        &self.setup.config
    }

    pub fn verifier_name(&self) -> &'static str {
        self.setup.verifier.name()
    }

    pub fn waiting(&self) -> usize {
        self.room.len()
    }

    /// Decides `req`, or parks it when the answer hinges on a fetch that is under way.
    pub fn on_request(&mut self, context: u32, req: SavedRequest, now_ms: u64) -> Handled {
        let mut d = self.decide(now_ms, &req);
        if d.outcome == Outcome::NeedClientCert && req.client_cert.is_none() {
            return Handled::NeedClientCert(req);
        }
        if matches!(d.outcome, Outcome::Introspect { .. }) {
            return self.wait_for_answer(context, d, req, now_ms);
        }
        let mut req = req;
        // At most twice: parking may find that a fetch just ended, and the second decision
        // then sees fresh keys (it can only ask to wait if a fetch is really pending).
        for _ in 0..2 {
            let Outcome::Wait { provider, refetch } = d.outcome else {
                break;
            };
            let deadline_ms = now_ms + self.caches.get(provider).map_or(0, |c| c.timeout_ms());
            let waiter = Waiter {
                context,
                provider,
                deadline_ms,
                request: req,
                introspection: None,
            };
            match self.park(waiter, refetch, now_ms) {
                Ok(()) => return Handled::Parked(None),
                Err(waiter) => req = waiter.request,
            }
            d = self.decide(now_ms, &req);
        }
        Handled::Decided(self.finish(d, &req, now_ms), req)
    }

    /// A stream that ended is never answered later; the introspection calls it sent are
    /// sent again from the root context on the next tick if requests still wait for them.
    pub fn on_stream_done(&mut self, context: u32) {
        self.room.forget(context);
        for (provider, i) in self.introspectors.iter_mut().enumerate() {
            let Some(i) = i.as_mut() else { continue };
            for key in i.owner_gone(context) {
                if !self.room.waits_for(provider, key) {
                    i.drop_flight(key);
                }
            }
        }
    }

    /// Parks a request until `provider`'s next fetch ends. A refetch is only requested here:
    /// the SDK delivers an HTTP call's answer to the context that made it, and only the root
    /// context outlives every request, so the next tick starts it. Hands the waiter back when
    /// there is nothing to wait for or the room is full; the caller then decides again.
    // The refused waiter is handed back to be answered at once; it is moved, never copied.
    #[allow(clippy::result_large_err)]
    fn park(&mut self, waiter: Waiter, refetch: bool, now_ms: u64) -> Result<(), Waiter> {
        let provider = waiter.provider;
        if self.room.is_full() {
            return Err(waiter);
        }
        if refetch {
            let Some(c) = self.caches.get_mut(provider) else {
                return Err(waiter);
            };
            let synced = c.sync(&*self.setup.store);
            if synced.epoch_moved {
                // A fetch ended that this VM had not seen: this request is decided again on
                // the fresh set, and those parked earlier are settled on the next tick:
                // resuming other streams from inside this stream's callback would re-enter
                // Envoy's filter chain.
                self.room.want_settle(provider);
                return Err(waiter);
            }
            if !c.unknown_kid_may_wait(now_ms) {
                return Err(waiter);
            }
            self.room.want_refetch(provider);
        }
        self.room.park(waiter)
    }

    /// Decides, and when the answer hinges on this VM's copy of a key set being current (no
    /// keys yet, or an unknown kid), reads the shared record and decides once more: another
    /// worker may have fetched since this VM's last tick.
    pub(super) fn decide(&mut self, now_ms: u64, req: &SavedRequest) -> Decision {
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
        let Some(c) = self.caches.get_mut(provider) else {
            return d;
        };
        let synced = c.sync(&*self.setup.store);
        if !synced.epoch_moved {
            return d;
        }
        self.room.want_settle(provider);
        if synced.keys_changed {
            self.purge_token_cache(provider);
        }
        self.decide_once(now_ms, req)
    }

    fn decide_once(&mut self, now_ms: u64, req: &SavedRequest) -> Decision {
        let setup = &self.setup;
        let keys = Caches {
            caches: &self.caches,
            now_ms,
        };
        let answers = Held {
            introspectors: &self.introspectors,
            keyer: self.keyer,
            fresh: self.fresh.as_ref(),
        };
        let cache = (setup.config.token_cache_entries > 0).then_some(&mut self.token_cache);
        pipeline::decide(&mut env(setup, &keys, &answers, cache), &req.incoming())
    }

    /// The decision the shell carries out: `answerable`, then a failure charged once (a
    /// request may have been decided twice, and a wait may have become a 401).
    pub(super) fn finish(&self, d: Decision, req: &SavedRequest, now_ms: u64) -> Decision {
        let d = self.answerable(d, now_ms);
        let setup = &self.setup;
        let keys = Caches {
            caches: &self.caches,
            now_ms,
        };
        let answers = Held {
            introspectors: &self.introspectors,
            keyer: self.keyer,
            fresh: None,
        };
        pipeline::charge_failure(&env(setup, &keys, &answers, None), &req.incoming(), d)
    }

    /// A decision the shell can carry out: a wait that could not be parked (or lasted too
    /// long) becomes its denial, with the `Retry-After` of the provider's next attempt.
    pub(super) fn answerable(&self, mut d: Decision, now_ms: u64) -> Decision {
        if let Outcome::Wait { provider, refetch } = d.outcome {
            // Keys that exist without this kid make the token the problem; no keys at all
            // is a 503.
            let reason = match refetch {
                true => Reason::UnknownKid,
                false => Reason::JwksUnavailable,
            };
            let detail = d.detail;
            d = d.deny(Denial::new(reason, detail));
            d.provider = Some(provider);
        }
        if let Outcome::Introspect { provider, .. } = d.outcome {
            let detail = d.detail;
            d = d.deny(Denial::new(Reason::IntrospectionUnavailable, detail));
            d.provider = Some(provider);
            d.retry_after_s = d.retry_after_s.or(Some(1));
        }
        if !d.is_allowed() && d.retry_after_s.is_none() {
            d.retry_after_s = Some(self.retry_after_s(d.provider, now_ms));
        }
        d
    }

    /// Forgets cached tokens whose verifying key `provider`'s set no longer has.
    pub(super) fn purge_token_cache(&mut self, provider: usize) {
        if let Some(set) = self.caches.get(provider).and_then(|c| c.keys()) {
            self.token_cache.retain_keys(provider, set);
        }
    }

    /// Whole seconds until the provider's next fetch attempt (1 when unknown).
    pub fn retry_after_s(&self, provider: Option<usize>, now_ms: u64) -> u64 {
        provider
            .and_then(|p| self.caches.get(p).map(|c| c.retry_after_s(now_ms)))
            .unwrap_or(1)
    }

    pub fn provider_name(&self, provider: Option<usize>) -> &str {
        provider
            .and_then(|p| self.setup.config.providers.get(p))
            .map_or("-", |p| p.name.as_str())
    }
}
