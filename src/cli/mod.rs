//! `okta-jwt`: the filter's core as a command-line tool (SPEC "Command-line tool"). Native
//! only; the filter's wasm build does not contain it. Each command is a function from its
//! arguments to what it prints and its exit code, so it is tested without a process.

pub mod args;
pub mod decode;
pub mod explain;
pub mod time;
pub mod validate;

/// What a command prints and how it exits: 0 ok or allowed, 1 invalid config or denied,
/// 2 usage error or unreadable input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn ok(code: u8, stdout: String) -> Outcome {
        Outcome {
            code,
            stdout,
            stderr: String::new(),
        }
    }

    /// One clear line and exit code 2.
    pub fn input_error(line: impl Into<String>) -> Outcome {
        Outcome {
            code: 2,
            stdout: String::new(),
            stderr: line.into() + "\n",
        }
    }
}

pub const USAGE: &str = "usage:
  okta-jwt validate CONFIG
  okta-jwt explain --config CONFIG (--token T | --token-file F) [--method M] [--path P]
                   [--header \"Name: value\"]... [--jwks FILE | --jwks PROVIDER=FILE]...
                   [--now UNIX_SECONDS] [--client-ip ADDRESS] [--scheme DPoP] [--json]
  okta-jwt decode TOKEN";

/// Runs `okta-jwt` with its arguments (without the program name).
pub fn run(args: Vec<String>) -> Outcome {
    let mut it = args.into_iter();
    match it.next().as_deref() {
        Some("validate") => match (it.next(), it.next()) {
            (Some(path), None) => validate::run(&path),
            _ => Outcome::input_error(USAGE),
        },
        Some("explain") => match args::Explain::parse(it) {
            Ok(a) => explain::run(&a),
            Err(e) => Outcome::input_error(format!("{e}\n{USAGE}")),
        },
        Some("decode") => match (it.next(), it.next()) {
            (Some(token), None) => decode::run(&token),
            _ => Outcome::input_error(USAGE),
        },
        Some("-h" | "--help" | "help") => Outcome::ok(0, format!("{USAGE}\n")),
        _ => Outcome::input_error(USAGE),
    }
}

/// Reads a file, or says in one line why not.
fn read(what: &str, path: &str) -> Result<Vec<u8>, Outcome> {
    std::fs::read(path)
        .map_err(|e| Outcome::input_error(format!("{what} {path}: cannot read: {e}")))
}
