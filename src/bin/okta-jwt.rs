//! `okta-jwt`: the filter's core as a command-line tool (SPEC "Command-line tool").
//! Exit codes: 0 ok / allowed, 1 invalid config / denied, 2 usage or unreadable input.

use std::process::ExitCode;

use okta_jwt_filter::core::config::compile as config;

const USAGE: &str = "usage: okta-jwt validate CONFIG";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, path] if cmd == "validate" => validate(path),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn validate(path: &str) -> ExitCode {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{path}: cannot read: {e}");
            return ExitCode::from(2);
        }
    };
    match config::parse(&bytes) {
        Ok(_) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
