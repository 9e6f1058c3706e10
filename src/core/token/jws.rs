//! Compact JWS parsing with every header check RFC 8725 asks for. Nothing here trusts the
//! token: it only decides whether the token is well-formed enough to try to verify.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::core::crypto::alg::Alg;
use crate::core::crypto::verifier::Signed;
use crate::core::denial::{Denial, Reason};

/// Tokens longer than this (after the prefix is removed) are refused before decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
const MAX_KID_BYTES: usize = 256;

/// Header parameters that would make the token choose its own key or change how it is
/// processed. A verifier that follows any of them can be made to trust an attacker's key.
const FORBIDDEN_HEADERS: [&str; 6] = ["jku", "x5u", "x5c", "jwk", "crit", "b64"];
/// Header parameters that only appear in JWE.
const JWE_HEADERS: [&str; 2] = ["enc", "zip"];

#[derive(Debug, Clone, PartialEq)]
pub struct Token<'a> {
    pub raw: &'a str,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    /// The payload segment as sent: canonical base64url, since decoding is strict.
    pub payload_b64: &'a str,
    pub alg: Alg,
    pub kid: Option<String>,
    /// The header's `typ`, for the access-token checks.
    pub typ: Typ,
    pub signature: Vec<u8>,
    pub claims: Map<String, Value>,
}

/// What a token's `typ` header says it is (compared without regard to case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Typ {
    Absent,
    /// `JWT`.
    Jwt,
    /// `at+jwt` or `application/at+jwt` (RFC 9068).
    AtJwt,
    /// Any other string: not an access token (an ID token's `JWT` aside, such as `dpop+jwt`
    /// or `logout+jwt`).
    Other,
}

impl Typ {
    fn of(value: &str) -> Typ {
        let is = |t: &str| value.eq_ignore_ascii_case(t);
        if is("JWT") {
            Typ::Jwt
        } else if is("at+jwt") || is("application/at+jwt") {
            Typ::AtJwt
        } else {
            Typ::Other
        }
    }
}

impl Token<'_> {
    /// What the verifiers need. `exp` is 0 when absent or not an integer: it only pins
    /// jwt-simple's clock, and the claim checks have refused such tokens already.
    pub fn signed(&self) -> Signed<'_> {
        Signed {
            alg: self.alg,
            signing_input: self.signing_input.as_bytes(),
            signature: &self.signature,
            compact: self.raw,
            exp: self.claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
        }
    }
}

fn fail<T>(reason: Reason, detail: &'static str) -> Result<T, Denial> {
    Err(Denial::new(reason, detail))
}

pub fn parse(raw: &str) -> Result<Token<'_>, Denial> {
    let (h64, p64, s64) = segments(raw)?;
    let (alg, kid, typ) = header(h64)?;
    let claims = payload(p64)?;
    let signature = signature(s64)?;
    Ok(Token {
        raw,
        signing_input: &raw[..h64.len() + 1 + p64.len()],
        payload_b64: p64,
        alg,
        kid,
        typ,
        signature,
        claims,
    })
}

/// The three segments, still encoded; header and payload not empty.
fn segments(raw: &str) -> Result<(&str, &str, &str), Denial> {
    if raw.len() > MAX_TOKEN_BYTES {
        return fail(Reason::TokenTooLarge, "token longer than 8 KiB");
    }
    let mut parts = raw.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return fail(Reason::Malformed, "not three dot-separated segments");
    };
    if h64.is_empty() || p64.is_empty() {
        return fail(Reason::Malformed, "empty header or payload segment");
    }
    Ok((h64, p64, s64))
}

/// The header's `alg` and `kid`, after every check on its parameters.
fn header(h64: &str) -> Result<(Alg, Option<String>, Typ), Denial> {
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h64)
        .or_else(|_| fail(Reason::Malformed, "header is not base64url"))?;
    let header: Map<String, Value> = serde_json::from_slice(&header_bytes)
        .or_else(|_| fail(Reason::Malformed, "header is not a JSON object"))?;
    let alg = alg(&header)?;
    let typ = check_parameters(&header)?;
    Ok((alg, kid(&header)?, typ))
}

fn alg(header: &Map<String, Value>) -> Result<Alg, Denial> {
    match header.get("alg") {
        Some(Value::String(name)) => match Alg::parse(name) {
            Some(alg) => Ok(alg),
            None => fail(Reason::UnsupportedAlg, "alg is none, HMAC or unknown"),
        },
        _ => fail(Reason::Malformed, "header has no alg string"),
    }
}

/// No parameter that picks a key or changes processing, no JWE, and a string `typ` if any.
fn check_parameters(header: &Map<String, Value>) -> Result<Typ, Denial> {
    if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return fail(
            Reason::ForbiddenHeader,
            "header carries jku, x5u, x5c, jwk, crit or b64",
        );
    }
    if JWE_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return fail(Reason::Malformed, "token is a JWE");
    }
    match header.get("typ") {
        None => Ok(Typ::Absent),
        Some(Value::String(t)) => Ok(Typ::of(t)),
        Some(_) => fail(Reason::Malformed, "typ is not a string"),
    }
}

fn kid(header: &Map<String, Value>) -> Result<Option<String>, Denial> {
    match header.get("kid") {
        None => Ok(None),
        Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_KID_BYTES => Ok(Some(k.clone())),
        Some(_) => fail(Reason::Malformed, "kid is not a short non-empty string"),
    }
}

/// The claims: the payload must be a JSON object.
fn payload(p64: &str) -> Result<Map<String, Value>, Denial> {
    let payload = URL_SAFE_NO_PAD
        .decode(p64)
        .or_else(|_| fail(Reason::Malformed, "payload is not base64url"))?;
    serde_json::from_slice(&payload)
        .or_else(|_| fail(Reason::Malformed, "payload is not a JSON object"))
}

fn signature(s64: &str) -> Result<Vec<u8>, Denial> {
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .or_else(|_| fail(Reason::Malformed, "signature is not base64url"))?;
    if signature.is_empty() {
        return fail(Reason::Malformed, "signature is empty");
    }
    Ok(signature)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::test_keys;

    pub(crate) fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    pub(crate) fn token(header: Value, claims: Value) -> String {
        format!(
            "{}.{}.{}",
            b64(&header),
            b64(&claims),
            URL_SAFE_NO_PAD.encode(b"sig")
        )
    }

    fn reason(raw: &str) -> Reason {
        parse(raw).unwrap_err().reason
    }

    #[test]
    fn parses_rfc7515_a2() {
        let t = parse(test_keys::RFC7515_A2_TOKEN).unwrap();
        assert_eq!(t.alg, Alg::RS256);
        assert_eq!(t.kid, None);
        assert_eq!(t.signature.len(), 256);
        assert_eq!(t.claims["iss"], "joe");
        assert_eq!(t.signing_input.matches('.').count(), 1);
        assert!(t.raw.starts_with(t.signing_input));
    }

    #[test]
    fn refuses_dangerous_headers() {
        let claims = serde_json::json!({"iss": "x"});
        for h in ["jku", "x5u", "x5c", "jwk", "crit", "b64"] {
            let mut header = serde_json::json!({"alg": "RS256", "kid": "k"});
            header[h] = serde_json::json!("https://attacker.example/keys");
            assert_eq!(
                reason(&token(header, claims.clone())),
                Reason::ForbiddenHeader,
                "{h}"
            );
        }
        for alg in ["none", "HS256", "HS384", "HS512", "RS1", "ES512", "none "] {
            let header = serde_json::json!({"alg": alg});
            assert_eq!(
                reason(&token(header, claims.clone())),
                Reason::UnsupportedAlg,
                "{alg}"
            );
        }
        assert_eq!(reason(test_keys::RFC7520_4_4_TOKEN), Reason::UnsupportedAlg);
        assert_eq!(reason(test_keys::RFC7520_4_3_TOKEN), Reason::UnsupportedAlg);
    }

    #[test]
    fn refuses_malformed_shapes() {
        let good = token(
            serde_json::json!({"alg": "RS256"}),
            serde_json::json!({"a": 1}),
        );
        assert!(parse(&good).is_ok());
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let cases = [
            String::new(),
            "a.b".into(),
            "a.b.c.d.e".into(),
            format!("{h}.{p}"),
            format!("{h}.{p}."),
            format!("{h}={p}.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s}.x"),
            format!(".{p}.{s}"),
            format!("{h}.{}.{s}", b64(&serde_json::json!([1]))),
            format!("{}.{p}.{s}", b64(&serde_json::json!("RS256"))),
            format!("{}.{p}.{s}", b64(&serde_json::json!({"alg": 1}))),
            format!(
                "{}.{p}.{s}",
                b64(&serde_json::json!({"alg": "RS256", "kid": 7}))
            ),
            format!(
                "{}.{p}.{s}",
                b64(&serde_json::json!({"alg": "RS256", "kid": ""}))
            ),
            format!(
                "{}.{p}.{s}",
                b64(&serde_json::json!({"alg": "RS256", "typ": 7}))
            ),
            format!(
                "{}.{p}.{s}",
                b64(&serde_json::json!({"alg": "RS256", "enc": "A128GCM"}))
            ),
            format!("{h}.{p}.!!!"),
        ];
        for c in cases {
            assert_eq!(reason(&c), Reason::Malformed, "{c}");
        }
    }

    /// RFC 7520 §4.1/§4.2 and RFC 8037 A.4 sign plain text, not a JWT claims set: a JWT
    /// validator must refuse them even though their signatures are valid.
    #[test]
    fn non_jwt_payloads_are_refused() {
        for raw in [
            test_keys::RFC7520_4_1_TOKEN,
            test_keys::RFC7520_4_2_TOKEN,
            test_keys::RFC8037_A4_TOKEN,
        ] {
            let e = parse(raw).unwrap_err();
            assert_eq!(e.reason, Reason::Malformed, "{raw}");
            assert_eq!(e.detail, "payload is not a JSON object");
        }
    }

    #[test]
    fn size_limit_applies_before_decoding() {
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(reason(&big), Reason::TokenTooLarge);
        let kid = "k".repeat(MAX_KID_BYTES + 1);
        let t = token(
            serde_json::json!({"alg": "RS256", "kid": kid}),
            serde_json::json!({}),
        );
        assert_eq!(reason(&t), Reason::Malformed);
    }

    #[test]
    fn accepts_jwt_typ_variants() {
        for typ in ["JWT", "at+jwt", "application/at+JWT"] {
            let t = token(
                serde_json::json!({"alg": "ES256", "typ": typ}),
                serde_json::json!({}),
            );
            assert_eq!(parse(&t).unwrap().alg, Alg::ES256);
        }
    }
}
