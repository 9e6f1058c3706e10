//! Fault injection for `/v1/keys` and `/v1/introspect`, set per server and per endpoint.

use serde_json::Value;

pub const DEFAULT_DELAY_MS: u64 = 10_000;

/// The endpoints a fault can be set on; each server keeps one fault per endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Keys,
    Introspect,
}

impl Endpoint {
    /// `None` is `keys`, so callers written before introspection existed keep working.
    pub fn parse(name: Option<&str>) -> Result<Endpoint, String> {
        match name.unwrap_or("keys") {
            "keys" => Ok(Endpoint::Keys),
            "introspect" => Ok(Endpoint::Introspect),
            other => Err(format!("unknown endpoint `{other}` (keys, introspect)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Keys => "keys",
            Endpoint::Introspect => "introspect",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// 500 with a small JSON body.
    Status500,
    /// Sleep, then answer normally.
    Slow { delay_ms: u64 },
    /// 200 with truncated JSON.
    Malformed,
    /// 200 with `{"keys":[]}` (keys) or `{}` (introspect: no `active` at all).
    Empty,
    /// The connection is closed without an answer.
    Drop,
    /// Introspect only: the usual answer with `active` as a string (`"true"`/`"false"`).
    ActiveNotBool,
    /// Introspect only: the usual answer padded to more than 64 KiB (still valid JSON).
    Oversize,
}

impl Fault {
    /// A fault for `/v1/keys`; `mode` may be a string or, for `500`, a number.
    pub fn parse(mode: &Value, delay_ms: Option<u64>) -> Result<Fault, String> {
        Fault::parse_for(Endpoint::Keys, mode, delay_ms)
    }

    pub fn parse_for(
        endpoint: Endpoint,
        mode: &Value,
        delay_ms: Option<u64>,
    ) -> Result<Fault, String> {
        let mode = match mode {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(format!("`mode` must be a string, got {other}")),
        };
        let fault = match mode.as_str() {
            "none" => Some(Fault::None),
            "500" => Some(Fault::Status500),
            "slow" => Some(Fault::Slow {
                delay_ms: delay_ms.unwrap_or(DEFAULT_DELAY_MS),
            }),
            "malformed" => Some(Fault::Malformed),
            "empty" => Some(Fault::Empty),
            "drop" => Some(Fault::Drop),
            "active_not_bool" | "oversize" if endpoint == Endpoint::Introspect => {
                Some(if mode == "oversize" {
                    Fault::Oversize
                } else {
                    Fault::ActiveNotBool
                })
            }
            _ => None,
        };
        let fault = fault.ok_or_else(|| {
            format!(
                "unknown mode `{mode}` for {} ({})",
                endpoint.name(),
                Fault::modes(endpoint)
            )
        })?;
        Ok(fault)
    }

    fn modes(endpoint: Endpoint) -> &'static str {
        match endpoint {
            Endpoint::Keys => "none, 500, slow, malformed, empty, drop",
            Endpoint::Introspect => {
                "none, 500, slow, malformed, empty, drop, active_not_bool, oversize"
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Status500 => "500",
            Fault::Slow { .. } => "slow",
            Fault::Malformed => "malformed",
            Fault::Empty => "empty",
            Fault::Drop => "drop",
            Fault::ActiveNotBool => "active_not_bool",
            Fault::Oversize => "oversize",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_modes() {
        assert_eq!(Fault::parse(&json!("none"), None).unwrap(), Fault::None);
        assert_eq!(Fault::parse(&json!("500"), None).unwrap(), Fault::Status500);
        assert_eq!(Fault::parse(&json!(500), None).unwrap(), Fault::Status500);
        assert_eq!(
            Fault::parse(&json!("slow"), None).unwrap(),
            Fault::Slow { delay_ms: 10_000 }
        );
        assert_eq!(
            Fault::parse(&json!("slow"), Some(5)).unwrap(),
            Fault::Slow { delay_ms: 5 }
        );
        assert_eq!(
            Fault::parse(&json!("malformed"), None).unwrap(),
            Fault::Malformed
        );
        assert_eq!(Fault::parse(&json!("empty"), None).unwrap(), Fault::Empty);
        assert_eq!(Fault::parse(&json!("drop"), None).unwrap(), Fault::Drop);
        assert!(Fault::parse(&json!("teapot"), None).is_err());
        assert!(Fault::parse(&json!(null), None).is_err());
    }

    #[test]
    fn introspect_only_modes_are_refused_for_keys() {
        let introspect = |m: &str| Fault::parse_for(Endpoint::Introspect, &json!(m), None);
        assert_eq!(introspect("active_not_bool").unwrap(), Fault::ActiveNotBool);
        assert_eq!(introspect("oversize").unwrap(), Fault::Oversize);
        assert_eq!(introspect("500").unwrap(), Fault::Status500);
        assert!(introspect("teapot").is_err());
        assert!(Fault::parse(&json!("active_not_bool"), None).is_err());
        assert!(Fault::parse(&json!("oversize"), None).is_err());
        for f in [Fault::ActiveNotBool, Fault::Oversize, Fault::Drop] {
            assert_eq!(introspect(f.name()).unwrap(), f);
        }
        assert_eq!(Endpoint::parse(None).unwrap(), Endpoint::Keys);
        assert_eq!(
            Endpoint::parse(Some("introspect")).unwrap(),
            Endpoint::Introspect
        );
        assert!(Endpoint::parse(Some("token")).is_err());
    }
}
