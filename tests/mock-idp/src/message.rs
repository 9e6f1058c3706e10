//! The request and reply values handlers take and give, independent of any connection so
//! handlers are easy to unit-test; `server` carries them over HTTP.

use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

/// A fully read request (header names as the server gives them; look them up with `header`).
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

/// What a handler is given: the request, or one whose body was refused (over
/// `server::MAX_BODY`) with the reply it gets.
pub type Received = Result<Req, Refused>;

#[derive(Debug)]
pub struct Refused {
    /// The request without its body.
    pub req: Req,
    pub reply: Reply,
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

    /// No body and no content type (a revocation's answer).
    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
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
    /// Answered after the delay, built then: only this request's connection waits.
    After(Duration, Deferred),
    /// No answer: the connection is closed (the `drop` fault, a transport error for clients).
    Drop,
}

impl Outcome {
    /// Resolves the outcome on the current thread (tests); `None` for a dropped connection.
    pub fn resolve(self) -> Option<Reply> {
        match self {
            Outcome::Now(r) => Some(r),
            Outcome::After(d, f) => {
                thread::sleep(d);
                Some(f())
            }
            Outcome::Drop => None,
        }
    }

    /// As `resolve`, for tests that expect an answer; a dropped connection reads as status 0.
    pub fn wait(self) -> Reply {
        self.resolve().unwrap_or(Reply::empty(0))
    }
}
