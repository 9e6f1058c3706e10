//! Carrying out a decision on the current (or effective) HTTP context.

use proxy_wasm::types::MapType;

use crate::core::decision::env::SavedRequest;
use crate::core::decision::outcome::{Decision, HeaderOp, Outcome};
use crate::core::decision::{abuse, log, response};

use super::host;
use super::plugin::Plugin;

pub enum Applied {
    /// Let the request go upstream.
    Continue,
    /// A local response was sent.
    Responded,
}

fn set_header(name: &str, value: Option<&str>) {
    // Envoy refuses a header write only for a stream that is already gone.
    let _ = host::set_map_value(MapType::HttpRequestHeaders, name, value);
}

/// Carries out `d` on the stream `context_id`, which must be the effective context. The gate
/// only hands over decisions that allow or deny.
pub fn apply(plugin: &Plugin, context_id: u32, d: &Decision, req: &SavedRequest) -> Applied {
    plugin.metrics.token_cache(d.cache_hit);
    plugin
        .metrics
        .introspection_cache(d.provider, d.introspection_hit);
    // Here rather than in the stream's callback, so parked requests are counted too.
    if let Some(effect) = abuse::failure_effect(&plugin.config, d) {
        plugin.metrics.failure(effect);
    }
    if let Some(rule) = d.rule.filter(|_| d.rate.is_some()) {
        plugin.metrics.rate_limit(rule, d.is_allowed());
    }
    match &d.outcome {
        Outcome::Allow => {
            for op in &d.ops {
                match op {
                    HeaderOp::Remove(name) => set_header(name, None),
                    HeaderOp::Set(name, value) => set_header(name, Some(value)),
                }
            }
            if let Some(path) = &d.path {
                set_header(":path", Some(path));
            }
            if let Some(state) = d.rate {
                plugin.rate_headers.borrow_mut().insert(context_id, state);
            }
            plugin.metrics.allowed();
            if plugin.config.log.allowed {
                log_decision(plugin, d, req, 200);
            }
            Applied::Continue
        }
        Outcome::Deny { .. }
        | Outcome::Wait { .. }
        | Outcome::Introspect { .. }
        | Outcome::NeedClientCert => {
            deny(plugin, d, req);
            Applied::Responded
        }
    }
}

fn deny(plugin: &Plugin, d: &Decision, req: &SavedRequest) {
    let (reason, scope) = match &d.outcome {
        Outcome::Deny { reason, scope } => (*reason, scope.as_deref()),
        // Unreachable by the gate's contract; refused all the same.
        _ => (crate::core::denial::Reason::JwksUnavailable, None),
    };
    let r = response::denial(
        response::Challenge::of(&plugin.config, d.rule),
        reason,
        scope,
        d.retry_after_s.unwrap_or(1),
        d.rate.as_ref(),
    );
    send_or_reset(&r);
    plugin.metrics.denied(reason);
    log_decision(plugin, d, req, r.status);
}

/// Sends `r` as the local reply of the current stream; without one, the request must still
/// never continue upstream, so the stream is reset.
pub fn send_or_reset(r: &response::Response) {
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    if host::send_http_response(r.status, &headers, r.body.as_bytes()).is_err() {
        let _ = host::reset_http_request();
    }
}

/// The decision log line: always for a denial, for an allowed request when `log.allowed`.
pub fn log_decision(plugin: &Plugin, d: &Decision, req: &SavedRequest, status: u32) {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let ctx = log::Context {
        status,
        reason: match &d.outcome {
            Outcome::Deny { reason, .. } => Some(*reason),
            _ => None,
        },
        provider: d
            .provider
            .and_then(|p| plugin.config.providers.get(p))
            .map(|p| p.name.as_str()),
        method: &req.method,
        path: &req.path,
        request_id: header("x-request-id"),
        traceparent: header("traceparent"),
    };
    ::log::info!("{}", log::line(d, &ctx));
}
