//! Real HTTP over loopback: in-process servers and the compiled binaries.

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

/// An in-process mock IdP on a free port whose `default` server uses the shared keys.
fn start_idp() -> SocketAddr {
    let opts = MockIdpOptions {
        servers: vec![],
        ..MockIdpOptions::default()
    };
    let running = mock_idp::start_mock_idp(&opts).unwrap();
    running
        .app
        .as_ref()
        .unwrap()
        .add_server("default", shared_keys().to_vec());
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
