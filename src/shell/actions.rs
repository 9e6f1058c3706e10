//! Carrying out what the gate asks of the root context: key fetches through Envoy's HTTP
//! callout, answers to parked streams, and the log lines and stats of fetches.

use std::time::Duration;

use proxy_wasm::hostcalls;

use super::host;

use crate::core::decision::env::SavedRequest;
use crate::core::decision::outcome::{Decision, Outcome};
use crate::core::denial::Reason;
use crate::core::gate::action::Action;
use crate::core::gate::state::Handled;
use crate::core::keys::lifecycle::{FetchOutcome, FetchRequest};

use super::apply::{self, Applied};
use super::http;
use super::introspection;
use super::plugin::Plugin;
use super::root::now_ms;

/// Spreads retries of many proxies apart; no cryptographic quality needed.
pub fn jitter_permille() -> u64 {
    now_ms() % 1000
}

/// Carries out `actions`, and those that carrying them out brings (a refused dispatch).
pub fn run(plugin: &Plugin, actions: Vec<Action>) {
    let mut queue = actions;
    // Each refused dispatch yields at most one more batch; bounded all the same.
    for _ in 0..8 {
        let mut next = Vec::new();
        for action in queue {
            next.extend(run_one(plugin, action));
        }
        if next.is_empty() {
            return;
        }
        queue = next;
    }
}

fn run_one(plugin: &Plugin, action: Action) -> Vec<Action> {
    match action {
        Action::Answer {
            context,
            decision,
            request,
        } => {
            if host::set_effective_context(context).is_err() {
                return Vec::new();
            }
            if decision.outcome == Outcome::NeedClientCert {
                return with_certificate(plugin, context, request);
            }
            if let Applied::Continue = apply::apply(plugin, context, &decision, &request) {
                let _ = host::resume_http_request();
            }
        }
        Action::Fetch {
            provider,
            request,
            unknown_kid,
        } => {
            if unknown_kid {
                plugin.metrics.refetch_unknown_kid(provider);
            }
            return dispatch(plugin, provider, &request);
        }
        Action::Fetched {
            provider,
            outcome,
            class,
        } => {
            plugin.metrics.fetch_outcome(provider, class);
            report(plugin, provider, &outcome);
        }
        Action::KeyGauges(gauges) => {
            for g in gauges {
                plugin
                    .metrics
                    .key_set(g.provider, g.keys, g.age_s, g.stale_in_s);
            }
        }
        Action::Introspect(call) => return introspection::send(plugin, &call),
        Action::Introspected { provider, class } => {
            plugin.metrics.introspection_call(provider, class);
            if !matches!(class, "active" | "inactive") {
                log::warn!(
                    "introspection call failed provider={} class={class}",
                    plugin.provider_name(Some(provider))
                );
            }
        }
        Action::IntrospectionGauges(gauges) => {
            for g in gauges {
                plugin
                    .metrics
                    .introspection_gauges(g.provider, g.in_flight, g.cached, g.breaker);
            }
        }
        Action::BucketGauges(gauges) => {
            for (rule, limit, in_use) in gauges {
                plugin.metrics.buckets(rule, limit, in_use);
            }
        }
    }
    Vec::new()
}

/// A parked request that turned out to need its certificate (the effective context is its
/// stream): read it, and decide again.
fn with_certificate(plugin: &Plugin, context: u32, mut request: SavedRequest) -> Vec<Action> {
    let Ok(cert) = http::client_cert() else {
        let d = Decision::rejected(Reason::JwksUnavailable, "host call failed");
        apply::apply(plugin, context, &d, &request);
        return Vec::new();
    };
    request.client_cert = Some(cert);
    let handled = plugin
        .gate
        .borrow_mut()
        .on_request(context, request, now_ms());
    match handled {
        Handled::Decided(d, req) => {
            if let Applied::Continue = apply::apply(plugin, context, &d, &req) {
                let _ = host::resume_http_request();
            }
        }
        Handled::Parked(None) => {}
        Handled::Parked(Some(call)) => return introspection::send(plugin, &call),
        // The gate asks once, and only while the certificate is unread.
        Handled::NeedClientCert(req) => {
            let d = Decision::rejected(Reason::CertificateMismatch, "no client certificate");
            apply::apply(plugin, context, &d, &req);
        }
    }
    Vec::new()
}

fn dispatch(plugin: &Plugin, provider: usize, req: &FetchRequest) -> Vec<Action> {
    let headers = vec![
        (":method", "GET"),
        (":path", req.path.as_str()),
        (":authority", req.authority.as_str()),
        ("accept", "application/json"),
        ("user-agent", "okta-jwt-filter"),
    ];
    let timeout = Duration::from_millis(req.timeout_ms);
    // Through the SDK, which must register the callout (see `host`).
    match hostcalls::dispatch_http_call(&req.cluster, headers, None, vec![], timeout) {
        Ok(token) => {
            plugin.gate.borrow_mut().fetch_dispatched(provider, token);
            Vec::new()
        }
        Err(status) => {
            log::warn!(
                "jwks fetch not dispatched provider={} (cluster {:?}: {status:?})",
                plugin.provider_name(Some(provider)),
                req.cluster
            );
            let now = now_ms();
            plugin
                .gate
                .borrow_mut()
                .fetch_not_dispatched(provider, now, jitter_permille())
        }
    }
}

fn report(plugin: &Plugin, provider: usize, outcome: &FetchOutcome) {
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
        FetchOutcome::Discovered => log::info!("jwks discovery document read provider={name}"),
        FetchOutcome::Failed { why, retry_in_ms } => {
            plugin.metrics.fetch(provider, false);
            log::warn!(
                "jwks fetch failed provider={name}: {why}; next attempt in {retry_in_ms} ms"
            );
        }
    }
}
