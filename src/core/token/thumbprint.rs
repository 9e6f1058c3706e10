//! JWK thumbprints (RFC 7638): the SHA-256 of the key's required members, as a JSON object
//! with the members in lexicographic order and no whitespace. A DPoP-bound token names its
//! key this way (`cnf.jkt`, RFC 9449 section 6.1).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The required members of each key type, already in lexicographic order (RFC 7638 section
/// 3.2; OKP from RFC 8037 section 2).
fn required(kty: &str) -> Option<&'static [&'static str]> {
    match kty {
        "EC" => Some(&["crv", "kty", "x", "y"]),
        "RSA" => Some(&["e", "kty", "n"]),
        "OKP" => Some(&["crv", "kty", "x"]),
        _ => None,
    }
}

/// The base64url SHA-256 thumbprint of a public JWK; `None` when a required member is
/// missing or not a string, or the key type is unknown.
pub fn sha256(jwk: &Map<String, Value>) -> Option<String> {
    let kty = jwk.get("kty").and_then(Value::as_str)?;
    let mut members = Vec::new();
    for name in required(kty)? {
        let value = jwk.get(*name).and_then(Value::as_str)?;
        // serde_json writes a string with exactly the escapes RFC 7638 section 3.3 asks for.
        let quoted = serde_json::to_string(value).ok()?;
        members.push(format!("\"{name}\":{quoted}"));
    }
    let canonical = format!("{{{}}}", members.join(","));
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn rfc_7638_section_3_1_example() {
        let jwk = obj(json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }));
        assert_eq!(
            sha256(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn optional_members_and_order_do_not_matter() {
        let a = obj(json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "BB"}));
        let b = obj(
            json!({"y": "BB", "use": "sig", "x": "AA", "kid": "k", "crv": "P-256", "kty": "EC"}),
        );
        assert_eq!(sha256(&a), sha256(&b));
        let c = obj(json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "BC"}));
        assert_ne!(sha256(&a), sha256(&c));
    }

    #[test]
    fn incomplete_or_unknown_keys_have_no_thumbprint() {
        assert_eq!(
            sha256(&obj(json!({"kty": "EC", "crv": "P-256", "x": "AA"}))),
            None
        );
        assert_eq!(
            sha256(&obj(json!({"kty": "RSA", "n": 1, "e": "AQAB"}))),
            None
        );
        assert_eq!(sha256(&obj(json!({"kty": "oct", "k": "AA"}))), None);
        assert_eq!(sha256(&obj(json!({"n": "AA", "e": "AQAB"}))), None);
    }
}
