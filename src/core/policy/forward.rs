//! Writing verified claims upstream: the value rules of SPEC.md's `claims_to_headers`.

use serde_json::Value;

/// Header values longer than this are not written; upstreams commonly cap a header at 8 KiB.
pub const MAX_HEADER_VALUE: usize = 8 * 1024;

/// The header value for a claim, or `None` when SPEC.md says to write nothing.
pub fn header_value(claim: &Value) -> Option<String> {
    let text = match claim {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    let safe = !text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
    (safe && text.len() <= MAX_HEADER_VALUE).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn value_rules() {
        assert_eq!(header_value(&json!("alice")).as_deref(), Some("alice"));
        assert_eq!(
            header_value(&json!(["a", "b", 3])).as_deref(),
            Some("a b 3")
        );
        assert_eq!(header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(header_value(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(header_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(
            header_value(&json!({"a": [1, "x"]})).as_deref(),
            Some(r#"{"a":[1,"x"]}"#)
        );
        assert_eq!(header_value(&json!(null)).as_deref(), Some("null"));
    }

    #[test]
    fn refuses_header_injection() {
        assert_eq!(header_value(&json!("a\r\nx-admin: 1")), None);
        assert_eq!(header_value(&json!(["ok", "a\nb"])), None);
        assert_eq!(header_value(&json!("nul\u{0}")), None);
        assert_eq!(header_value(&json!("x".repeat(MAX_HEADER_VALUE + 1))), None);
    }
}
