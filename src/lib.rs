//! Okta JWT gatekeeper for Envoy: a proxy-wasm HTTP filter.
//!
//! `core` decides and knows nothing of proxy-wasm, so it is tested natively; `shell` is the
//! thin layer of host calls and only exists in the wasm build.

pub mod core;

/// The `okta-jwt` command-line tool, on the same core (native only).
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;

#[cfg(target_arch = "wasm32")]
mod shell;
