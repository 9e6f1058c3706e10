//! The HTTP context of a root that cannot serve (no valid configuration): every request gets
//! a 503 in the usual denial format, so the filter fails closed. The SDK panics, killing the
//! VM, when `create_http_context` returns `None`; this is what it returns instead.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::core::decision::response;
use crate::core::denial::Reason;

use super::apply;

pub struct Unavailable;

impl Context for Unavailable {}

impl HttpContext for Unavailable {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        log::warn!("request refused with 503: this plugin has no valid configuration");
        // No configuration, so no realm: the generic 503 with `Retry-After`.
        let r = response::denial(None::<&str>, Reason::JwksUnavailable, None, 1, None);
        apply::send_or_reset(&r);
        Action::Pause
    }
}
