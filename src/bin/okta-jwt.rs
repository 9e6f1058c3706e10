//! `okta-jwt`: see `okta_jwt_filter::cli` (SPEC "Command-line tool"). Native only.

// The same lint policy as the library (see `lib.rs`): no panics in shipped code.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    use std::io::Write;
    let out = okta_jwt_filter::cli::run(std::env::args().skip(1).collect());
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    std::process::ExitCode::from(out.code)
}

/// The filter's wasm build has no command line.
#[cfg(target_arch = "wasm32")]
fn main() {}
