//! Thin layer over tiny_http: request/reply values, worker threads, delayed replies.

use std::io::Read;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{json, Value};
use tiny_http::{Header, Request, Response, Server};

/// Bodies are tiny here; a cap keeps a misbehaving client from exhausting memory.
pub const MAX_BODY: u64 = 1 << 20;

/// A fully read request, independent of tiny_http so handlers are easy to unit-test.
#[derive(Clone, Debug, Default)]
pub struct Req {
    pub method: String,
    /// Path plus query, as sent.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, url: &str) -> Req {
        Req {
            method: method.to_string(),
            url: url.to_string(),
            ..Req::default()
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = body.into();
        self
    }

    pub fn path(&self) -> &str {
        self.url.split('?').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply::raw_json(status, value.to_string())
    }

    pub fn raw_json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    /// OAuth-style error body, used for every error this crate produces.
    pub fn error(status: u16, code: &str, description: impl Into<String>) -> Reply {
        Reply::json(
            status,
            &json!({"error": code, "error_description": description.into()}),
        )
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub type Deferred = Box<dyn FnOnce() -> Reply + Send>;

pub enum Outcome {
    Now(Reply),
    /// Answered from a separate thread after the delay, so a slow endpoint never holds a worker.
    After(Duration, Deferred),
}

impl Outcome {
    /// Resolves the outcome on the current thread (tests).
    pub fn wait(self) -> Reply {
        match self {
            Outcome::Now(r) => r,
            Outcome::After(d, f) => {
                thread::sleep(d);
                f()
            }
        }
    }
}

pub fn bind(listen: &str) -> Result<(Arc<Server>, SocketAddr), String> {
    let server = Server::http(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("{listen} is not an IP address"))?;
    Ok((Arc::new(server), addr))
}

pub fn spawn_workers<F>(
    server: Arc<Server>,
    count: usize,
    name: &str,
    handle: F,
) -> Vec<JoinHandle<()>>
where
    F: Fn(Request) + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    (0..count)
        .map(|i| {
            let server = server.clone();
            let handle = handle.clone();
            let name = format!("{name}-{i}");
            let log_name = name.clone();
            thread::Builder::new()
                .name(name)
                .spawn(move || loop {
                    match server.recv() {
                        Ok(request) => {
                            // A bug in one handler must not shrink the worker pool.
                            if catch_unwind(AssertUnwindSafe(|| handle(request))).is_err() {
                                eprintln!("{log_name}: handler panicked");
                            }
                        }
                        Err(e) => {
                            eprintln!("{log_name}: accept failed: {e}");
                            break;
                        }
                    }
                })
                .unwrap_or_else(|e| panic!("cannot spawn worker thread: {e}"))
        })
        .collect()
}

/// Reads the request head and body; a body over [`MAX_BODY`] gives back a 413 reply.
pub fn read_request(request: &mut Request) -> Result<Req, Reply> {
    let mut req = Req::new(&request.method().to_string(), request.url());
    req.headers = request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
        .collect();
    let mut body = Vec::new();
    let read = request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_end(&mut body);
    match read {
        Err(e) => Err(Reply::error(
            400,
            "invalid_request",
            format!("cannot read body: {e}"),
        )),
        Ok(_) if body.len() as u64 > MAX_BODY => Err(Reply::error(
            413,
            "invalid_request",
            "request body too large",
        )),
        Ok(_) => {
            req.body = body;
            Ok(req)
        }
    }
}

pub fn respond(request: Request, reply: Reply) {
    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    for (name, value) in &reply.headers {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    // tiny_http serves each kept-alive connection on a pool thread, and its pool can fail to
    // grow when several connections arrive at once, leaving new ones unserved until an old one
    // closes. Closing after every answer keeps every connection short-lived.
    if let Ok(h) = Header::from_bytes(&b"Connection"[..], &b"close"[..]) {
        response.add_header(h);
    }
    // The client may have gone away; nothing useful to do about it.
    let _ = request.respond(response);
}

/// Sends `outcome`, deferring to a fresh thread when it is delayed.
pub fn send(request: Request, outcome: Outcome, log_prefix: &'static str) {
    match outcome {
        Outcome::Now(reply) => {
            log(log_prefix, &request, reply.status);
            respond(request, reply);
        }
        Outcome::After(delay, make) => {
            let spawned = thread::Builder::new()
                .name(format!("{log_prefix}-delayed"))
                .spawn(move || {
                    thread::sleep(delay);
                    let reply = make();
                    log(log_prefix, &request, reply.status);
                    respond(request, reply);
                });
            if let Err(e) = spawned {
                eprintln!("{log_prefix}: cannot spawn delayed reply thread: {e}");
            }
        }
    }
}

pub fn log(prefix: &str, request: &Request, status: u16) {
    eprintln!(
        "{prefix}: {} {} -> {status}",
        request.method(),
        request.url()
    );
}
