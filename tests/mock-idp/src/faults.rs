//! Fault injection for `/v1/keys`.

use serde_json::Value;

pub const DEFAULT_DELAY_MS: u64 = 10_000;

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
    /// 200 with `{"keys":[]}`.
    Empty,
}

impl Fault {
    /// `mode` may be a string or, for `500`, a number.
    pub fn parse(mode: &Value, delay_ms: Option<u64>) -> Result<Fault, String> {
        let mode = match mode {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => return Err(format!("`mode` must be a string, got {other}")),
        };
        Ok(match mode.as_str() {
            "none" => Fault::None,
            "500" => Fault::Status500,
            "slow" => Fault::Slow {
                delay_ms: delay_ms.unwrap_or(DEFAULT_DELAY_MS),
            },
            "malformed" => Fault::Malformed,
            "empty" => Fault::Empty,
            other => {
                return Err(format!(
                    "unknown mode `{other}` (none, 500, slow, malformed, empty)"
                ))
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Status500 => "500",
            Fault::Slow { .. } => "slow",
            Fault::Malformed => "malformed",
            Fault::Empty => "empty",
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
        assert!(Fault::parse(&json!("teapot"), None).is_err());
        assert!(Fault::parse(&json!(null), None).is_err());
    }
}
