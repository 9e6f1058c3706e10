//! The root context: configuration, the tick that drives key fetching, and HTTP-call answers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};

use crate::core::config::compile as config;

use crate::core::config::model::{DpopMode, SignatureBackend};
use crate::core::crypto::pure::PureVerifier;
use crate::core::crypto::verifier::SignatureVerifier;
use crate::core::gate::fetching::FetchAnswer;
use crate::core::gate::state::{Gate, Setup};
use crate::core::keys::jwk_set::MAX_JWKS_BYTES;
use crate::core::keys::lifecycle::ProviderCache;
use crate::core::ratelimit::charge::{self as ratelimit, KeyHasher};
use crate::core::token::replay;

use super::actions;
use super::host;
use super::host_verify::{self, HostVerifier};
use super::http::Http;
use super::introspection;
use super::metrics::Metrics;
use super::plugin::Plugin;
use super::shared_data::HostStore;
use super::unavailable::Unavailable;

/// How often each VM looks at the shared key records: the latency with which a worker sees a
/// key set another worker fetched.
const TICK: Duration = Duration::from_millis(50);

pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// The host's clock in microseconds (Envoy gives nanoseconds), for the decision-time
/// histogram.
pub fn now_us() -> u64 {
    host::current_time_ns().map_or(0, |ns| ns / 1000)
}

pub struct Root {
    plugin: Option<Rc<Plugin>>,
    /// Names this VM's fetch leases in the shared key records.
    owner: u64,
}

impl Root {
    pub fn new() -> Root {
        Root {
            plugin: None,
            owner: 0,
        }
    }

    fn configure(&mut self) -> Result<(), String> {
        let raw = host::get_buffer(
            BufferType::PluginConfiguration,
            0,
            config::MAX_CONFIG_BYTES + 1,
        )
        .map_err(|s| format!("cannot read the plugin configuration: {s:?}"))?
        .unwrap_or_default();
        let config = Rc::new(config::parse(&raw).map_err(|e| e.to_string())?);
        let verifier = choose_verifier(config.signature_backend)?;
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        let limits: Vec<usize> = config.rules.iter().map(|r| r.rate_limits.len()).collect();
        let introspecting: Vec<bool> = config
            .providers
            .iter()
            .map(|p| p.introspection.is_some())
            .collect();
        let metrics = Metrics::define(&names, &introspecting, &limits);
        for (index, rule) in config.rules.iter().enumerate() {
            // Created up front (the main thread configures first) so every later bucket
            // update is a real compare-and-swap.
            ratelimit::ensure_records(&HostStore, index, &rule.rate_limits).map_err(|e| {
                format!("rules[{index}].rate_limits: cannot create buckets in shared data: {e:?}")
            })?;
        }
        for (index, p) in config.providers.iter().enumerate() {
            if p.dpop.mode != DpopMode::Disabled {
                // Likewise for the DPoP replay record: exact only if every write is a CAS.
                replay::ensure_records(&HostStore, index).map_err(|e| {
                    format!(
                        "providers.{}: cannot create the DPoP replay record: {e:?}",
                        p.name
                    )
                })?;
            }
        }
        // Random (WASI randomness under SipHash) unless another VM already chose the key.
        let fresh = KeyHasher::new(
            RandomState::new().hash_one(0u8),
            RandomState::new().hash_one(1u8),
        );
        let limit_hasher = if config.has_rate_limits() {
            ratelimit::load_or_create_hasher(&HostStore, fresh).map_err(|e| {
                format!("rate_limits: cannot store the hash key in shared data: {e:?}")
            })?
        } else {
            fresh
        };
        // Random per VM (WASI randomness): names the holder of a fetch lease.
        self.owner = RandomState::new().hash_one(now_ms()).max(1);
        let gate = Gate::new(Setup {
            config: Rc::clone(&config),
            verifier,
            store: Rc::new(HostStore),
            owner: self.owner,
            limit_hasher,
        });
        log::info!(
            "configured {} provider(s), {} rule(s), signature backend {}",
            config.providers.len(),
            config.rules.len(),
            gate.verifier_name()
        );
        // The tick answers requests that waited for another stream's introspection call,
        // expires waits and re-sends orphaned calls, so introspection needs it too.
        if config.has_rate_limits()
            || config.introspects
            || config.remote_providers().next().is_some()
        {
            let _ = host::set_tick_period(TICK);
        }
        self.plugin = Some(Rc::new(Plugin {
            gate: RefCell::new(gate),
            config,
            metrics,
            rate_headers: RefCell::new(HashMap::new()),
            deferred: RefCell::new(Vec::new()),
            decided: std::cell::Cell::new(0),
        }));
        Ok(())
    }
}

fn choose_verifier(backend: SignatureBackend) -> Result<Box<dyn SignatureVerifier>, String> {
    Ok(match backend {
        SignatureBackend::Pure => Box::new(PureVerifier),
        _ if host_verify::host_available() => Box::new(HostVerifier),
        SignatureBackend::Host => {
            return Err("signature_backend: \"host\" requested but this Envoy has no working verify_signature foreign function".into())
        }
        _ => Box::new(PureVerifier),
    })
}

impl Context for Root {
    /// A new configuration replaced this one: the answers of its fetches in flight will
    /// never come, so their leases go now and another VM fetches on its next tick.
    fn on_done(&mut self) -> bool {
        if let Some(plugin) = &self.plugin {
            for p in &plugin.config.providers {
                ProviderCache::new(&p.name, &p.issuer, &p.jwks)
                    .release_lease(&HostStore, self.owner);
            }
        }
        true
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        if plugin.gate.borrow().is_introspection_call(token_id) {
            let todo = introspection::answered(&plugin, token_id, _headers, body_size);
            actions::run(&plugin, todo);
            return;
        }
        let header = |name: &str| {
            host::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
                .ok()
                .flatten()
                .and_then(|v| String::from_utf8(v).ok())
        };
        let status = header(":status").and_then(|s| s.parse::<u32>().ok());
        let cache_control = header("cache-control");
        // Reading one byte past the limit is enough for the cache to refuse an oversized body.
        let body = host::get_buffer(
            BufferType::HttpCallResponseBody,
            0,
            body_size.min(MAX_JWKS_BYTES + 1),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let answer = FetchAnswer {
            status,
            cache_control: cache_control.as_deref(),
            body: &body,
        };
        let now = now_ms();
        let jitter = actions::jitter_permille();
        let todo = plugin
            .gate
            .borrow_mut()
            .on_fetch_answer(token_id, answer, now, jitter);
        actions::run(&plugin, todo);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        match self.configure() {
            Ok(()) => true,
            Err(e) => {
                log::error!("invalid configuration: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(plugin) = self.plugin.clone() {
            let deferred = std::mem::take(&mut *plugin.deferred.borrow_mut());
            actions::run(&plugin, deferred);
            let todo = plugin.gate.borrow_mut().on_tick(now_ms());
            actions::run(&plugin, todo);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Never `None`: the SDK panics on it. Envoy should not create streams for a plugin
        // whose configuration was refused; if it does, they get 503.
        Some(match self.plugin.clone() {
            Some(plugin) => Box::new(Http { context_id, plugin }),
            None => Box::new(Unavailable),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
