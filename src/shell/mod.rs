//! The thin layer that talks to the proxy-wasm host. Decisions live in `crate::core`.

mod actions;
mod apply;
mod host;
mod host_verify;
mod http;
mod introspection;
mod metrics;
mod plugin;
mod root;
mod shared_data;
mod unavailable;
mod wire;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(root::Root::new())
    });
}}
