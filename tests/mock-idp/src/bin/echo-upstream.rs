use std::io::Write;
use std::process::ExitCode;

use mock_idp::args::{parse_echo, Parsed, ECHO_USAGE};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match parse_echo(&args) {
        Ok(Parsed::Run(l)) => l,
        Ok(Parsed::Help) => {
            println!("{ECHO_USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("echo-upstream: {e}\n{ECHO_USAGE}");
            return ExitCode::from(2);
        }
    };
    let running = match mock_idp::start_echo(&listen) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("echo-upstream: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", running.readiness_line());
    let _ = out.flush();
    drop(out);
    running.wait();
    ExitCode::SUCCESS
}
