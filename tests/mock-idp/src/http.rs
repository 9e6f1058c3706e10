//! A small HTTP/1.1 server on `std::net` for loopback tests, plus the request/reply values the
//! handlers use.
//!
//! One thread accepts; each connection gets a thread of its own (at most [`MAX_CONNECTIONS`]
//! at once), which reads one request at a time (head parsed by `httparse`, body by
//! `Content-Length` only), hands it to the handler and waits on a channel for the reply, so a
//! reply made later on another thread (see [`send`]) holds only its own connection.
//! Connections are kept alive (HTTP/1.1 default) until the client asks to close, goes idle for
//! [`IDLE_TIMEOUT`], or a request cannot be framed.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Bodies are tiny here; a cap keeps a misbehaving client from exhausting memory.
pub const MAX_BODY: u64 = 1 << 20;
/// The most bytes a request line plus headers may take.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header lines a request may have.
pub const MAX_HEADERS: usize = 64;
/// The most connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a connection may stay silent (between requests or within one) before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long writing one response may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// After answering and closing our side, how long to drain what the client still sends (so
/// unread input does not turn the close into a reset that destroys the answer).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_MAX_BYTES: usize = 4 << 20;

/// A fully read request, independent of the connection so handlers are easy to unit-test.
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
    /// Answered from a separate thread after the delay: only this request's connection waits.
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

/// A request waiting for its answer: the head and body a connection thread read, and the way
/// back to that thread. It may be answered (with [`respond`] or [`send`]) on any thread; one
/// dropped unanswered makes the connection answer 500 and close.
pub struct Request {
    req: Req,
    /// Set when the body was not read (too large): [`read_request`] gives it back.
    body_error: Option<Reply>,
    reply: mpsc::Sender<Reply>,
}

impl Request {
    pub fn method(&self) -> &str {
        &self.req.method
    }

    /// Path plus query, as sent.
    pub fn url(&self) -> &str {
        &self.req.url
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.req.headers
    }
}

/// Binds the listening socket (`listen` may use port 0 for a free port).
pub fn bind(listen: &str) -> Result<(TcpListener, SocketAddr), String> {
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    Ok((listener, addr))
}

type Handler = dyn Fn(Request) + Send + Sync;

/// Starts the accept thread; `handle` runs on the connection's thread for every request and
/// must answer it (now or later). The thread runs until the process exits.
pub fn spawn_server<F>(
    listener: TcpListener,
    name: &str,
    handle: F,
) -> Result<JoinHandle<()>, String>
where
    F: Fn(Request) + Send + Sync + 'static,
{
    spawn_with_limit(listener, name, MAX_CONNECTIONS, Arc::new(handle))
}

fn spawn_with_limit(
    listener: TcpListener,
    name: &str,
    limit: usize,
    handle: Arc<Handler>,
) -> Result<JoinHandle<()>, String> {
    let name = name.to_string();
    thread::Builder::new()
        .name(format!("{name}-accept"))
        .spawn(move || accept_loop(&listener, &name, limit, &handle))
        .map_err(|e| format!("cannot start the accept thread: {e}"))
}

/// Frees a connection slot when its thread ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn accept_loop(listener: &TcpListener, name: &str, limit: usize, handle: &Arc<Handler>) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, a connection reset before accept, ...: all transient.
                eprintln!("{name}: accept failed: {e}");
                thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        // Only this thread adds to `live`, so the check cannot be overtaken.
        if live.load(Ordering::Acquire) >= limit {
            eprintln!("{name}: {limit} connections open, refusing {peer}");
            refuse(stream);
            continue;
        }
        live.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(live.clone());
        let handle = handle.clone();
        let conn_name = name.to_string();
        let spawned = thread::Builder::new()
            .name(format!("{name}-conn"))
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, &conn_name, &*handle);
            });
        // On failure the closure is dropped: the stream closes and the slot is freed.
        if let Err(e) = spawned {
            eprintln!("{name}: cannot start a connection thread for {peer}: {e}");
        }
    }
}

/// Answers 503 and closes, on the accept thread: never waits for the client.
fn refuse(mut stream: TcpStream) {
    // Whatever already arrived is read first, so the close is less likely to be a reset.
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.read(&mut [0u8; 8192]);
    }
    let reply = Reply::error(503, "temporarily_unavailable", "too many open connections");
    let _ = write_reply(&mut stream, &reply, false, Framing::Close);
    let _ = stream.shutdown(Shutdown::Write);
}

/// A parsed request line and headers.
struct Head {
    method: String,
    url: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (e.g. `Connection`) lists `token`.
    fn lists(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn framing(&self) -> Framing {
        if self.lists("connection", "close") {
            Framing::Close
        } else if self.version >= 1 {
            Framing::KeepAlive
        } else if self.lists("connection", "keep-alive") {
            Framing::KeepAlive10
        } else {
            Framing::Close
        }
    }

    /// The body length: 0 without `Content-Length`; repeated values must agree.
    fn content_length(&self) -> Result<u64, Reply> {
        let mut length = None;
        for value in self
            .header_values("content-length")
            .flat_map(|v| v.split(','))
        {
            let value = value.trim();
            let parsed = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                value.parse::<u64>().ok()
            } else {
                None
            };
            match (parsed, length) {
                (None, _) => return Err(bad_request("invalid Content-Length")),
                (Some(n), Some(m)) if n != m => {
                    return Err(bad_request("conflicting Content-Length values"))
                }
                (Some(n), _) => length = Some(n),
            }
        }
        Ok(length.unwrap_or(0))
    }
}

/// How the connection goes on after a response.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Framing {
    KeepAlive,
    /// An HTTP/1.0 client that asked for keep-alive: the response must say so.
    KeepAlive10,
    Close,
}

fn bad_request(description: &str) -> Reply {
    Reply::error(400, "invalid_request", description)
}

enum HeadError {
    /// The client closed, went silent, or the connection failed: nothing to answer.
    Gone,
    /// The head is malformed or too large: answer this, then close.
    Reject(Reply),
}

/// Reads until `buf` starts with a complete head, parses it and removes it from `buf` (which
/// keeps any bytes after it: the body, or pipelined requests).
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Head, HeadError> {
    let mut chunk = [0u8; 8192];
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    if len > MAX_HEAD {
                        return Err(HeadError::Reject(head_too_large()));
                    }
                    let head = Head {
                        method: parsed.method.unwrap_or_default().to_string(),
                        url: parsed.path.unwrap_or_default().to_string(),
                        version: parsed.version.unwrap_or(1),
                        headers: parsed
                            .headers
                            .iter()
                            .map(|h| {
                                let value = String::from_utf8_lossy(h.value).into_owned();
                                (h.name.to_string(), value)
                            })
                            .collect(),
                    };
                    buf.drain(..len);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(HeadError::Reject(head_too_large()));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(HeadError::Reject(Reply::error(
                        431,
                        "invalid_request",
                        format!("more than {MAX_HEADERS} header lines"),
                    )));
                }
                Err(e) => {
                    return Err(HeadError::Reject(bad_request(&format!(
                        "malformed request head: {e}"
                    ))));
                }
            }
        }
        match stream.read(&mut chunk) {
            // A client closing between requests is the normal end; one closing mid-head
            // gets nothing either, as there is nobody left to read an answer.
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Gone),
        }
    }
}

fn head_too_large() -> Reply {
    Reply::error(
        431,
        "invalid_request",
        format!("request head over {MAX_HEAD} bytes"),
    )
}

/// Takes `len` body bytes: first those already in `buf`, then from the stream.
fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> io::Result<Vec<u8>> {
    let buffered = len.min(buf.len());
    let mut body: Vec<u8> = buf.drain(..buffered).collect();
    if body.len() < len {
        let start = body.len();
        body.resize(len, 0);
        stream.read_exact(&mut body[start..])?;
    }
    Ok(body)
}

/// Serves requests on one connection, one at a time, until it closes.
fn serve_connection(mut stream: TcpStream, name: &str, handle: &Handler) {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(IDLE_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let mut buf = Vec::new();
    loop {
        let head = match read_head(&mut stream, &mut buf) {
            Ok(head) => head,
            Err(HeadError::Gone) => return,
            Err(HeadError::Reject(reply)) => {
                eprintln!("{name}: bad request head -> {}", reply.status);
                return answer_and_close(stream, &reply, false);
            }
        };
        let head_only = head.method == "HEAD";
        if head.header_values("transfer-encoding").next().is_some() {
            let reply = Reply::error(
                411,
                "invalid_request",
                "Transfer-Encoding is not supported; send the body with Content-Length",
            );
            eprintln!("{name}: {} {} -> 411", head.method, head.url);
            return answer_and_close(stream, &reply, head_only);
        }
        let length = match head.content_length() {
            Ok(n) => n,
            Err(reply) => {
                eprintln!("{name}: {} {} -> 400", head.method, head.url);
                return answer_and_close(stream, &reply, head_only);
            }
        };
        let mut framing = head.framing();
        let mut body_error = None;
        let mut body = Vec::new();
        if length > MAX_BODY {
            // The body is left unread, so the connection cannot go on.
            body_error = Some(Reply::error(
                413,
                "invalid_request",
                "request body too large",
            ));
            framing = Framing::Close;
        } else if length > 0 {
            let expects_continue = head.version >= 1 && head.lists("expect", "100-continue");
            if expects_continue && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                return;
            }
            // A client that stops sending mid-body gets nothing: it may not be listening.
            match read_body(&mut stream, &mut buf, length as usize) {
                Ok(b) => body = b,
                Err(_) => return,
            }
        }

        let (method, url) = (head.method.clone(), head.url.clone());
        let (tx, rx) = mpsc::channel();
        let request = Request {
            req: Req {
                method: head.method,
                url: head.url,
                headers: head.headers,
                body,
            },
            body_error,
            reply: tx,
        };
        let reply = if catch_unwind(AssertUnwindSafe(|| handle(request))).is_err() {
            eprintln!("{name}: handler panicked on {method} {url} -> 500");
            framing = Framing::Close;
            Reply::error(500, "server_error", "the handler failed")
        } else {
            match rx.recv() {
                Ok(reply) => reply,
                Err(_) => {
                    // Dropped unanswered: a delayed reply panicked or its thread never started.
                    eprintln!("{name}: {method} {url} was not answered -> 500");
                    framing = Framing::Close;
                    Reply::error(500, "server_error", "the request was not answered")
                }
            }
        };
        if reply_asks_close(&reply) {
            framing = Framing::Close;
        }
        if framing == Framing::Close {
            return answer_and_close(stream, &reply, head_only);
        }
        if write_reply(&mut stream, &reply, head_only, framing).is_err() {
            return;
        }
    }
}

fn reply_asks_close(reply: &Reply) -> bool {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"))
}

/// Writes `reply` with `Connection: close`, then closes without resetting: our side is shut
/// and whatever the client still sends (an unread body, pipelined requests) is drained for a
/// short while, so the client gets to read the answer.
fn answer_and_close(mut stream: TcpStream, reply: &Reply, head_only: bool) {
    if write_reply(&mut stream, reply, head_only, Framing::Close).is_err() {
        return;
    }
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut drained = 0;
    let mut sink = [0u8; 8192];
    while drained < LINGER_MAX_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(n) => drained += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Header names this layer writes itself; a handler's own are dropped.
const FRAMING_HEADERS: &[&str] = &["content-length", "transfer-encoding", "connection", "date"];

fn write_reply(
    stream: &mut TcpStream,
    reply: &Reply,
    head_only: bool,
    framing: Framing,
) -> io::Result<()> {
    let mut out = Vec::with_capacity(256 + reply.body.len());
    out.extend_from_slice(
        format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status)).as_bytes(),
    );
    for (name, value) in &reply.headers {
        let framing_header = FRAMING_HEADERS.iter().any(|h| name.eq_ignore_ascii_case(h));
        // Never let a name or value break the response's framing.
        let unsafe_text = name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            || value.bytes().any(|b| b == b'\r' || b == b'\n');
        if !framing_header && !unsafe_text {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(format!("Date: {}\r\n", http_date(SystemTime::now())).as_bytes());
    out.extend_from_slice(format!("Content-Length: {}\r\n", reply.body.len()).as_bytes());
    match framing {
        Framing::KeepAlive => {}
        Framing::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Framing::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(&reply.body);
    }
    stream.write_all(&out)?;
    stream.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), as the `Date` header wants.
fn http_date(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Gives back the request as read; a body over [`MAX_BODY`] gives back a 413 reply instead.
/// The body is moved out: a second call sees an empty one.
pub fn read_request(request: &mut Request) -> Result<Req, Reply> {
    if let Some(reply) = request.body_error.take() {
        return Err(reply);
    }
    Ok(Req {
        method: request.req.method.clone(),
        url: request.req.url.clone(),
        headers: request.req.headers.clone(),
        body: std::mem::take(&mut request.req.body),
    })
}

/// Hands the reply to the request's connection, which writes it.
pub fn respond(request: Request, reply: Reply) {
    // The connection may be gone (its thread ended on a failed read); nothing to do then.
    let _ = request.reply.send(reply);
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
            // The request went down with the closure: its connection answers 500.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    fn head(version: u8, headers: &[(&str, &str)]) -> Head {
        Head {
            method: "GET".into(),
            url: "/".into(),
            version,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn framing_follows_version_and_connection_header() {
        assert_eq!(head(1, &[]).framing(), Framing::KeepAlive);
        assert_eq!(
            head(1, &[("Connection", "keep-alive, Close")]).framing(),
            Framing::Close
        );
        assert_eq!(head(0, &[]).framing(), Framing::Close);
        assert_eq!(
            head(0, &[("connection", "Keep-Alive")]).framing(),
            Framing::KeepAlive10
        );
    }

    #[test]
    fn content_length_must_be_digits_and_agree() {
        assert_eq!(head(1, &[]).content_length().unwrap(), 0);
        let ok = head(1, &[("Content-Length", "12"), ("content-length", "12, 12")]);
        assert_eq!(ok.content_length().unwrap(), 12);
        for bad in ["+1", "-1", "", "1 2", "0x10", "99999999999999999999999"] {
            let h = head(1, &[("Content-Length", bad)]);
            assert_eq!(h.content_length().unwrap_err().status, 400, "{bad:?}");
        }
        let conflict = head(1, &[("Content-Length", "1"), ("Content-Length", "2")]);
        assert_eq!(conflict.content_length().unwrap_err().status, 400);
    }

    #[test]
    fn http_date_is_imf_fixdate() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(http_date(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(at(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(at(951_782_400)), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(
            http_date(at(4_102_444_799)),
            "Thu, 31 Dec 2099 23:59:59 GMT"
        );
    }

    /// The status line of the next answer on `stream`, after sending a request if `ask`;
    /// empty when the connection failed (refused connections may be reset).
    fn status_line(mut stream: &TcpStream, ask: bool) -> String {
        if ask
            && stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .is_err()
        {
            return String::new();
        }
        let mut line = String::new();
        let _ = BufReader::new(stream).read_line(&mut line);
        line
    }

    #[test]
    fn connections_over_the_limit_get_503_until_one_closes() {
        let (listener, addr) = bind("127.0.0.1:0").unwrap();
        let handler: Arc<Handler> =
            Arc::new(|request| respond(request, Reply::json(200, &json!({}))));
        spawn_with_limit(listener, "limited", 2, handler).unwrap();
        let open = || {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        };
        let ok = |s: &TcpStream| status_line(s, true).starts_with("HTTP/1.1 200 ");
        let first = open();
        let second = open();
        assert!(ok(&first));
        assert!(ok(&second));
        // Over the limit: answered without being asked.
        assert!(status_line(&open(), false).starts_with("HTTP/1.1 503 "));
        drop(first);
        // The slot frees once the connection's thread sees the close.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ok(&open()) {
            assert!(Instant::now() < deadline, "the slot was never freed");
            thread::sleep(Duration::from_millis(20));
        }
        assert!(ok(&second));
    }
}
