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
fn read_request(with_client_ip: bool) -> Option<SavedRequest> {
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
            _ => headers.push((name, value)),
        }
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
    })
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
        let Some(req) = read_request(self.plugin.config.needs_client_ip()) else {
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
