//! One HTTP stream: read the request, hand it to the gate, carry out the decision (or stay
//! paused until the gate answers it from the root context).

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::core::decision::env::SavedRequest;
use crate::core::decision::outcome::Decision;
use crate::core::decision::response;
use crate::core::denial::Reason;
use crate::core::gate::state::Handled;
use crate::core::request::view as request;

use super::actions;
use super::apply::{self, Applied};
use super::host::{self, HostError};
use super::introspection;
use super::plugin::Plugin;
use super::root::now_us;

pub struct Http {
    pub context_id: u32,
    pub plugin: Rc<Plugin>,
}

/// A property, `None` when the host has none or refuses it with a documented status (as
/// always); an unexpected status is an error, and the request fails closed.
fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    match host::get_property(path) {
        Ok(v) => Ok(v),
        Err(HostError::Refused(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The request headers, with values that are not UTF-8 replaced lossily: such a value can
/// never carry a valid token, and matching on it stays conservative. `Ok(None)` without
/// `:method` or `:path`; an error when the host does not answer as the ABI says.
fn read_request(
    with_client_ip: bool,
    with_scheme: bool,
) -> Result<Option<SavedRequest>, HostError> {
    let pairs = host::get_map_bytes(MapType::HttpRequestHeaders)?;
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
        headers.push((":scheme".to_owned(), connection_scheme()?.to_owned()));
    }
    let client_ip = match with_client_ip {
        true => property(&["source", "address"])?,
        false => None,
    }
    .and_then(|a| String::from_utf8(a).ok())
    .map(|a| request::strip_port(&a).to_owned());
    let (Some(method), Some(path)) = (method, path) else {
        return Ok(None);
    };
    Ok(Some(SavedRequest {
        method,
        path,
        headers,
        client_ip,
        // Read only when a token turns out to be certificate-bound (`Handled::NeedClientCert`).
        client_cert: None,
    }))
}

/// The downstream connection's own scheme, for DPoP's `htu`: `https` when it is TLS. Envoy's
/// `:scheme` can come from a client's `x-forwarded-proto`, which must never choose it.
fn connection_scheme() -> Result<&'static str, HostError> {
    let tls = property(&["connection", "tls_version"])?.is_some_and(|v| !v.is_empty());
    Ok(if tls { "https" } else { "http" })
}

/// The downstream client certificate's thumbprint, for certificate-bound tokens (RFC 8705).
/// Absent on a connection without TLS or without a client certificate.
pub fn client_cert() -> Result<Option<String>, HostError> {
    let hex = property(&["connection", "sha256_peer_certificate_digest"])?;
    Ok(hex.and_then(|h| request::cert_thumbprint_from_hex(std::str::from_utf8(&h).ok()?)))
}

impl Context for Http {
    /// The answer to an introspection call this stream sent: this stream is answered now,
    /// the others waiting for the same token on the next tick.
    fn on_http_call_response(
        &mut self,
        call_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let todo = introspection::answered(&self.plugin, call_id, num_headers, body_size);
        let (mine, others): (Vec<_>, Vec<_>) = todo.into_iter().partition(|a| match a {
            crate::core::gate::action::Action::Answer { context, .. } => {
                *context == self.context_id
            }
            _ => true,
        });
        self.plugin.deferred.borrow_mut().extend(others);
        actions::run(&self.plugin, mine);
    }

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
        let req = match read_request(config.needs_client_ip(), config.has_dpop()) {
            Ok(Some(req)) => req,
            Ok(None) => {
                let d = Decision::rejected(Reason::BadPath, "request has no :method or :path");
                apply::apply(&self.plugin, self.context_id, &d, &SavedRequest::default());
                return Action::Pause;
            }
            // Logged by `host`; fail closed, as for key sets that cannot be had.
            Err(_) => {
                let d = Decision::rejected(Reason::JwksUnavailable, "host call failed");
                apply::apply(&self.plugin, self.context_id, &d, &SavedRequest::default());
                return Action::Pause;
            }
        };
        let started = now_us();
        let mut handled =
            self.plugin
                .gate
                .borrow_mut()
                .on_request(self.context_id, req, started / 1000);
        if let Handled::NeedClientCert(mut req) = handled {
            req.client_cert = match client_cert() {
                Ok(c) => Some(c),
                Err(_) => {
                    let d = Decision::rejected(Reason::JwksUnavailable, "host call failed");
                    apply::apply(&self.plugin, self.context_id, &d, &req);
                    return Action::Pause;
                }
            };
            handled =
                self.plugin
                    .gate
                    .borrow_mut()
                    .on_request(self.context_id, req, started / 1000);
        }
        // One request in DECISION_TIME_SAMPLE pays the second clock read and the histogram.
        if let Handled::Decided(..) = handled {
            if self.plugin.sample_decision_time() {
                let spent = now_us().saturating_sub(started);
                self.plugin.metrics.decision_time(spent);
            }
        }
        match handled {
            Handled::Parked(None) => Action::Pause,
            Handled::Parked(Some(call)) => {
                // A refused call answers this stream (503) at once, through the actions.
                let todo = introspection::send(&self.plugin, &call);
                actions::run(&self.plugin, todo);
                Action::Pause
            }
            Handled::Decided(d, req) => {
                match apply::apply(&self.plugin, self.context_id, &d, &req) {
                    Applied::Continue => Action::Continue,
                    Applied::Responded => Action::Pause,
                }
            }
            // The gate asks once, and only while the certificate is unread.
            Handled::NeedClientCert(req) => {
                let d = Decision::rejected(Reason::CertificateMismatch, "no client certificate");
                apply::apply(&self.plugin, self.context_id, &d, &req);
                Action::Pause
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
                let _ = host::set_map_value(MapType::HttpResponseHeaders, name, Some(&value));
            }
        }
        Action::Continue
    }
}
