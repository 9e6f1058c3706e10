//! Serves a handler over HTTP/1.1 with hyper, on a tokio runtime of its own.
//!
//! hyper frames requests (Content-Length or chunked bodies, keep-alive, pipelining,
//! `Expect: 100-continue`, malformed heads answered 400/431) and writes `Date` and
//! `Content-Length`. This layer reads the body up to [`MAX_BODY`], hands the request to the
//! handler, waits out a delayed [`Outcome`] without holding any thread, and logs one line.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::message::{Outcome, Received, Refused, Reply, Req};

/// Bodies are tiny here; a cap keeps a misbehaving client from exhausting memory.
pub const MAX_BODY: u64 = 1 << 20;
/// The most bytes a request line plus headers may take (more: 431).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header lines a request may have (more: 431).
pub const MAX_HEADERS: usize = 64;
/// The longest wait for a request's head (idle time before it included), and then for its body.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type Handler = dyn Fn(Received) -> Outcome + Send + Sync;

/// Where the handler runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// On the runtime's own threads: for handlers that never block (the echo).
    Inline,
    /// On tokio's blocking pool: RSA signing and key generation take milliseconds to seconds,
    /// which must not stall the threads that serve every other connection.
    Blocking,
}

/// A server whose accept loop is running on its own runtime.
pub struct Served {
    runtime: Runtime,
    accept: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Blocks for as long as the server runs (i.e. until the process is stopped).
    pub fn wait(self) {
        let _ = self.runtime.block_on(self.accept);
    }
}

/// Binds the listening socket (`listen` may use port 0 for a free port).
pub fn bind(listen: &str) -> Result<(StdListener, SocketAddr), String> {
    let failed = |e: io::Error| format!("cannot listen on {listen}: {e}");
    let listener = StdListener::bind(listen).map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}

/// Starts a runtime and accepts connections on `listener`; every request goes to `handler`.
pub fn spawn<F>(listener: StdListener, name: &str, run: Run, handler: F) -> Result<Served, String>
where
    F: Fn(Received) -> Outcome + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let listener = {
        let _entered = runtime.enter();
        listener
            .set_nonblocking(true)
            .and_then(|()| TcpListener::from_std(listener))
            .map_err(|e| format!("cannot use the listening socket: {e}"))?
    };
    let server = Arc::new(Server {
        name: name.to_string(),
        run,
        handler: Box::new(handler),
    });
    let accept = runtime.spawn(accept_loop(listener, server));
    Ok(Served { runtime, accept })
}

struct Server {
    name: String,
    run: Run,
    handler: Box<Handler>,
}

async fn accept_loop(listener: TcpListener, server: Arc<Server>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(IDLE_TIMEOUT)
        // A client that shuts its sending side after the request still gets the answer.
        .half_close(true)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEAD);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, a connection reset before accept, ...: all transient.
                eprintln!("{}: accept failed: {e}", server.name);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        let service = service_fn(move |request| server.clone().answer(request));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        // Errors here are the client's (it left, sent garbage, or went silent): nothing to do.
        tokio::spawn(connection);
    }
}

impl Server {
    async fn answer(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> io::Result<Response<Full<Bytes>>> {
        let (head, body) = request.into_parts();
        let mut req = Req {
            method: head.method.to_string(),
            url: head.uri.to_string(),
            headers: head
                .headers
                .iter()
                .map(|(n, v)| {
                    let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (n.as_str().to_string(), value)
                })
                .collect(),
            body: Vec::new(),
        };
        let (method, url) = (req.method.clone(), req.url.clone());
        let received = match read_body(body).await {
            Ok(bytes) => {
                req.body = bytes;
                Ok(req)
            }
            Err(BodyError::TooLarge) => Err(Refused {
                req,
                reply: Reply::error(413, "invalid_request", "request body too large")
                    // The rest of the body is left unread, so the connection cannot go on.
                    .with_header("Connection", "close"),
            }),
            // An error closes the connection without an answer: nobody may be listening.
            Err(BodyError::Gone) => return Err(io::Error::other("request body not received")),
        };
        // The query may carry a token (e.g. `access_token=`): logs show only that there was one.
        let url = loggable(&url);
        let reply = match self.call(move |s| (s.handler)(received)).await {
            Some(Outcome::Now(reply)) => Some(reply),
            Some(Outcome::After(delay, make)) => {
                tokio::time::sleep(delay).await;
                self.call(move |_| make()).await
            }
            Some(Outcome::Drop) => {
                eprintln!("{}: {method} {url} -> dropped (fault)", self.name);
                // A service error makes hyper close the connection without writing anything.
                return Err(io::Error::other("connection dropped (injected fault)"));
            }
            None => None,
        };
        let reply = reply.unwrap_or_else(|| {
            eprintln!("{}: handler panicked on {method} {url}", self.name);
            Reply::error(500, "server_error", "the handler failed")
                .with_header("Connection", "close")
        });
        eprintln!("{}: {method} {url} -> {}", self.name, reply.status);
        Ok(response(reply))
    }

    /// Runs `f` where this server's handlers run; `None` if it panicked.
    async fn call<T, F>(self: &Arc<Self>, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&Server) -> T + Send + 'static,
    {
        match self.run {
            Run::Inline => catch_unwind(AssertUnwindSafe(|| f(self))).ok(),
            Run::Blocking => {
                let server = self.clone();
                tokio::task::spawn_blocking(move || f(&server)).await.ok()
            }
        }
    }
}

/// The path of a request target, with `?…` in place of any query.
fn loggable(url: &str) -> String {
    match url.split_once('?') {
        Some((path, _)) => format!("{path}?…"),
        None => url.to_string(),
    }
}

enum BodyError {
    TooLarge,
    Gone,
}

async fn read_body(body: Incoming) -> Result<Vec<u8>, BodyError> {
    // A declared length over the cap is refused before any of it is read.
    if body.size_hint().lower() > MAX_BODY {
        return Err(BodyError::TooLarge);
    }
    let read = Limited::new(body, MAX_BODY as usize).collect();
    match tokio::time::timeout(IDLE_TIMEOUT, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) | Err(_) => Err(BodyError::Gone),
    }
}

/// Headers hyper cannot carry (a bad name, a value with a line break) are dropped.
fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
