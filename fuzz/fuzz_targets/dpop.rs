//! DPoP proof parsing and checking (token/dpop.rs): raw proofs from the fuzzer, and proofs
//! signed with the fixture's client key with fuzzed claims, header and byte changes. A proof
//! only passes when every claim is right and its bytes are the ones signed.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::crypto::alg::{Alg, AlgSet};
use okta_jwt_filter::core::crypto::pure::PureVerifier;
use okta_jwt_filter::core::token::dpop::{self, Expect};
use okta_jwt_filter_fuzz::{b64, fixture, NOW};
use serde_json::{json, Value};

const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
const HTU: &str = "https://api.example/orders/7";

#[derive(Debug, Arbitrary)]
enum Field<'a> {
    Right,
    Missing,
    Text(&'a str),
    Number(i64),
}

#[derive(Debug, Arbitrary)]
struct Built<'a> {
    htm: Field<'a>,
    htu: Field<'a>,
    iat: Field<'a>,
    ath: Field<'a>,
    jti: Field<'a>,
    /// Extra header members (`typ`, `alg`, `jwk` and the rest) replacing the right ones.
    header: Vec<(&'a str, Field<'a>)>,
    /// Byte changes to the compact proof: position, xor.
    flips: Vec<(u16, u8)>,
}

/// `R` then a raw proof, `U` then a URI, else a built proof (so proofs seed the corpus as
/// they are, after one byte).
#[derive(Debug)]
enum Input<'a> {
    Raw(&'a str),
    Built(Built<'a>),
    Uri(&'a str),
}

fn input(data: &[u8]) -> Option<Input<'_>> {
    Some(match data.split_first() {
        Some((b'R', rest)) => Input::Raw(std::str::from_utf8(rest).ok()?),
        Some((b'U', rest)) => Input::Uri(std::str::from_utf8(rest).ok()?),
        _ => Input::Built(Built::arbitrary_take_rest(Unstructured::new(data)).ok()?),
    })
}

fn value(field: &Field<'_>, right: Value) -> Option<Value> {
    match field {
        Field::Right => Some(right),
        Field::Missing => None,
        Field::Text(t) => Some(json!(t)),
        Field::Number(n) => Some(json!(n)),
    }
}

fn expect(jkt: &str) -> Expect<'_> {
    let algorithms: AlgSet = [Alg::EdDSA, Alg::ES256, Alg::RS256].into_iter().collect();
    Expect {
        algorithms,
        method: "POST",
        htu: HTU,
        token: TOKEN,
        jkt,
        now: NOW,
        max_age_s: 300,
        clock_skew_s: 60,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = input(data) else {
        return;
    };
    let f = fixture();
    let expect = expect(&f.dpop_jkt);
    match input {
        Input::Raw(proof) => {
            // Nobody holds the client key's private half but the fixture: a raw proof that
            // passes must be one the fixture signed, which the fuzzer cannot make.
            if let Ok(c) = dpop::check(proof, &PureVerifier, &expect) {
                assert!(!c.jti.is_empty() && c.jti.len() <= dpop::MAX_JTI_BYTES);
                panic!("an unsigned proof passed: {proof:?}");
            }
        }
        Input::Uri(uri) => {
            if let Some(n) = dpop::normalize_uri(uri) {
                assert!(
                    n.starts_with("https://") || n.starts_with("http://"),
                    "{n:?}"
                );
                assert!(!n.contains(['?', '#']), "{n:?}");
                let rest = n.split_once("://").map_or("", |(_, rest)| rest);
                let authority = rest.split('/').next();
                assert!(
                    authority.is_some_and(|a| !a.is_empty() && !a.contains('@')),
                    "{n:?}"
                );
            }
        }
        Input::Built(b) => {
            let mut claims = serde_json::Map::new();
            let mut all_right = true;
            for (name, field, right) in [
                ("htm", &b.htm, json!("POST")),
                ("htu", &b.htu, json!(HTU)),
                ("iat", &b.iat, json!(NOW - 10)),
                ("ath", &b.ath, json!(dpop::ath(TOKEN))),
                ("jti", &b.jti, json!("j-1")),
            ] {
                all_right &= matches!(field, Field::Right);
                if let Some(v) = value(field, right) {
                    claims.insert(name.into(), v);
                }
            }
            let mut header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": f.dpop_jwk});
            for (name, field) in b.header.iter().take(4) {
                all_right = false;
                match value(field, Value::Null) {
                    Some(v) => header[*name] = v,
                    None => {
                        header.as_object_mut().map(|h| h.remove(*name));
                    }
                }
            }
            let input = format!(
                "{}.{}",
                b64(header.to_string().as_bytes()),
                b64(Value::Object(claims).to_string().as_bytes())
            );
            let sig = f.dpop.sk.sign(input.as_bytes(), None);
            let mut proof = format!("{input}.{}", b64(sig.as_ref())).into_bytes();
            let signed = proof.clone();
            for (at, x) in b.flips.iter().take(4) {
                let at = usize::from(*at) % proof.len();
                proof[at] ^= x;
            }
            let Ok(proof) = String::from_utf8(proof) else {
                return;
            };
            let result = dpop::check(&proof, &PureVerifier, &expect);
            if proof.as_bytes() != signed {
                assert!(result.is_err(), "a changed proof passed: {proof:?}");
            } else if all_right {
                let c = result.expect("the right proof passes");
                assert_eq!(c.jti, "j-1");
                assert_eq!(c.expires, NOW - 10 + 300);
            }
        }
    }
});
