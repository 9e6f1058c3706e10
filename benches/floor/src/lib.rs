//! `floor`: the bench's lower bound for a proxy-wasm auth filter. It reads the `authorization`
//! header, removes it, sets one header for the upstream, and answers 401 when the header is
//! absent. No parsing, no verification: what is left is the cost of the wasm route itself
//! (the VM callbacks of a stream and three host calls).

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Floor) });
}}

struct Floor;

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if self.get_http_request_header("authorization").is_none() {
            self.send_http_response(401, vec![("www-authenticate", "Bearer")], None);
            return Action::Pause;
        }
        self.set_http_request_header("authorization", None);
        self.set_http_request_header("x-auth", Some("floor"));
        Action::Continue
    }
}
