//! Real HTTP over loopback against the hyper-based server: in-process servers and the
//! compiled binaries.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use mock_idp::args::MockIdpOptions;
use mock_idp::keys::SigningKey;
use serde_json::{json, Value};

fn shared_keys() -> &'static [SigningKey] {
    static KEYS: OnceLock<Vec<SigningKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let jobs: Vec<_> = (0..2)
            .map(|_| thread::spawn(|| SigningKey::generate().unwrap()))
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    })
}

/// An in-process mock IdP on a free port whose `default` and `org` servers use the shared keys.
fn start_idp() -> SocketAddr {
    let opts = MockIdpOptions {
        servers: vec![],
        ..MockIdpOptions::default()
    };
    let running = mock_idp::start_mock_idp(&opts).unwrap();
    let app = running.app.as_ref().unwrap();
    app.add_server("default", shared_keys().to_vec());
    app.add_server("org", shared_keys().to_vec());
    let addr = running.addr;
    // Workers run until the test process exits.
    thread::spawn(move || running.wait());
    addr
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Resp {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], "")
}

fn post_json(addr: SocketAddr, path: &str, body: Value) -> Resp {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )
}

#[test]
fn keys_token_and_counts_over_http() {
    let addr = start_idp();
    let keys = get(addr, "/oauth2/default/v1/keys");
    assert_eq!(keys.status, 200);
    assert_eq!(keys.header("content-type"), Some("application/json"));
    assert_eq!(keys.header("cache-control"), Some("max-age=300"));
    let jwks = keys.json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec![shared_keys()[0].kid(), shared_keys()[1].kid()]);

    let token = request(
        addr,
        "POST",
        "/oauth2/default/v1/token",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            (
                "Authorization",
                "Basic MG9hLWRlbW8tY2xpZW50OmRlbW8tc2VjcmV0",
            ),
        ],
        "grant_type=client_credentials&scope=orders%3Aread",
    );
    assert_eq!(token.status, 200);
    assert_eq!(token.json()["scope"], "orders:read");

    let disco = get(addr, "/oauth2/default/.well-known/openid-configuration");
    assert_eq!(
        disco.json()["issuer"],
        format!("http://{addr}/oauth2/default")
    );

    assert_eq!(get(addr, "/oauth2/default/v1/keys?again=1").status, 200);
    assert_eq!(get(addr, "/nope").status, 404);
    assert_eq!(
        post_json(addr, "/control/fault", json!({"mode": "500"})).status,
        200
    );
    assert_eq!(get(addr, "/oauth2/default/v1/keys").status, 500);

    let counts = get(addr, "/control/counts").json();
    assert_eq!(
        counts,
        json!({
            "GET /nope": 1,
            "GET /oauth2/default/.well-known/openid-configuration": 1,
            "GET /oauth2/default/v1/keys": 3,
            "POST /oauth2/default/v1/token": 1,
        })
    );
    assert_eq!(post_json(addr, "/control/reset", json!({})).status, 200);
    assert_eq!(get(addr, "/control/counts").json(), json!({}));
    assert_eq!(get(addr, "/oauth2/default/v1/keys").status, 200);
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
/// `0oa-demo-client:demo-secret`.
const DEMO_BASIC: (&str, &str) = (
    "Authorization",
    "Basic MG9hLWRlbW8tY2xpZW50OmRlbW8tc2VjcmV0",
);

#[test]
fn opaque_token_introspection_revocation_and_drop_over_http() {
    let addr = start_idp();
    let minted = request(
        addr,
        "POST",
        "/oauth2/v1/token",
        &[FORM, DEMO_BASIC],
        "grant_type=client_credentials&scope=profile",
    );
    assert_eq!(minted.status, 200);
    let token = minted.json()["access_token"].as_str().unwrap().to_string();
    assert!(!token.contains('.'));
    let body = format!("token={token}&token_type_hint=access_token");
    let introspect = || {
        request(
            addr,
            "POST",
            "/oauth2/v1/introspect",
            &[FORM, DEMO_BASIC],
            &body,
        )
    };
    let answer = introspect();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["active"], true);
    assert_eq!(answer.json()["scope"], "profile");
    assert_eq!(answer.json()["iss"], format!("http://{addr}"));

    let revoked = request(
        addr,
        "POST",
        "/oauth2/org/v1/revoke",
        &[FORM, DEMO_BASIC],
        &body,
    );
    assert_eq!((revoked.status, revoked.body.len()), (200, 0));
    assert_eq!(revoked.header("content-length"), Some("0"));
    assert_eq!(introspect().json(), json!({"active": false}));

    let fault = json!({"server": "org", "endpoint": "introspect", "mode": "drop"});
    assert_eq!(post_json(addr, "/control/fault", fault).status, 200);
    let mut conn = connect(addr);
    let head = format!(
        "POST /oauth2/v1/introspect HTTP/1.1\r\nHost: {addr}\r\n{}: {}\r\n{}: {}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        FORM.0,
        FORM.1,
        DEMO_BASIC.0,
        DEMO_BASIC.1,
        body.len()
    );
    conn.get_mut().write_all(head.as_bytes()).unwrap();
    assert!(
        closed_by_server(&mut conn),
        "a dropped introspection got an answer"
    );
    // The keys of the same server are not affected.
    assert_eq!(get(addr, "/oauth2/v1/keys").status, 200);

    let last = get(addr, "/control/introspect-last").json();
    assert_eq!(last["seq"], 3);
    assert_eq!(last["client_id"], "0oa-demo-client");
    assert_eq!(last["secret_ok"], true);
    assert!(!last.to_string().contains(&token));
    let counts = get(addr, "/control/counts").json();
    assert_eq!(counts["POST /oauth2/v1/introspect"], 3);
    assert_eq!(counts["POST /oauth2/org/v1/revoke"], 1);
}

#[test]
fn slow_keys_do_not_block_other_requests() {
    let addr = start_idp();
    let r = post_json(
        addr,
        "/control/fault",
        json!({"mode": "slow", "delay_ms": 1500}),
    );
    assert_eq!(r.status, 200);
    let start = Instant::now();
    // More slow requests than there are workers: they must all be parked off the pool.
    let slow: Vec<_> = (0..10)
        .map(|_| thread::spawn(move || get(addr, "/oauth2/default/v1/keys")))
        .collect();
    thread::sleep(Duration::from_millis(200));
    let disco = get(addr, "/oauth2/default/.well-known/openid-configuration");
    assert_eq!(disco.status, 200);
    assert!(
        start.elapsed() < Duration::from_millis(1400),
        "discovery waited on slow keys"
    );
    for s in slow {
        let keys = s.join().unwrap();
        assert_eq!(keys.status, 200);
        assert_eq!(keys.json()["keys"].as_array().unwrap().len(), 2);
    }
    assert!(start.elapsed() >= Duration::from_millis(1500));
}

#[test]
fn echo_upstream_in_process() {
    let running = mock_idp::start_echo("127.0.0.1:0").unwrap();
    let addr = running.addr;
    thread::spawn(move || running.wait());
    let r = request(
        addr,
        "PUT",
        "/orders/7?verbose=1&x=%20",
        &[("X-Jwt-Sub", "alice"), ("x-multi", "a"), ("X-Multi", "b")],
        "ignored body",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["method"], "PUT");
    assert_eq!(body["path"], "/orders/7?verbose=1&x=%20");
    assert_eq!(body["headers"]["x-jwt-sub"], "alice");
    assert_eq!(body["headers"]["x-multi"], "a, b");
    assert_eq!(body["headers"]["content-length"], "12");
}

/// Kills the child even when an assertion fails.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_ready(bin: &str, args: &[&str]) -> (Kill, SocketAddr) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim_end()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("bad readiness line {line:?}"));
    assert!(addr.starts_with("127.0.0.1:"));
    (child, addr.parse().unwrap())
}

#[test]
fn binaries_print_readiness_line_and_serve() {
    let (_echo, addr) = spawn_ready(env!("CARGO_BIN_EXE_echo-upstream"), &[]);
    assert_eq!(get(addr, "/x").json()["path"], "/x");

    // Keys come from --key-dir so the binary does not spend time generating them.
    let dir = std::env::temp_dir().join(format!("mock-idp-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, key) in shared_keys().iter().enumerate() {
        std::fs::write(
            dir.join(format!("default-{}.pem", i + 1)),
            key.to_pkcs8_pem().unwrap(),
        )
        .unwrap();
    }
    let (_idp, addr) = spawn_ready(
        env!("CARGO_BIN_EXE_mock-idp"),
        &[
            "--key-dir",
            dir.to_str().unwrap(),
            "--public-url",
            "http://idp.example:9/",
            "--max-age",
            "11",
        ],
    );
    let keys = get(addr, "/oauth2/default/v1/keys");
    assert_eq!(keys.header("cache-control"), Some("max-age=11"));
    assert_eq!(keys.json()["keys"][0]["kid"], shared_keys()[0].kid());
    let disco = get(
        addr,
        "/oauth2/default/.well-known/oauth-authorization-server",
    )
    .json();
    assert_eq!(
        disco["jwks_uri"],
        "http://idp.example:9/oauth2/default/v1/keys"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads one response off a kept-alive connection, framed by its Content-Length.
fn read_response(reader: &mut BufReader<TcpStream>) -> Resp {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap();
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let length: usize = resp.header("content-length").unwrap().parse().unwrap();
    resp.body = vec![0; length];
    reader.read_exact(&mut resp.body).unwrap();
    resp
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    BufReader::new(stream)
}

fn start_echo() -> SocketAddr {
    let running = mock_idp::start_echo("127.0.0.1:0").unwrap();
    let addr = running.addr;
    thread::spawn(move || running.wait());
    addr
}

/// Whether the server closed the connection (EOF, or a reset after it closed).
fn closed_by_server(reader: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn fifty_simultaneous_keep_alive_connections_are_all_answered() {
    for addr in [start_echo(), start_idp()] {
        let start = Instant::now();
        // All connections open (and kept open) before any request: a fixed pool of threads
        // that serves one connection each would leave some of these unread.
        let mut conns: Vec<_> = (0..50).map(|_| connect(addr)).collect();
        for (i, conn) in conns.iter_mut().enumerate() {
            let head = format!("GET /oauth2/default/.well-known/openid-configuration?c={i} HTTP/1.1\r\nHost: x\r\n\r\n");
            conn.get_mut().write_all(head.as_bytes()).unwrap();
        }
        for conn in conns.iter_mut() {
            let resp = read_response(conn);
            assert_eq!(resp.status, 200);
            assert_eq!(resp.header("connection"), None);
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "50 connections took {:?}",
            start.elapsed()
        );
    }
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let addr = start_echo();
    let mut conn = connect(addr);
    for i in 0..3 {
        let body = format!("body {i}");
        let head = format!(
            "POST /n/{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.get_mut().write_all(head.as_bytes()).unwrap();
        let resp = read_response(&mut conn);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["path"], format!("/n/{i}"));
        assert!(resp.header("date").unwrap().ends_with(" GMT"));
    }
    // Pipelined: two requests in one write, answered in order.
    conn.get_mut()
        .write_all(b"GET /p/1 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /p/2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut conn).json()["path"], "/p/1");
    let head_resp = {
        // A HEAD answer has a Content-Length but no body.
        let mut line = String::new();
        let mut lines = Vec::new();
        loop {
            line.clear();
            conn.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            lines.push(line.clone());
        }
        lines
    };
    assert!(head_resp[0].starts_with("HTTP/1.1 200 "));
    assert!(head_resp
        .iter()
        .any(|l| l.to_ascii_lowercase().starts_with("content-length: ")));
    // The client's `Connection: close` is honoured and echoed.
    conn.get_mut()
        .write_all(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let last = read_response(&mut conn);
    assert_eq!(last.json()["path"], "/last");
    assert_eq!(last.header("connection"), Some("close"));
    assert!(closed_by_server(&mut conn));
}

#[test]
fn body_cap_and_framing_errors() {
    let addr = start_idp();
    // Exactly MAX_BODY is read, and judged on what it says (no client credentials in it).
    let at_cap = "a".repeat(mock_idp::server::MAX_BODY as usize);
    let resp = request(
        addr,
        "POST",
        "/oauth2/default/v1/token",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &at_cap,
    );
    assert_eq!(resp.status, 401);
    assert_eq!(resp.json()["error"], "invalid_client");

    // One byte more: 413 before the body is read, then the connection closes.
    let mut conn = connect(addr);
    let over = mock_idp::server::MAX_BODY + 1;
    let head = format!(
        "POST /oauth2/default/v1/token HTTP/1.1\r\nHost: x\r\nContent-Length: {over}\r\n\r\n"
    );
    conn.get_mut().write_all(head.as_bytes()).unwrap();
    conn.get_mut().write_all(&[b'a'; 64 * 1024]).unwrap();
    let resp = read_response(&mut conn);
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["error"], "invalid_request");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(closed_by_server(&mut conn));
    // Counted like any other request.
    assert_eq!(
        get(addr, "/control/counts").json()["POST /oauth2/default/v1/token"],
        2
    );

    // Chunked bodies are read like any other, under the same cap.
    let chunked = |body: &[u8]| {
        let mut conn = connect(addr);
        let head = "POST /oauth2/default/v1/token HTTP/1.1\r\nHost: x\r\n\
            Content-Type: application/x-www-form-urlencoded\r\n\
            Authorization: Basic MG9hLWRlbW8tY2xpZW50OmRlbW8tc2VjcmV0\r\n\
            Transfer-Encoding: chunked\r\n\r\n";
        conn.get_mut().write_all(head.as_bytes()).unwrap();
        for piece in body.chunks(16 * 1024) {
            let size = format!("{:x}\r\n", piece.len());
            // The server may stop reading once the body is over the cap.
            let sent = conn.get_mut().write_all(size.as_bytes());
            if sent.and_then(|()| conn.get_mut().write_all(piece)).is_err() {
                break;
            }
            let _ = conn.get_mut().write_all(b"\r\n");
        }
        let _ = conn.get_mut().write_all(b"0\r\n\r\n");
        (read_response(&mut conn), conn)
    };
    let (resp, _) = chunked(b"grant_type=client_credentials&scope=orders%3Aread");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["scope"], "orders:read");
    let over = vec![b'a'; mock_idp::server::MAX_BODY as usize + 1];
    let (resp, mut conn) = chunked(&over);
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["error"], "invalid_request");
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(closed_by_server(&mut conn));

    let reject = |raw: &[u8], status: u16| {
        let mut conn = connect(addr);
        conn.get_mut().write_all(raw).unwrap();
        let resp = read_response(&mut conn);
        assert_eq!(resp.status, status, "{}", String::from_utf8_lossy(raw));
        assert_eq!(resp.header("connection"), Some("close"));
        assert!(closed_by_server(&mut conn));
    };
    reject(b"POST /x HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 400);
    reject(
        b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    );
    reject(b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n", 400);
    let many: String = (0..65).map(|i| format!("X-H{i}: v\r\n")).collect();
    reject(format!("GET /x HTTP/1.1\r\n{many}\r\n").as_bytes(), 431);
    let long = format!(
        "GET /x HTTP/1.1\r\nX-Long: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    reject(long.as_bytes(), 431);
    // The server still serves.
    assert_eq!(get(addr, "/nope").status, 404);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let addr = start_echo();
    let mut conn = connect(addr);
    conn.get_mut()
        .write_all(
            b"PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        )
        .unwrap();
    let mut interim = String::new();
    conn.read_line(&mut interim).unwrap();
    assert!(interim.starts_with("HTTP/1.1 100 "), "{interim:?}");
    conn.read_line(&mut interim).unwrap();
    conn.get_mut().write_all(b"abc").unwrap();
    let resp = read_response(&mut conn);
    assert_eq!(resp.json()["path"], "/e");
}

#[test]
fn handler_panics_answer_500_and_the_server_lives_on() {
    use mock_idp::message::{Outcome, Reply};
    use mock_idp::server::{self, Run};
    for run in [Run::Inline, Run::Blocking] {
        let (listener, addr) = server::bind("127.0.0.1:0").unwrap();
        let served = server::spawn(listener, "panicky", run, |received| {
            match received.unwrap().url.as_str() {
                "/panic" => panic!("handler bug (expected by the test)"),
                "/late-panic" => Outcome::After(
                    Duration::from_millis(10),
                    Box::new(|| panic!("late bug (expected by the test)")),
                ),
                _ => Outcome::Now(Reply::json(200, &json!({"ok": true}))),
            }
        })
        .unwrap();
        thread::spawn(move || served.wait());
        for path in ["/panic", "/late-panic"] {
            let mut conn = connect(addr);
            let head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            conn.get_mut().write_all(head.as_bytes()).unwrap();
            let resp = read_response(&mut conn);
            assert_eq!(resp.status, 500, "{path} {run:?}");
            assert_eq!(resp.header("connection"), Some("close"));
            assert!(closed_by_server(&mut conn));
        }
        let ok = get(addr, "/fine");
        assert_eq!(ok.status, 200);
        assert_eq!(ok.json(), json!({"ok": true}));
    }
}

#[test]
fn slow_reply_holds_only_its_own_connection() {
    // On one connection, a slow answer delays the next request there, never other connections.
    let addr = start_idp();
    post_json(
        addr,
        "/control/fault",
        json!({"mode": "slow", "delay_ms": 800}),
    );
    let mut conn = connect(addr);
    let start = Instant::now();
    conn.get_mut()
        .write_all(b"GET /oauth2/default/v1/keys HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(get(addr, "/nope").status, 404);
    assert!(start.elapsed() < Duration::from_millis(700));
    assert_eq!(read_response(&mut conn).status, 200);
    assert!(start.elapsed() >= Duration::from_millis(800));
    assert_eq!(read_response(&mut conn).status, 404);
}
