//! Command-line parsing for both binaries, with lexopt (the flag set is tiny).

use std::path::PathBuf;

use lexopt::prelude::*;
use lexopt::Parser;

pub const MOCK_IDP_USAGE: &str =
    "usage: mock-idp [--listen 127.0.0.1:0] [--public-url URL] [--servers default,second]
                [--key-dir DIR] [--max-age 300] [--lifetime 3600]";
pub const ECHO_USAGE: &str = "usage: echo-upstream [--listen 127.0.0.1:0]";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockIdpOptions {
    pub listen: String,
    pub public_url: Option<String>,
    pub servers: Vec<String>,
    pub key_dir: Option<PathBuf>,
    pub max_age: u64,
    pub lifetime: i64,
}

impl Default for MockIdpOptions {
    fn default() -> Self {
        MockIdpOptions {
            listen: "127.0.0.1:0".to_string(),
            public_url: None,
            servers: vec!["default".to_string()],
            key_dir: None,
            max_age: 300,
            lifetime: 3600,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    Run(T),
    Help,
}

/// Every flag takes a value, as `--flag value` or `--flag=value`; a repeated flag's last value
/// wins.
pub fn parse_mock_idp(args: &[String]) -> Result<Parsed<MockIdpOptions>, String> {
    let mut o = MockIdpOptions::default();
    let mut p = Parser::from_args(args);
    while let Some(arg) = p.next().map_err(text)? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("listen") => o.listen = string(&mut p)?,
            Long("public-url") => o.public_url = Some(string(&mut p)?),
            Long("servers") => {
                o.servers = string(&mut p)?
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if let Some(bad) = o.servers.iter().find(|s| !crate::state::valid_server_id(s)) {
                    return Err(format!("invalid server id `{bad}`"));
                }
            }
            Long("key-dir") => o.key_dir = Some(PathBuf::from(p.value().map_err(text)?)),
            Long("max-age") => o.max_age = number(&mut p, "--max-age")?,
            Long("lifetime") => o.lifetime = number::<u32>(&mut p, "--lifetime")?.into(),
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(Parsed::Run(o))
}

/// Returns the listen address.
pub fn parse_echo(args: &[String]) -> Result<Parsed<String>, String> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut p = Parser::from_args(args);
    while let Some(arg) = p.next().map_err(text)? {
        match arg {
            Short('h') | Long("help") => return Ok(Parsed::Help),
            Long("listen") => listen = string(&mut p)?,
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    Ok(Parsed::Run(listen))
}

fn string(p: &mut Parser) -> Result<String, String> {
    p.value().and_then(|v| v.string()).map_err(text)
}

fn number<T>(p: &mut Parser, flag: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    p.value()
        .and_then(|v| v.parse())
        .map_err(|e| format!("{flag}: {e}"))
}

fn text(e: lexopt::Error) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_all_flags() {
        let Parsed::Run(o) = parse_mock_idp(&v(&[
            "--listen",
            "0.0.0.0:8080",
            "--public-url=http://mock-idp:8080",
            "--servers",
            "default,second",
            "--key-dir",
            "/keys",
            "--max-age",
            "5",
            "--lifetime=60",
        ]))
        .unwrap() else {
            panic!("expected Run");
        };
        assert_eq!(o.listen, "0.0.0.0:8080");
        assert_eq!(o.public_url.as_deref(), Some("http://mock-idp:8080"));
        assert_eq!(o.servers, vec!["default", "second"]);
        assert_eq!(o.key_dir, Some(PathBuf::from("/keys")));
        assert_eq!((o.max_age, o.lifetime), (5, 60));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse_mock_idp(&v(&["--bogus", "1"])).is_err());
        assert!(parse_mock_idp(&v(&["--max-age"])).is_err());
        assert!(parse_mock_idp(&v(&["--max-age", "x"])).is_err());
        assert!(parse_mock_idp(&v(&["--servers", "a/b"])).is_err());
        assert!(parse_mock_idp(&v(&["--lifetime", "-1"])).is_err());
        assert!(parse_mock_idp(&v(&["stray"])).is_err());
        assert!(parse_echo(&v(&["--max-age", "5"])).is_err());
        assert_eq!(parse_echo(&v(&["--help"])).unwrap(), Parsed::Help);
        assert_eq!(parse_mock_idp(&v(&["-h"])).unwrap(), Parsed::Help);
        assert_eq!(
            parse_echo(&v(&[])).unwrap(),
            Parsed::Run("127.0.0.1:0".to_string())
        );
    }
}
