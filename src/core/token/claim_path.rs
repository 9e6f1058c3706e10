//! Dotted claim paths such as `realm_access.roles`, resolved against a token's payload.

use serde_json::{Map, Value};

const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    segments: Vec<String>,
}

impl ClaimPath {
    pub fn parse(path: &str) -> Result<ClaimPath, String> {
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        if path.is_empty() || segments.iter().any(|s| s.is_empty()) {
            return Err(format!("{path:?} is not a claim name or dotted path"));
        }
        if segments.len() > MAX_DEPTH {
            return Err(format!("{path:?} is nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(ClaimPath { segments })
    }

    /// The claim's value, if every segment but the last names an object.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut value = claims.get(first)?;
        for segment in rest {
            value = value.as_object()?.get(segment)?;
        }
        Some(value)
    }

    pub fn as_dotted(&self) -> String {
        self.segments.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_top_level_and_nested_claims() {
        let claims = json!({"sub": "a", "org": {"team": {"name": "x"}}, "n": 1});
        let claims = claims.as_object().unwrap();
        assert_eq!(
            ClaimPath::parse("sub").unwrap().lookup(claims),
            Some(&json!("a"))
        );
        assert_eq!(
            ClaimPath::parse("org.team.name").unwrap().lookup(claims),
            Some(&json!("x"))
        );
        assert_eq!(
            ClaimPath::parse("org.missing").unwrap().lookup(claims),
            None
        );
        assert_eq!(ClaimPath::parse("n.deeper").unwrap().lookup(claims), None);
    }

    #[test]
    fn refuses_empty_segments_and_deep_paths() {
        for bad in ["", ".", "a.", ".a", "a..b", "a.b.c.d.e.f.g.h.i"] {
            assert!(ClaimPath::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(ClaimPath::parse("a.b").unwrap().as_dotted(), "a.b");
    }
}
