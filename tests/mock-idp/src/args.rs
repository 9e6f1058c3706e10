//! Command-line parsing for both binaries (hand-rolled: the flag set is tiny).

use std::path::PathBuf;

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

/// Splits `--flag value` / `--flag=value` pairs; every flag takes a value.
fn pairs(args: &[String]) -> Result<Option<Vec<(String, String)>>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument `{arg}`"));
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                (flag.to_string(), v.clone())
            }
        };
        out.push((name, value));
    }
    Ok(Some(out))
}

pub fn parse_mock_idp(args: &[String]) -> Result<Parsed<MockIdpOptions>, String> {
    let Some(pairs) = pairs(args)? else {
        return Ok(Parsed::Help);
    };
    let mut o = MockIdpOptions::default();
    for (name, value) in pairs {
        match name.as_str() {
            "listen" => o.listen = value,
            "public-url" => o.public_url = Some(value),
            "servers" => {
                o.servers = value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if let Some(bad) = o.servers.iter().find(|s| !crate::state::valid_server_id(s)) {
                    return Err(format!("invalid server id `{bad}`"));
                }
            }
            "key-dir" => o.key_dir = Some(PathBuf::from(value)),
            "max-age" => {
                o.max_age = value
                    .parse()
                    .map_err(|_| format!("--max-age: not a number: `{value}`"))?
            }
            "lifetime" => {
                o.lifetime = value
                    .parse::<u32>()
                    .map_err(|_| format!("--lifetime: not a number: `{value}`"))?
                    .into()
            }
            _ => return Err(format!("unknown flag --{name}")),
        }
    }
    Ok(Parsed::Run(o))
}

/// Returns the listen address.
pub fn parse_echo(args: &[String]) -> Result<Parsed<String>, String> {
    let Some(pairs) = pairs(args)? else {
        return Ok(Parsed::Help);
    };
    let mut listen = "127.0.0.1:0".to_string();
    for (name, value) in pairs {
        match name.as_str() {
            "listen" => listen = value,
            _ => return Err(format!("unknown flag --{name}")),
        }
    }
    Ok(Parsed::Run(listen))
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
        assert_eq!(parse_mock_idp(&v(&["-h"])).unwrap(), Parsed::Help);
        assert_eq!(
            parse_echo(&v(&[])).unwrap(),
            Parsed::Run("127.0.0.1:0".to_string())
        );
    }
}
