//! `unitcost`: prices one proxy-wasm host call in Envoy's V8. The plugin configuration is
//! `noop` (return at once: the cost of the stream's VM callbacks alone) or `dispatch`: each
//! request names a call in `x-unit-op` and a count in `x-unit-n`, and the call runs that many
//! times. tests/bench/unitcost.py compares Envoy's CPU per request at N = k and N = 0; the
//! difference over k is the unit cost (reading the two headers costs the same at every N).

use std::cell::Cell;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Most calls a request may ask for: bounds the work a stray request can cause.
const MAX_N: u32 = 1000;
const SHARED_KEY: &str = "unitcost";

#[derive(Default, Clone, Copy)]
struct Ids {
    counter: u32,
    histogram: u32,
}

#[derive(Default)]
struct Root {
    dispatch: bool,
    ids: Ids,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, 64)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.dispatch = match config.as_slice() {
            b"noop" => false,
            b"dispatch" => true,
            _ => {
                let _ = hostcalls::log(
                    LogLevel::Error,
                    "unitcost: configuration must be \"noop\" or \"dispatch\"",
                );
                return false;
            }
        };
        let define = |kind, name| hostcalls::define_metric(kind, name).unwrap_or(0);
        self.ids = Ids {
            counter: define(MetricType::Counter, "unitcost_counter"),
            histogram: define(MetricType::Histogram, "unitcost_histogram"),
        };
        // A present key of about the size of one of the filter's shared records.
        let _ = hostcalls::set_shared_data(SHARED_KEY, Some(&[7u8; 64]), None);
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Unit {
            dispatch: self.dispatch,
            ids: self.ids,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Unit {
    dispatch: bool,
    ids: Ids,
}

impl Context for Unit {}

thread_local! {
    static MAP_LOGGED: Cell<bool> = const { Cell::new(false) };
}

/// The bytes Envoy serializes for a header map (proxy-wasm ABI): a pair count, two lengths
/// per pair, and each name and value with a NUL.
fn serialized_size(pairs: &[(String, Vec<u8>)]) -> usize {
    4 + pairs
        .iter()
        .map(|(n, v)| 8 + n.len() + 1 + v.len() + 1)
        .sum::<usize>()
}

fn run(op: &str, n: u32, ids: Ids) -> bool {
    for i in 0..n {
        match op {
            // What the filter does: the whole request header map, bytes.
            "map" => {
                let pairs =
                    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
                if i == 0 && !MAP_LOGGED.replace(true) {
                    let message = format!(
                        "unitcost: request header map: {} pairs, {} bytes serialized",
                        pairs.len(),
                        serialized_size(&pairs)
                    );
                    let _ = hostcalls::log(LogLevel::Warn, &message);
                }
            }
            "header" => {
                let _ =
                    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "authorization");
            }
            "header_absent" => {
                let _ = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-absent");
            }
            "remove_absent" => {
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-absent");
            }
            "set" => {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-unit", Some("1"));
            }
            // Set then remove: the cost of removing a present header is the pair minus `set`.
            "set_remove" => {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-unit", Some("1"));
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-unit");
            }
            // The filter's client-certificate read, absent on a plaintext connection.
            "property_absent" => {
                let _ =
                    hostcalls::get_property(vec!["connection", "sha256_peer_certificate_digest"]);
            }
            "property" => {
                let _ = hostcalls::get_property(vec!["source", "address"]);
            }
            "shared_get" => {
                let _ = hostcalls::get_shared_data(SHARED_KEY);
            }
            "time" => {
                let _ = hostcalls::get_current_time();
            }
            "counter" => {
                let _ = hostcalls::increment_metric(ids.counter, 1);
            }
            "histogram" => {
                let _ = hostcalls::record_metric(ids.histogram, 42);
            }
            _ => return false,
        }
    }
    true
}

impl HttpContext for Unit {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        if !self.dispatch {
            return Action::Continue;
        }
        let op = self
            .get_http_request_header("x-unit-op")
            .unwrap_or_default();
        let n = self
            .get_http_request_header("x-unit-n")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n <= MAX_N);
        match n {
            Some(n) if run(&op, n, self.ids) => Action::Continue,
            _ => {
                self.send_http_response(400, vec![], Some(b"unknown x-unit-op or bad x-unit-n\n"));
                Action::Pause
            }
        }
    }
}
