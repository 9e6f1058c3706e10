//! The echo upstream: tells tests which method, path and headers reached it.

use serde_json::{json, Map, Value};

use crate::message::{Outcome, Received, Reply};

/// The body is not echoed (one over `server::MAX_BODY` is answered 413).
pub fn serve(received: Received) -> Outcome {
    Outcome::Now(match received {
        Ok(req) => {
            let headers = req.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
            echo_reply(&req.method, &req.url, headers)
        }
        Err(refused) => refused.reply,
    })
}

/// Header names are lowercased; repeated headers are joined with ", ".
pub fn echo_reply<'a>(
    method: &str,
    url: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Reply {
    let mut map: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match map.get_mut(&name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                map.insert(name, value.into());
            }
        }
    }
    Reply::json(200, &json!({"method": method, "path": url, "headers": map}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_joins_repeated_headers() {
        let r = echo_reply(
            "POST",
            "/a/b?x=1",
            [("X-Thing", "1"), ("Host", "h"), ("x-thing", "2")],
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.body_json(),
            json!({"method": "POST", "path": "/a/b?x=1", "headers": {"x-thing": "1, 2", "host": "h"}})
        );
    }
}
