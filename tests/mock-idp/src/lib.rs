//! Okta-compatible mock authorization server and echo upstream, for tests and demos.
//! The external contract is described in the crate's README.md.

pub mod args;
pub mod control;
pub mod counts;
pub mod echo;
pub mod faults;
pub mod form;
pub mod introspect;
pub mod keys;
pub mod message;
pub mod routes;
pub mod server;
pub mod state;
pub mod tokens;

#[cfg(test)]
mod test_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use server::Run;
pub use state::{App, Config};

/// A poisoned lock only means another request panicked; the data is still usable and the
/// server must keep answering.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server that accepts requests.
pub struct Running {
    pub addr: SocketAddr,
    /// Only set for the mock IdP.
    pub app: Option<Arc<App>>,
    server: server::Served,
}

impl Running {
    /// The line both binaries print once they accept requests.
    pub fn readiness_line(&self) -> String {
        format!("listening on http://{}", self.addr)
    }

    /// Blocks for as long as the server runs (i.e. until the process is stopped).
    pub fn wait(self) {
        self.server.wait();
    }
}

/// Binds, creates the configured authorization servers and starts serving.
pub fn start_mock_idp(opts: &args::MockIdpOptions) -> Result<Running, String> {
    let (listener, addr) = server::bind(&opts.listen)?;
    let public_url = opts
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let config = Config {
        public_url: public_url.trim_end_matches('/').to_string(),
        key_dir: opts.key_dir.clone(),
        lifetime_s: opts.lifetime,
    };
    let app = Arc::new(App::new(config, opts.max_age));
    for id in &opts.servers {
        app.server(id)?;
    }
    let handler_app = app.clone();
    let server = server::spawn(listener, "mock-idp", Run::Blocking, move |received| {
        routes::serve(&handler_app, received)
    })?;
    Ok(Running {
        addr,
        app: Some(app),
        server,
    })
}

/// Binds and starts the echo upstream.
pub fn start_echo(listen: &str) -> Result<Running, String> {
    let (listener, addr) = server::bind(listen)?;
    let server = server::spawn(listener, "echo-upstream", Run::Inline, echo::serve)?;
    Ok(Running {
        addr,
        app: None,
        server,
    })
}
