//! The root context: configuration, key fetching on a timer, and resuming parked requests.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, MapType};

use crate::core::authenticator::Outcome;
use crate::core::config::{self, SignatureBackend};
use crate::core::jwks::MAX_JWKS_BYTES;
use crate::core::jwks_cache::{FetchOutcome, FetchRequest, ProviderCache};
use crate::core::reason::Reason;
use crate::core::verify::SignatureVerifier;
use crate::core::verify_pure::PureVerifier;

use super::apply::{self, Applied};
use super::host_verify::{self, HostVerifier};
use super::http::Http;
use super::metrics::Metrics;
use super::plugin::{Plugin, Waiter};

const TICK: Duration = Duration::from_millis(100);

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Spreads retries of many proxies apart; no cryptographic quality needed.
fn jitter_permille() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::from(d.subsec_micros() % 1000))
}

#[derive(Default)]
pub struct Root {
    plugin: Option<Rc<Plugin>>,
}

impl Root {
    fn configure(&mut self) -> Result<(), String> {
        let raw = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            config::MAX_CONFIG_BYTES + 1,
        )
        .map_err(|s| format!("cannot read the plugin configuration: {s:?}"))?
        .unwrap_or_default();
        let config = config::parse(&raw).map_err(|e| e.to_string())?;
        let verifier: Box<dyn SignatureVerifier> = match config.signature_backend {
            SignatureBackend::Pure => Box::new(PureVerifier),
            backend => {
                if host_verify::host_available() {
                    Box::new(HostVerifier)
                } else if backend == SignatureBackend::Host {
                    return Err("signature_backend: \"host\" requested but this Envoy has no working verify_signature foreign function".into());
                } else {
                    Box::new(PureVerifier)
                }
            }
        };
        let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
        let metrics = Metrics::define(&names);
        let caches = config.providers.iter().map(ProviderCache::new).collect();
        log::info!(
            "configured {} provider(s), {} rule(s), signature backend {}",
            config.providers.len(),
            config.rules.len(),
            verifier.name()
        );
        if config.remote_providers().next().is_some() {
            let _ = hostcalls::set_tick_period(TICK);
        }
        self.plugin = Some(Rc::new(Plugin {
            config,
            verifier,
            metrics,
            caches: RefCell::new(caches),
            waiters: RefCell::new(Vec::new()),
            fetches: RefCell::new(HashMap::new()),
        }));
        Ok(())
    }

    fn start_due_fetches(plugin: &Plugin, now: u64) {
        let due: Vec<(usize, FetchRequest)> = plugin
            .caches
            .borrow_mut()
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| c.poll(now).map(|r| (i, r)))
            .collect();
        for (provider, req) in due {
            let headers = vec![
                (":method", "GET"),
                (":path", req.path.as_str()),
                (":authority", req.authority.as_str()),
                ("accept", "application/json"),
                ("user-agent", "okta-jwt-filter"),
            ];
            match hostcalls::dispatch_http_call(
                &req.cluster,
                headers,
                None,
                vec![],
                Duration::from_millis(req.timeout_ms),
            ) {
                Ok(token) => {
                    plugin.fetches.borrow_mut().insert(token, provider);
                }
                Err(status) => {
                    let outcome = plugin.caches.borrow_mut()[provider]
                        .dispatch_failed(now, jitter_permille());
                    Self::report(
                        plugin,
                        provider,
                        &outcome,
                        &format!(" (cluster {:?}: {status:?})", req.cluster),
                    );
                    Self::settle_waiters(plugin, provider, now);
                }
            }
        }
    }

    fn report(plugin: &Plugin, provider: usize, outcome: &FetchOutcome, extra: &str) {
        let name = plugin.provider_name(Some(provider));
        match outcome {
            FetchOutcome::Updated {
                keys,
                skipped,
                fresh_s,
            } => {
                plugin.metrics.fetch(provider, true);
                log::info!("jwks fetched provider={name} keys={keys} fresh_for_s={fresh_s}");
                for s in skipped {
                    log::warn!("jwks key skipped provider={name}: {s}");
                }
            }
            FetchOutcome::Discovered => {
                log::info!("discovery document read provider={name}");
            }
            FetchOutcome::Failed { why, retry_in_ms } => {
                plugin.metrics.fetch(provider, false);
                log::warn!(
                    "jwks fetch failed provider={name}: {why}{extra}; retrying in {retry_in_ms} ms"
                );
            }
        }
    }

    /// Decides again every request parked on `provider`, now that its fetch has ended.
    fn settle_waiters(plugin: &Plugin, provider: usize, now: u64) {
        let parked: Vec<Waiter> = {
            let mut waiters = plugin.waiters.borrow_mut();
            let (mine, rest) = waiters.drain(..).partition(|w| w.provider == provider);
            *waiters = rest;
            mine
        };
        for w in parked {
            let d = plugin.decide(now, &w.request);
            if let Outcome::Wait { .. } = d.outcome {
                plugin.waiters.borrow_mut().push(w);
                continue;
            }
            if hostcalls::set_effective_context(w.context_id).is_err() {
                continue;
            }
            if let Applied::Continue = apply::apply(plugin, &d, &w.request, now) {
                let _ = hostcalls::resume_http_request();
            }
        }
    }

    fn expire_waiters(plugin: &Plugin, now: u64) {
        let expired: Vec<Waiter> = {
            let mut waiters = plugin.waiters.borrow_mut();
            let (late, rest) = waiters.drain(..).partition(|w| w.deadline_ms <= now);
            *waiters = rest;
            late
        };
        for w in expired {
            if hostcalls::set_effective_context(w.context_id).is_err() {
                continue;
            }
            let mut d = plugin.decide(now, &w.request);
            d.detail = "timed out waiting for the first key fetch";
            let retry = plugin.retry_after_s(Some(w.provider), now);
            apply::deny(plugin, Reason::JwksUnavailable, None, retry, &d, &w.request);
        }
    }
}

impl Context for Root {
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
        let Some(provider) = plugin.fetches.borrow_mut().remove(&token_id) else {
            return;
        };
        let header = |name: &str| {
            hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
                .ok()
                .flatten()
                .and_then(|v| String::from_utf8(v).ok())
        };
        let status = header(":status").and_then(|s| s.parse::<u32>().ok());
        let cache_control = header("cache-control");
        // Reading one byte past the limit is enough for the cache to refuse an oversized body.
        let body = hostcalls::get_buffer(
            BufferType::HttpCallResponseBody,
            0,
            body_size.min(MAX_JWKS_BYTES + 1),
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let now = now_ms();
        let outcome = plugin.caches.borrow_mut()[provider].on_response(
            now,
            status,
            cache_control.as_deref(),
            &body,
            jitter_permille(),
        );
        Self::report(&plugin, provider, &outcome, "");
        if outcome == FetchOutcome::Discovered {
            Self::start_due_fetches(&plugin, now);
        } else {
            Self::settle_waiters(&plugin, provider, now);
        }
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
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        let now = now_ms();
        Self::start_due_fetches(&plugin, now);
        Self::expire_waiters(&plugin, now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Envoy never creates streams for a plugin whose configuration was refused.
        let plugin = self.plugin.clone()?;
        Some(Box::new(Http { context_id, plugin }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
