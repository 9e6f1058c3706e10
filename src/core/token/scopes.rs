//! The token's scope set: Okta's `scp` (array, or a space-delimited string) united with
//! RFC 9068's `scope` (space-delimited).

use serde_json::{Map, Value};

pub fn granted(claims: &Map<String, Value>) -> Vec<&str> {
    let mut scopes: Vec<&str> = Vec::new();
    for name in ["scp", "scope"] {
        match claims.get(name) {
            Some(Value::Array(items)) if name == "scp" => {
                scopes.extend(items.iter().filter_map(Value::as_str));
            }
            Some(Value::String(s)) => scopes.extend(s.split(' ').filter(|x| !x.is_empty())),
            _ => {}
        }
    }
    scopes.sort_unstable();
    scopes.dedup();
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(v: Value) -> Vec<String> {
        granted(v.as_object().unwrap())
            .into_iter()
            .map(String::from)
            .collect()
    }

    #[test]
    fn unites_scp_and_scope() {
        assert_eq!(
            of(json!({"scp": ["b", "a"], "scope": "c a"})),
            ["a", "b", "c"]
        );
        assert_eq!(of(json!({"scp": "x  y"})), ["x", "y"]);
        assert_eq!(
            of(json!({"scope": ["not", "rfc9068"]})),
            Vec::<String>::new()
        );
        assert_eq!(of(json!({"scp": [1, "ok"]})), ["ok"]);
        assert_eq!(of(json!({})), Vec::<String>::new());
    }
}
