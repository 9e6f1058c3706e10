//! One HTTP stream: read the request, decide, apply; or park it until keys arrive.

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, MapType};

use crate::core::decision::outcome::{Decision, Outcome};
use crate::core::decision::response;
use crate::core::denial::Reason;
use crate::core::request::view as request;

use super::apply::{self, Applied};
use super::fetch;
use super::plugin::{Plugin, SavedRequest, Waiter};
use super::root::now_ms;

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
        // A parked request whose client went away must not be resumed later.
        self.plugin
            .waiters
            .borrow_mut()
            .retain(|w| w.context_id != self.context_id);
        true
    }
}

impl HttpContext for Http {
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

    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let now = now_ms();
        let Some(req) = read_request(self.plugin.needs_client_ip) else {
            let d = Decision::rejected(Reason::BadPath, "request has no :method or :path");
            apply::apply(
                &self.plugin,
                self.context_id,
                &d,
                &SavedRequest::default(),
                now,
            );
            return Action::Pause;
        };
        let mut d = self.plugin.decide(now, &req);
        let mut req = req;
        // At most twice: parking may find that a fetch just ended, and the second decision
        // then sees fresh keys (it can only ask to wait if a fetch is really pending).
        for _ in 0..2 {
            let Outcome::Wait { provider, refetch } = d.outcome else {
                break;
            };
            let timeout = self
                .plugin
                .caches
                .borrow()
                .get(provider)
                .map_or(0, |c| c.timeout_ms());
            let waiter = Waiter {
                context_id: self.context_id,
                provider,
                deadline_ms: now + timeout,
                request: req,
            };
            match fetch::park(&self.plugin, waiter, refetch, now) {
                Ok(()) => return Action::Pause,
                Err(waiter) => req = waiter.request,
            }
            d = self.plugin.decide(now, &req);
        }
        match apply::apply(&self.plugin, self.context_id, &d, &req, now) {
            Applied::Continue => Action::Continue,
            Applied::Responded => Action::Pause,
        }
    }
}
