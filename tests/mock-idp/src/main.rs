use std::io::Write;
use std::process::ExitCode;

use mock_idp::args::{parse_mock_idp, Parsed, MOCK_IDP_USAGE};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_mock_idp(&args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            println!("{MOCK_IDP_USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mock-idp: {e}\n{MOCK_IDP_USAGE}");
            return ExitCode::from(2);
        }
    };
    let running = match mock_idp::start_mock_idp(&opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mock-idp: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(app) = &running.app {
        eprintln!("mock-idp: public url {}", app.config.public_url);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", running.readiness_line());
    let _ = out.flush();
    drop(out);
    running.wait();
    ExitCode::SUCCESS
}
