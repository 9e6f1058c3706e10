//! Access tokens only (SPEC "Access tokens only", RFC 9068, RFC 8725 section 3.11): an ID
//! token or any other JWT the IdP signs with the same keys must not open an API.
//! Sender-constrained tokens (`cnf`) are checked later, against the request (`dpop`, and the
//! client certificate), by the authentication stage.

use crate::core::denial::{Denial, Reason};
use crate::core::token::jws::{Token, Typ};

/// `require_at_jwt`: the provider demands RFC 9068's `typ`.
pub fn check(token: &Token<'_>, require_at_jwt: bool) -> Result<(), Denial> {
    match token.typ {
        Typ::Other => return deny("typ is not an access-token type"),
        Typ::Absent | Typ::Jwt if require_at_jwt => {
            return deny("typ is not at+jwt and the provider requires it")
        }
        _ => {}
    }
    // ID-token claims (OpenID Connect Core 3.1.3.6, 3.2.2.10).
    if token.claims.contains_key("nonce") || token.claims.contains_key("at_hash") {
        return deny("carries nonce or at_hash: an ID token");
    }
    Ok(())
}

fn deny(detail: &'static str) -> Result<(), Denial> {
    Err(Denial::new(Reason::NotAccessToken, detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::token::jws;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::{json, Value};

    fn token(header: Value, claims: Value) -> String {
        let b = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.{}",
            b(&header),
            b(&claims),
            URL_SAFE_NO_PAD.encode(b"sig")
        )
    }

    fn verdict(header: Value, claims: Value, require_at_jwt: bool) -> Option<Reason> {
        let raw = token(header, claims);
        let t = jws::parse(&raw).unwrap();
        check(&t, require_at_jwt).err().map(|d| d.reason)
    }

    #[test]
    fn access_token_types_pass_and_others_are_refused() {
        for typ in [
            None,
            Some("JWT"),
            Some("jwt"),
            Some("at+jwt"),
            Some("application/AT+JWT"),
        ] {
            let mut h = json!({"alg": "RS256"});
            if let Some(t) = typ {
                h["typ"] = json!(t);
            }
            assert_eq!(verdict(h, json!({}), false), None, "{typ:?}");
        }
        for typ in [
            "application/jwt",
            "JOSE",
            "dpop+jwt",
            "logout+jwt",
            "id_token+jwt",
        ] {
            let h = json!({"alg": "RS256", "typ": typ});
            assert_eq!(
                verdict(h, json!({}), false),
                Some(Reason::NotAccessToken),
                "{typ}"
            );
        }
    }

    #[test]
    fn require_at_jwt_accepts_only_rfc_9068_types() {
        for typ in ["at+jwt", "application/at+jwt"] {
            let h = json!({"alg": "RS256", "typ": typ});
            assert_eq!(verdict(h, json!({}), true), None, "{typ}");
        }
        for h in [
            json!({"alg": "RS256"}),
            json!({"alg": "RS256", "typ": "JWT"}),
        ] {
            assert_eq!(verdict(h, json!({}), true), Some(Reason::NotAccessToken));
        }
    }

    #[test]
    fn id_token_claims_are_refused_and_bound_tokens_left_to_the_binding_checks() {
        let h = json!({"alg": "RS256"});
        for c in [json!({"nonce": "n"}), json!({"at_hash": "x"})] {
            assert_eq!(verdict(h.clone(), c, false), Some(Reason::NotAccessToken));
        }
        let dpop = json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}});
        assert_eq!(verdict(h.clone(), dpop, false), None);
        let mtls = json!({"cnf": {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}});
        assert_eq!(verdict(h, mtls, false), None);
    }
}
