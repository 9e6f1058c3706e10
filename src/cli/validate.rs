//! `okta-jwt validate CONFIG`: the filter's own load-time checks, one `field: problem` line per
//! error (at most one per provider and per rule, as each stops at its first problem).

use crate::core::config::compile;

use super::{read, Outcome};

pub fn run(path: &str) -> Outcome {
    let bytes = match read("config", path) {
        Ok(b) => b,
        Err(o) => return o,
    };
    match compile::parse_all(&bytes) {
        Ok(_) => Outcome::ok(0, "ok\n".into()),
        Err(errors) => Outcome {
            code: 1,
            stdout: String::new(),
            stderr: errors.iter().map(|e| format!("{e}\n")).collect(),
        },
    }
}
