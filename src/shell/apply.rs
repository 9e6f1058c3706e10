//! Carrying out a decision on the current (or effective) HTTP context.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

use crate::core::decision::outcome::{Decision, HeaderOp, Outcome};
use crate::core::decision::response;
use crate::core::denial::Reason;

use super::plugin::{Plugin, SavedRequest};

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

/// Carries out `d` on the stream `context_id`, which must be the effective context.
pub fn apply(
    plugin: &Plugin,
    context_id: u32,
    d: &Decision,
    req: &SavedRequest,
    now_ms: u64,
) -> Applied {
    plugin.metrics.token_cache(d.cache_hit);
    if let Some(rule) = d.rule.filter(|_| d.rate.is_some()) {
        plugin.metrics.rate_limit(rule, d.outcome == Outcome::Allow);
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
        Outcome::Deny { reason, scope } => {
            let retry = match d.retry_after_s {
                Some(s) => s,
                None => plugin.retry_after_s(d.provider, now_ms),
            };
            deny(plugin, *reason, scope.as_deref(), retry, d, req);
            Applied::Responded
        }
        // Reached only when the request could not be parked, or waited too long: keys that
        // exist without this kid make the token the problem; no keys at all is a 503.
        Outcome::Wait { provider, refetch } => {
            let reason = if *refetch {
                Reason::UnknownKid
            } else {
                Reason::JwksUnavailable
            };
            let retry = plugin.retry_after_s(Some(*provider), now_ms);
            deny(plugin, reason, None, retry, d, req);
            Applied::Responded
        }
    }
}

fn deny(
    plugin: &Plugin,
    reason: Reason,
    scope: Option<&str>,
    retry_after_s: u64,
    d: &Decision,
    req: &SavedRequest,
) {
    let r = response::denial(
        plugin.config.realm.as_deref(),
        reason,
        scope,
        retry_after_s,
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
