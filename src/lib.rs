//! Okta JWT gatekeeper for Envoy: a proxy-wasm HTTP filter.
//!
//! `core` decides and knows nothing of proxy-wasm, so it is tested natively; `shell` is the
//! thin layer of host calls and only exists in the wasm build.

// A panic kills the VM (every request refused until Envoy recreates it): none in shipped code.
// Tests may unwrap. Each exception is an `allow` on the smallest item, with why it cannot panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod core;

/// The `okta-jwt` command-line tool, on the same core (native only).
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;

#[cfg(target_arch = "wasm32")]
mod shell;

/// The shell's host-ABI codec is pure: built natively too, for its tests.
#[cfg(all(test, not(target_arch = "wasm32")))]
#[path = "shell/wire.rs"]
mod shell_wire;
