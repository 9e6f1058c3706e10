//! Okta JWT gatekeeper for Envoy: a proxy-wasm HTTP filter.
//!
//! `core` decides and knows nothing of proxy-wasm, so it is tested natively; `shell` is the
//! thin layer of host calls and only exists in the wasm build.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod shell;
