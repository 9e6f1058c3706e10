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
