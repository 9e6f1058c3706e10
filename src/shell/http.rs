//! One HTTP stream: read the request, hand it to the gate, carry out the decision (or stay
//! paused until the gate answers it from the root context).

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::core::decision::env::SavedRequest;
use crate::core::decision::outcome::Decision;
use crate::core::decision::response;
use crate::core::denial::Reason;
use crate::core::gate::state::Handled;
use crate::core::request::view as request;

use super::apply::{self, Applied};
use super::plugin::Plugin;
use super::root::now_us;

pub struct Http {
    pub context_id: u32,
    pub plugin: Rc<Plugin>,
}

/// The request headers, with values that are not UTF-8 replaced lossily: such a value can
/// never carry a valid token, and matching on it stays conservative.
fn read_request(with_client_ip: bool, with_scheme: bool) -> Option<SavedRequest> {
    let pairs = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).ok()?;
    let mut method = None;
    let mut path = None;
    let mut headers = Vec::with_capacity(pairs.len());
    for (name, value) in pairs {
        let value = String::from_utf8(value)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        match name.as_str() {
            ":method" => method = Some(value),
            ":path" => path = Some(value),
            // Replaced below when DPoP needs it: Envoy may take it from x-forwarded-proto.
            ":scheme" if with_scheme => {}
            _ => headers.push((name, value)),
        }
    }
    if with_scheme {
        headers.push((":scheme".to_owned(), connection_scheme().to_owned()));
    }
    let client_ip = with_client_ip
        .then(|| {
            hostcalls::get_property(vec!["source", "address"])
                .ok()
                .flatten()
        })
        .flatten()
        .and_then(|a| String::from_utf8(a).ok())
        .map(|a| request::strip_port(&a).to_owned());
    Some(SavedRequest {
        method: method?,
        path: path?,
        headers,
        client_ip,
        client_cert: client_cert(),
    })
}

/// The downstream connection's own scheme, for DPoP's `htu`: `https` when it is TLS. Envoy's
/// `:scheme` can come from a client's `x-forwarded-proto`, which must never choose it.
fn connection_scheme() -> &'static str {
    let tls = hostcalls::get_property(vec!["connection", "tls_version"])
        .ok()
        .flatten()
        .is_some_and(|v| !v.is_empty());
    if tls {
        "https"
    } else {
        "http"
    }
}

/// The downstream client certificate's thumbprint, for certificate-bound tokens (RFC 8705).
/// Absent on a connection without TLS or without a client certificate.
fn client_cert() -> Option<String> {
    let hex = hostcalls::get_property(vec!["connection", "sha256_peer_certificate_digest"])
        .ok()
        .flatten()?;
    request::cert_thumbprint_from_hex(std::str::from_utf8(&hex).ok()?)
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        self.plugin
            .rate_headers
            .borrow_mut()
            .remove(&self.context_id);
        self.plugin
            .gate
            .borrow_mut()
            .on_stream_done(self.context_id);
        true
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let config = &self.plugin.config;
        let Some(req) = read_request(config.needs_client_ip(), config.has_dpop()) else {
            let d = Decision::rejected(Reason::BadPath, "request has no :method or :path");
            apply::apply(&self.plugin, self.context_id, &d, &SavedRequest::default());
            return Action::Pause;
        };
        let started = now_us();
        let handled =
            self.plugin
                .gate
                .borrow_mut()
                .on_request(self.context_id, req, started / 1000);
        if let Handled::Decided(..) = handled {
            let spent = now_us().saturating_sub(started);
            self.plugin.metrics.decision_time(spent);
        }
        match handled {
            Handled::Parked => Action::Pause,
            Handled::Decided(d, req) => {
                match apply::apply(&self.plugin, self.context_id, &d, &req) {
                    Applied::Continue => Action::Continue,
                    Applied::Responded => Action::Pause,
                }
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let state = self
            .plugin
            .rate_headers
            .borrow_mut()
            .remove(&self.context_id);
        if let Some(state) = state {
            for (name, value) in response::rate_headers(&state) {
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(&value));
            }
        }
        Action::Continue
    }
}
