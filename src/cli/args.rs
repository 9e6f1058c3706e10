//! The arguments of `okta-jwt explain`, parsed with lexopt.

use lexopt::prelude::*;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explain {
    pub config: String,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub method: String,
    pub path: String,
    /// `(name, value)`, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// `(provider or None for every remote provider, file)`.
    pub jwks: Vec<(Option<String>, String)>,
    pub now: Option<u64>,
    /// The downstream address, for `ip` rules and keys (default: none, as if unknown).
    pub client_ip: Option<String>,
    /// `--scheme DPoP`: the token goes in `Authorization` under this scheme.
    pub scheme: Option<String>,
    pub json: bool,
}

impl Explain {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Explain, String> {
        let mut p = lexopt::Parser::from_args(args);
        let mut a = Explain {
            method: "GET".into(),
            path: "/".into(),
            ..Explain::default()
        };
        let mut config = None;
        while let Some(arg) = p.next().map_err(|e| e.to_string())? {
            match arg {
                Long("config") => config = Some(value(&mut p)?),
                Long("token") => a.token = Some(value(&mut p)?),
                Long("token-file") => a.token_file = Some(value(&mut p)?),
                Long("method") => a.method = value(&mut p)?,
                Long("path") => a.path = value(&mut p)?,
                Long("header") => a.headers.push(header(&value(&mut p)?)?),
                Long("jwks") => a.jwks.push(jwks(value(&mut p)?)),
                Long("now") => {
                    a.now = Some(
                        value(&mut p)?
                            .parse()
                            .map_err(|_| "--now takes Unix seconds")?,
                    )
                }
                Long("client-ip") => a.client_ip = Some(value(&mut p)?),
                Long("scheme") => a.scheme = Some(value(&mut p)?),
                Long("json") => a.json = true,
                Value(v) => return Err(format!("unexpected argument {v:?}")),
                other => return Err(other.unexpected().to_string()),
            }
        }
        a.config = config.ok_or("--config is required")?;
        match (&a.token, &a.token_file) {
            (Some(_), None) | (None, Some(_)) => Ok(a),
            _ => Err("exactly one of --token and --token-file is required".into()),
        }
    }
}

fn value(p: &mut lexopt::Parser) -> Result<String, String> {
    p.value()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|_| "arguments must be UTF-8".to_string())
}

fn header(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("--header {raw:?} is not \"Name: value\""))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("--header {raw:?} has no name"));
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_owned()))
}

/// `PROVIDER=FILE`, or a bare `FILE` (a name cannot contain `/` or `.`, a path usually does).
fn jwks(raw: String) -> (Option<String>, String) {
    match raw.split_once('=') {
        Some((name, file))
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            (Some(name.to_owned()), file.to_owned())
        }
        _ => (None, raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Explain, String> {
        Explain::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_every_option() {
        let a = parse(&["--config", "c.json", "--token", "t"]).unwrap();
        assert_eq!(
            (a.method.as_str(), a.path.as_str(), a.json),
            ("GET", "/", false)
        );
        let a = parse(&[
            "--config",
            "c.json",
            "--token-file",
            "t.txt",
            "--method",
            "POST",
            "--path",
            "/x?a=1",
            "--header",
            "X-Org: acme",
            "--jwks",
            "keys.json",
            "--jwks",
            "okta=/tmp/k.json",
            "--now",
            "1700000000",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.headers, vec![("x-org".into(), "acme".into())]);
        assert_eq!(
            a.jwks,
            vec![
                (None, "keys.json".into()),
                (Some("okta".into()), "/tmp/k.json".into())
            ]
        );
        assert_eq!((a.now, a.json), (Some(1_700_000_000), true));
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["--token", "t"]).is_err());
        assert!(parse(&["--config", "c"]).is_err());
        assert!(parse(&["--config", "c", "--token", "t", "--token-file", "f"]).is_err());
        assert!(parse(&["--config", "c", "--token", "t", "--header", "nocolon"]).is_err());
        assert!(parse(&["--config", "c", "--token", "t", "--now", "soon"]).is_err());
        assert!(parse(&["--config", "c", "--token", "t", "--bogus"]).is_err());
    }
}
