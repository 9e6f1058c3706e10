//! DPoP proofs (RFC 9449 section 4.3): parsing and every check on one proof, except replay,
//! which needs the shared record (`replay`). Nothing here trusts the proof; every failure is
//! the same `invalid_dpop_proof` to the client, with a precise detail for the log.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::core::crypto::alg::{Alg, AlgSet};
use crate::core::crypto::verifier::{SignatureVerifier, Signed};
use crate::core::denial::{Denial, Reason};
use crate::core::keys::jwk_set::{self, Jwk};
use crate::core::token::thumbprint;

/// A `DPoP` header longer than this is refused before decoding (SPEC: at most 8 KiB).
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// A longer `jti` is refused: the replay record keeps only its hash, but logs stay bounded.
pub const MAX_JTI_BYTES: usize = 256;
/// JWK members that only a private key has (RFC 7518 section 6).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
/// Header parameters that would point at another key or change how the proof is processed.
const FORBIDDEN_HEADERS: [&str; 5] = ["jku", "x5u", "x5c", "crit", "b64"];

/// What the request says a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub algorithms: AlgSet,
    pub method: &'a str,
    /// The request URI without query and fragment: origin, then path.
    pub htu: &'a str,
    /// The access token, whose hash is `ath`.
    pub token: &'a str,
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
    pub now: u64,
    pub max_age_s: u64,
    pub clock_skew_s: u64,
}

/// A proof that passed every check but replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub jti: String,
    /// Until when the proof would be accepted: its `jti` must be remembered that long.
    pub expires: u64,
}

fn fail<T>(detail: &'static str) -> Result<T, Denial> {
    Err(Denial::new(Reason::InvalidDpopProof, detail))
}

struct Parsed<'p> {
    alg: Alg,
    jwk: Jwk,
    jwk_json: Map<String, Value>,
    claims: Map<String, Value>,
    signing_input: &'p str,
    signature: Vec<u8>,
}

/// Every check of RFC 9449 section 4.3 but the `jti` replay check.
pub fn check(
    proof: &str,
    verifier: &dyn SignatureVerifier,
    expect: &Expect<'_>,
) -> Result<Checked, Denial> {
    let p = parse(proof, expect.algorithms)?;
    let checked = check_claims(&p.claims, expect)?;
    if thumbprint::sha256(&p.jwk_json).as_deref() != Some(expect.jkt) {
        return fail("the proof's jwk is not the key the token is bound to (cnf.jkt)");
    }
    let signed = Signed {
        alg: p.alg,
        signing_input: p.signing_input.as_bytes(),
        signature: &p.signature,
        compact: proof,
        exp: checked.expires,
    };
    if !verifier.verify(&p.jwk.key, &signed) {
        return fail("the proof's signature does not verify with its jwk");
    }
    Ok(checked)
}

fn parse(proof: &str, algorithms: AlgSet) -> Result<Parsed<'_>, Denial> {
    if proof.len() > MAX_PROOF_BYTES {
        return fail("proof longer than 8 KiB");
    }
    let mut parts = proof.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return fail("proof is not a compact JWS");
    };
    let header = json_object(h64).ok_or(deny("proof header is not base64url JSON"))?;
    let claims = json_object(p64).ok_or(deny("proof payload is not base64url JSON"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| deny("proof signature is not base64url"))?;
    let (alg, jwk, jwk_json) = check_header(&header, algorithms)?;
    Ok(Parsed {
        alg,
        jwk,
        jwk_json,
        claims,
        signing_input: proof.get(..h64.len() + 1 + p64.len()).unwrap_or_default(),
        signature,
    })
}

fn deny(detail: &'static str) -> Denial {
    Denial::new(Reason::InvalidDpopProof, detail)
}

fn json_object(b64: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `typ`, `alg` and a public `jwk` that fits `alg`.
fn check_header(
    header: &Map<String, Value>,
    algorithms: AlgSet,
) -> Result<(Alg, Jwk, Map<String, Value>), Denial> {
    let typ = header.get("typ").and_then(Value::as_str);
    if !typ.is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
        return fail("proof typ is not dpop+jwt");
    }
    if FORBIDDEN_HEADERS.iter().any(|h| header.contains_key(*h)) {
        return fail("proof header has a forbidden parameter");
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::parse)
        .filter(|a| algorithms.contains(*a))
        .ok_or(deny("proof alg is not one of dpop_algorithms"))?;
    let Some(Value::Object(jwk_json)) = header.get("jwk") else {
        return fail("proof header has no jwk object");
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk_json.contains_key(*m)) {
        return fail("proof jwk holds private key members");
    }
    let set = serde_json::json!({ "keys": [jwk_json] });
    let jwk = jwk_set::parse_value(&set)
        .ok()
        .and_then(|parsed| parsed.set.keys.into_iter().next())
        .ok_or(deny("proof jwk is not a usable public key"))?;
    if !jwk.fits(alg) {
        return fail("proof jwk does not fit its alg");
    }
    Ok((alg, jwk, jwk_json.clone()))
}

/// `htm`, `htu`, `iat`, `ath` and a `jti`.
fn check_claims(claims: &Map<String, Value>, expect: &Expect<'_>) -> Result<Checked, Denial> {
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("htm") != Some(expect.method) {
        return fail("htm is not the request method");
    }
    let htu_matches = text("htu")
        .and_then(normalize_uri)
        .is_some_and(|htu| Some(htu) == normalize_uri(expect.htu));
    if !htu_matches {
        return fail("htu is not the request URI");
    }
    let Some(iat) = claims.get("iat").and_then(Value::as_u64) else {
        return fail("iat is missing or not a non-negative integer");
    };
    if iat > expect.now.saturating_add(expect.clock_skew_s) {
        return fail("iat is in the future");
    }
    if expect.now.saturating_sub(iat) > expect.max_age_s {
        return fail("proof is older than dpop_max_age_s");
    }
    if text("ath") != Some(ath(expect.token).as_str()) {
        return fail("ath is not the hash of the access token");
    }
    let jti = text("jti").filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES);
    let Some(jti) = jti else {
        return fail("jti is missing, empty or too long");
    };
    Ok(Checked {
        jti: jti.to_owned(),
        expires: iat.saturating_add(expect.max_age_s),
    })
}

/// `ath` (RFC 9449 section 4.2): base64url of the SHA-256 of the access token's ASCII.
pub fn ath(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// An http(s) URI without query and fragment, with RFC 3986 section 6.2.2/6.2.3's
/// normalizations of scheme and host case, the default port and an empty path. `None` when it
/// is not an absolute http(s) URI.
pub fn normalize_uri(uri: &str) -> Option<String> {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    let uri = uri.get(..end)?;
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let slash = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(slash);
    let authority = authority.to_ascii_lowercase();
    let authority = authority.strip_suffix(default_port).unwrap_or(&authority);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let path = if path.is_empty() { "/" } else { path };
    Some(format!("{scheme}://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::pure::PureVerifier;
    use crate::core::test_keys::TestRng;
    use rsa::pkcs1v15::SigningKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use rsa::traits::PublicKeyParts;
    use serde_json::json;
    use std::sync::OnceLock;

    const NOW: u64 = 1_700_000_000;
    const URL: &str = "https://api.example.com/orders/7";
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln";

    struct Holder {
        key: rsa::RsaPrivateKey,
        jwk: Value,
        jkt: String,
    }

    fn holder(seed: u64) -> Holder {
        let key = rsa::RsaPrivateKey::new(&mut TestRng(seed), 2048).unwrap();
        let jwk = json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        });
        let jkt = thumbprint::sha256(jwk.as_object().unwrap()).unwrap();
        Holder { key, jwk, jkt }
    }

    fn alice() -> &'static Holder {
        static H: OnceLock<Holder> = OnceLock::new();
        H.get_or_init(|| holder(1))
    }

    fn bob() -> &'static Holder {
        static H: OnceLock<Holder> = OnceLock::new();
        H.get_or_init(|| holder(2))
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// A proof by `h` with the standard header and claims, changed by `header` and `claims`
    /// (a null member is removed).
    fn proof(h: &Holder, header: Value, claims: Value) -> String {
        let mut hd = json!({"typ": "dpop+jwt", "alg": "RS256", "jwk": h.jwk});
        let mut cl = json!({"htm": "GET", "htu": URL, "iat": NOW, "jti": "j1", "ath": ath(TOKEN)});
        for (base, over) in [(&mut hd, header), (&mut cl, claims)] {
            for (k, v) in over.as_object().unwrap() {
                match v {
                    Value::Null => base.as_object_mut().unwrap().remove(k),
                    _ => base.as_object_mut().unwrap().insert(k.clone(), v.clone()),
                };
            }
        }
        let input = format!("{}.{}", b64(&hd), b64(&cl));
        let sig = SigningKey::<rsa::sha2::Sha256>::new(h.key.clone()).sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_vec()))
    }

    fn expect(jkt: &str) -> Expect<'_> {
        Expect {
            algorithms: [Alg::ES256, Alg::RS256].into_iter().collect(),
            method: "GET",
            htu: URL,
            token: TOKEN,
            jkt,
            now: NOW,
            max_age_s: 300,
            clock_skew_s: 60,
        }
    }

    fn verdict(p: &str, e: &Expect<'_>) -> Result<Checked, &'static str> {
        check(p, &PureVerifier, e).map_err(|d| {
            assert_eq!(d.reason, Reason::InvalidDpopProof);
            d.detail
        })
    }

    #[test]
    fn a_valid_proof_passes_and_says_how_long_to_remember_it() {
        let a = alice();
        let got = verdict(&proof(a, json!({}), json!({})), &expect(&a.jkt));
        let want = Checked {
            jti: "j1".into(),
            expires: NOW + 300,
        };
        assert_eq!(got, Ok(want));
        // Within the window on both sides, and `htu` with a query, another case or the
        // default port.
        for claims in [
            json!({"iat": NOW - 300}),
            json!({"iat": NOW + 60}),
            json!({"htu": format!("{URL}?page=2#top")}),
            json!({"htu": "HTTPS://API.Example.com:443/orders/7"}),
        ] {
            let p = proof(a, json!({}), claims.clone());
            assert!(verdict(&p, &expect(&a.jkt)).is_ok(), "{claims}");
        }
    }

    #[test]
    fn every_claim_must_match_the_request() {
        let a = alice();
        let cases = [
            (json!({"htm": "POST"}), "htm is not the request method"),
            (json!({"htm": "get"}), "htm is not the request method"),
            (json!({"htm": null}), "htm is not the request method"),
            (
                json!({"htu": "https://api.example.com/orders/8"}),
                "htu is not the request URI",
            ),
            (
                json!({"htu": "http://api.example.com/orders/7"}),
                "htu is not the request URI",
            ),
            (
                json!({"htu": "https://evil.example/orders/7"}),
                "htu is not the request URI",
            ),
            (
                json!({"htu": "https://api.example.com:8443/orders/7"}),
                "htu is not the request URI",
            ),
            (json!({"htu": "/orders/7"}), "htu is not the request URI"),
            (json!({"htu": null}), "htu is not the request URI"),
            (
                json!({"iat": NOW - 301}),
                "proof is older than dpop_max_age_s",
            ),
            (json!({"iat": NOW + 61}), "iat is in the future"),
            (
                json!({"iat": "1700000000"}),
                "iat is missing or not a non-negative integer",
            ),
            (
                json!({"iat": null}),
                "iat is missing or not a non-negative integer",
            ),
            (
                json!({"ath": ath("another token")}),
                "ath is not the hash of the access token",
            ),
            (
                json!({"ath": null}),
                "ath is not the hash of the access token",
            ),
            (json!({"jti": null}), "jti is missing, empty or too long"),
            (json!({"jti": ""}), "jti is missing, empty or too long"),
            (
                json!({"jti": "x".repeat(257)}),
                "jti is missing, empty or too long",
            ),
        ];
        for (claims, detail) in cases {
            let p = proof(a, json!({}), claims.clone());
            assert_eq!(verdict(&p, &expect(&a.jkt)), Err(detail), "{claims}");
        }
    }

    #[test]
    fn the_header_and_key_are_checked() {
        let a = alice();
        let mut private = a.jwk.clone();
        private["d"] = json!("AQAB");
        let cases = [
            (json!({"typ": "JWT"}), "proof typ is not dpop+jwt"),
            (json!({"typ": null}), "proof typ is not dpop+jwt"),
            (
                json!({"alg": "none"}),
                "proof alg is not one of dpop_algorithms",
            ),
            (
                json!({"alg": "HS256"}),
                "proof alg is not one of dpop_algorithms",
            ),
            (
                json!({"alg": "PS256"}),
                "proof alg is not one of dpop_algorithms",
            ),
            (json!({"alg": "ES256"}), "proof jwk does not fit its alg"),
            (json!({"jwk": null}), "proof header has no jwk object"),
            (
                json!({"jwk": "not an object"}),
                "proof header has no jwk object",
            ),
            (
                json!({"jwk": private}),
                "proof jwk holds private key members",
            ),
            (
                json!({"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}),
                "proof jwk is not a usable public key",
            ),
            (
                json!({"jku": "https://evil.example/keys"}),
                "proof header has a forbidden parameter",
            ),
            (
                json!({"crit": ["x"]}),
                "proof header has a forbidden parameter",
            ),
        ];
        for (header, detail) in cases {
            let p = proof(a, header.clone(), json!({}));
            assert_eq!(verdict(&p, &expect(&a.jkt)), Err(detail), "{header}");
        }
    }

    #[test]
    fn the_key_must_be_the_tokens_and_sign_the_proof() {
        let (a, b) = (alice(), bob());
        // Bob's own valid proof for Alice's token.
        let p = proof(b, json!({}), json!({}));
        assert_eq!(
            verdict(&p, &expect(&a.jkt)),
            Err("the proof's jwk is not the key the token is bound to (cnf.jkt)")
        );
        // Alice's key in the header, Bob's signature.
        let by_bob = proof(b, json!({"jwk": a.jwk}), json!({}));
        assert_eq!(
            verdict(&by_bob, &expect(&a.jkt)),
            Err("the proof's signature does not verify with its jwk")
        );
        // A tampered payload.
        let good = proof(a, json!({}), json!({}));
        let parts: Vec<&str> = good.split('.').collect();
        let other =
            b64(&json!({"htm": "GET", "htu": URL, "iat": NOW, "jti": "j2", "ath": ath(TOKEN)}));
        let tampered = format!("{}.{}.{}", parts[0], other, parts[2]);
        assert_eq!(
            verdict(&tampered, &expect(&a.jkt)),
            Err("the proof's signature does not verify with its jwk")
        );
    }

    #[test]
    fn malformed_proofs_are_refused_without_panicking() {
        let a = alice();
        let e = expect(&a.jkt);
        let long = "a".repeat(MAX_PROOF_BYTES + 1);
        for (p, detail) in [
            ("", "proof is not a compact JWS"),
            ("a.b", "proof is not a compact JWS"),
            ("a.b.c.d", "proof is not a compact JWS"),
            ("!!.e30.sig", "proof header is not base64url JSON"),
            ("e30.!!.c2ln", "proof payload is not base64url JSON"),
            ("e30.e30.!!", "proof signature is not base64url"),
            ("e30.e30.c2ln", "proof typ is not dpop+jwt"),
            (long.as_str(), "proof longer than 8 KiB"),
        ] {
            assert_eq!(verdict(p, &e), Err(detail), "{p:.40}");
        }
    }

    #[test]
    fn uris_normalize_as_rfc_3986_says() {
        let n = |s: &str| normalize_uri(s);
        assert_eq!(
            n("https://A.example/x?q#f").as_deref(),
            Some("https://a.example/x")
        );
        assert_eq!(
            n("HTTP://a.example:80").as_deref(),
            Some("http://a.example/")
        );
        assert_eq!(
            n("https://a.example:80/").as_deref(),
            Some("https://a.example:80/")
        );
        assert_eq!(
            n("https://a.example/A/b").as_deref(),
            Some("https://a.example/A/b")
        );
        for bad in [
            "ftp://a/",
            "a.example/x",
            "https:///x",
            "https://u@a.example/",
            "",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
    }
}
