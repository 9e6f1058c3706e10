//! The introspection call (RFC 7662 section 2.1): a form-encoded POST through the provider's
//! cluster, with `client_secret_basic` authentication; and which tokens may be sent at all.

use crate::core::denial::{Denial, Reason};
use crate::core::token::jws::MAX_TOKEN_BYTES;

use super::settings::{Introspection, Secret};
use super::token_key::TokenKey;

/// What the shell sends. The token is in `body` and the credentials in `authorization`, both
/// `Secret`, so neither can be printed by accident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    pub provider: usize,
    pub key: TokenKey,
    pub cluster: String,
    /// `:method`, `:path`, `:authority`, `content-type`, `accept`.
    pub headers: Vec<(&'static str, String)>,
    pub authorization: Secret,
    pub body: Secret,
    pub timeout_ms: u64,
}

/// A token is opaque when it is not shaped as a compact JWS (three dot-separated segments).
pub fn is_opaque(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() != 2
}

/// An opaque token worth an introspection call: RFC 6750's `b64token` characters, at most 8
/// KiB. Anything else (spaces, commas of joined tokens, control bytes) is refused locally and
/// never reaches the authorization server.
pub fn check_opaque(token: &str) -> Result<(), Denial> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Denial::new(
            Reason::TokenTooLarge,
            "token longer than 8 KiB",
        ));
    }
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(Denial::new(
            Reason::Malformed,
            "opaque token has characters outside b64token",
        )),
    }
}

/// The call for `token`.
pub fn request(s: &Introspection, provider: usize, key: TokenKey, token: &str) -> CallRequest {
    let mut body = String::with_capacity(token.len() + 40);
    body.push_str("token=");
    body.extend(form_urlencoded::byte_serialize(token.as_bytes()));
    body.push_str("&token_type_hint=access_token");
    CallRequest {
        provider,
        key,
        cluster: s.cluster.clone(),
        headers: vec![
            (":method", "POST".to_owned()),
            (":path", s.path.clone()),
            (":authority", s.authority.clone()),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept", "application/json".to_owned()),
        ],
        authorization: s.authorization.clone(),
        body: Secret::new(body),
        timeout_ms: s.timeout_ms,
    }
}

/// `Basic base64(form(id) ":" form(secret))` (RFC 6749 section 2.3.1).
pub fn basic_authorization(client_id: &str, secret: &str) -> Secret {
    use base64::Engine;
    let form = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", form(client_id), form(secret));
    Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::introspection::settings::Tokens;

    #[test]
    fn opaque_is_anything_but_three_segments() {
        assert!(is_opaque("abc"));
        assert!(is_opaque("a.b"));
        assert!(is_opaque("a.b.c.d"));
        assert!(!is_opaque("a.b.c"));
        assert!(!is_opaque(".."));
    }

    #[test]
    fn only_b64token_characters_are_sent() {
        assert!(check_opaque("AbC-._~+/09==").is_ok());
        for bad in ["", "==", "a b", "a,b", "a\u{0}", "é", "a\r\n"] {
            assert_eq!(
                check_opaque(bad).map_err(|d| d.reason),
                Err(Reason::Malformed),
                "{bad:?}"
            );
        }
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            check_opaque(&big).map_err(|d| d.reason),
            Err(Reason::TokenTooLarge)
        );
    }

    #[test]
    fn request_shape() {
        let s = Introspection {
            uri: "https://org.example/oauth2/v1/introspect".into(),
            cluster: "okta".into(),
            authority: "org.example".into(),
            path: "/oauth2/v1/introspect".into(),
            authorization: basic_authorization("0oa id", "s3cr:t&=+"),
            tokens: Tokens::Opaque,
            timeout_ms: 1500,
            cache_s: 60,
            negative_cache_s: 10,
            max_entries: 10,
            require_exp: true,
            max_in_flight: 4,
            breaker_failures: 5,
            breaker_cool_down_s: 10,
        };
        let r = request(&s, 1, TokenKey(7), "a+b/c=");
        assert_eq!(
            r.body.expose(),
            "token=a%2Bb%2Fc%3D&token_type_hint=access_token"
        );
        assert_eq!(r.cluster, "okta");
        assert_eq!(r.timeout_ms, 1500);
        assert!(r
            .headers
            .contains(&(":path", "/oauth2/v1/introspect".into())));
        assert!(r
            .headers
            .contains(&("content-type", "application/x-www-form-urlencoded".into())));
        use base64::Engine;
        let b64 = r.authorization.expose().strip_prefix("Basic ").unwrap();
        let pair = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(pair, b"0oa+id:s3cr%3At%26%3D%2B");
        let printed = format!("{r:?}");
        assert!(!printed.contains("a%2Bb") && !printed.contains("Basic"));
    }
}
