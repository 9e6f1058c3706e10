//! Introspection calls through Envoy's HTTP callout: sending one (from the stream that needs
//! it, or from the root context when that stream went away) and reading its response.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};

use crate::core::gate::action::Action;
use crate::core::introspection::answer::MAX_ANSWER_BYTES;
use crate::core::introspection::call::CallRequest;

use super::host;
use super::plugin::Plugin;
use super::root::now_ms;

/// Sends `call` from the current context (its answer comes back to it), and tells the gate.
/// A refused dispatch gives the actions that answer its waiters.
pub fn send(plugin: &Plugin, call: &CallRequest) -> Vec<Action> {
    let mut headers: Vec<(&str, &str)> =
        call.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    headers.push(("authorization", call.authorization.expose()));
    let body = call.body.expose().as_bytes();
    let timeout = Duration::from_millis(call.timeout_ms);
    // Through the SDK, which must register the callout (see `host`).
    match hostcalls::dispatch_http_call(&call.cluster, headers, Some(body), vec![], timeout) {
        Ok(id) => {
            plugin
                .gate
                .borrow_mut()
                .introspection_dispatched(call.provider, call.key, id);
            Vec::new()
        }
        Err(status) => {
            log::warn!(
                "introspection call not dispatched provider={} (cluster {:?}: {status:?})",
                plugin.provider_name(Some(call.provider)),
                call.cluster
            );
            plugin
                .gate
                .borrow_mut()
                .introspection_not_dispatched(call.provider, call.key, now_ms())
        }
    }
}

/// The response to introspection call `call_id`, handed to the gate. `num_headers` is 0
/// when no response came (reset, timeout). An oversized body is never read.
pub fn answered(
    plugin: &Plugin,
    call_id: u32,
    num_headers: usize,
    body_size: usize,
) -> Vec<Action> {
    let status = match num_headers {
        0 => None,
        _ => host::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u32>().ok()),
    };
    let body = match body_size {
        0 => Vec::new(),
        n if n > MAX_ANSWER_BYTES => Vec::new(),
        n => host::get_buffer(BufferType::HttpCallResponseBody, 0, n)
            .ok()
            .flatten()
            .unwrap_or_default(),
    };
    plugin
        .gate
        .borrow_mut()
        .on_introspection_answer(call_id, status, body_size, &body, now_ms())
}
