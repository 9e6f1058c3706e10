//! Carrying out a decision on the current (or effective) HTTP context.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

use crate::core::decision::env::SavedRequest;
use crate::core::decision::outcome::{Decision, HeaderOp, Outcome};
use crate::core::decision::response;

use super::plugin::Plugin;

pub enum Applied {
    /// Let the request go upstream.
    Continue,
    /// A local response was sent.
    Responded,
}

fn set_header(name: &str, value: Option<&str>) {
    // Envoy refuses a header write only for a stream that is already gone.
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
}

/// Carries out `d` on the stream `context_id`, which must be the effective context. The gate
/// only hands over decisions that allow or deny.
pub fn apply(plugin: &Plugin, context_id: u32, d: &Decision, req: &SavedRequest) -> Applied {
    plugin.metrics.token_cache(d.cache_hit);
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
            Applied::Continue
        }
        Outcome::Deny { .. } | Outcome::Wait { .. } => {
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
        plugin.config.realm.as_deref(),
        reason,
        scope,
        d.retry_after_s.unwrap_or(1),
        d.rate.as_ref(),
    );
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    if hostcalls::send_http_response(r.status, headers, Some(r.body.as_bytes())).is_err() {
        // Without a local reply the request must still never continue upstream.
        let _ = hostcalls::reset_http_request();
    }
    plugin.metrics.denied(reason);
    // Debug formatting quotes and escapes values, so a crafted sub cannot forge log lines.
    // Identity from a token refused before its signature was checked is only claimed.
    let identity = if d.identity_verified {
        ""
    } else {
        " identity=unverified"
    };
    log::info!(
        "denied status={} reason={} detail={:?} rule={} provider={} sub={:?} cid={:?}{identity} request_id={:?}",
        r.status,
        reason.as_str(),
        d.detail,
        d.rule.map_or("-".to_string(), |r| r.to_string()),
        plugin.provider_name(d.provider),
        d.sub.as_deref().unwrap_or("-"),
        d.cid.as_deref().unwrap_or("-"),
        req.request_id().unwrap_or("-"),
    );
}
