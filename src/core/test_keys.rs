//! Byte-exact JOSE test vectors copied from the RFCs (RFC 7515, 7517, 7520, 8037).
//!
//! Only for tests. Each value was checked against the RFC signatures with real
//! cryptography (see the doc comment of each item for its source section).

#![cfg(test)]

/// RFC 7517 (JSON Web Key), Appendix A.1 "Example Public Keys": a JWK Set holding
/// an EC P-256 key (kid "1", use "enc") and an RSA key (kid "2011-04-29", alg RS256).
/// Layout follows the RFC; the RSA `n`, wrapped across lines in the RFC, is joined.
pub const RFC7517_A1_SET: &str = r#"{"keys":
       [
         {"kty":"EC",
          "crv":"P-256",
          "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
          "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM",
          "use":"enc",
          "kid":"1"},

         {"kty":"RSA",
          "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
          "e":"AQAB",
          "alg":"RS256",
          "kid":"2011-04-29"}
       ]
     }"#;

/// A valid 2048-bit RSA modulus (base64url): the `n` of the RFC 7515 Appendix A.2 key.
pub const RSA_2048_N: &str = crate::core::crypto::known_answer::RFC7515_A2_N;

/// RFC 7515 (JWS), Appendix A.2 "Example JWS Using RSASSA-PKCS1-v1_5 SHA-256":
/// the RSA public key (kty, n, e).
pub const RFC7515_A2_JWK: &str = r#"{"kty":"RSA","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"}"#;

/// RFC 7515, Appendix A.2.1: the complete JWS Compact Serialization (RS256).
/// Header `{"alg":"RS256"}`; payload is the A.1 JWT claims (iss "joe", exp 1300819380,
/// "http://example.com/is_root": true), serialized with CRLF line breaks.
pub const RFC7515_A2_TOKEN: &str = crate::core::crypto::known_answer::RFC7515_A2_TOKEN;

/// RFC 7515, Appendix A.3 "Example JWS Using ECDSA P-256 SHA-256": the EC P-256
/// public key (kty, crv, x, y).
pub const RFC7515_A3_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

/// RFC 7515, Appendix A.3.1: the complete JWS Compact Serialization (ES256),
/// same payload as A.2. (ECDSA is randomised; this is the signature the RFC prints.)
pub const RFC7515_A3_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

/// RFC 7520 (JOSE Cookbook), Section 3.4 "RSA Private Key": public part
/// (kty, kid, use, n, e); identical to the Section 3.3 "RSA Public Key". 2048-bit.
pub const RFC7520_RSA_JWK: &str = r#"{"kty":"RSA","kid":"bilbo.baggins@hobbiton.example","use":"sig","n":"n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw","e":"AQAB"}"#;

/// RFC 7520, Section 4.1 "RSA v1.5 Signature" (RS256), compact serialization
/// (Section 4.1.3). Header carries kid "bilbo.baggins@hobbiton.example". NOTE: the payload
/// is plain UTF-8 text (Section 4, Figure 7), not a JSON claims object.
pub const RFC7520_4_1_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg";

/// RFC 7520, Section 4.2 "RSA-PSS Signature" (PS384), compact serialization
/// (Section 4.2.3). Same key and plain-text payload as Section 4.1.
pub const RFC7520_4_2_TOKEN: &str = "eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCdP6O8TTB5dDDItllVo6_1OLPpcbUrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqrYRXe8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1aCN_2_jLAeQTlqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4ifKo8DYM-X72Eaw";

/// RFC 7520, Section 3.2 "EC Private Key": public part (kty, kid, use, crv, x, y)
/// of the P-521 key; identical to Section 3.1 "EC Public Key". For tests that prove
/// P-521 / ES512 is refused.
pub const RFC7520_EC_JWK: &str = r#"{"kty":"EC","kid":"bilbo.baggins@hobbiton.example","use":"sig","crv":"P-521","x":"AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt","y":"AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1"}"#;

/// RFC 7520, Section 4.3 "ECDSA Signature" (ES512, P-521), compact serialization
/// (Section 4.3.3). Plain-text payload as in Section 4.1.
pub const RFC7520_4_3_TOKEN: &str = "eyJhbGciOiJFUzUxMiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.AE_R_YZCChjn4791jSQCrdPZCNYqHXCTZH0-JZGYNlaAjP2kqaluUIIUnC9qvbu9Plon7KRTzoNEuT4Va2cmL1eJAQy3mtPBu_u_sDDyYjnAMDxXPn7XrT0lw-kvAD890jl8e2puQens_IEKBpHABlsbEPX6sFY8OcGDqoRuBomu9xQ2";

/// RFC 7520, Section 4.4 "HMAC-SHA2 Integrity Protection" (HS256), compact
/// serialization (Section 4.4.3); key is the Section 3.5 symmetric key
/// (kid "018c0ae5-4d9b-471b-bfd6-eef314bc7037"). For tests that prove HMAC is refused.
pub const RFC7520_4_4_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9.SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4.s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0";

/// RFC 8037 (CFRG curves in JOSE), Appendix A.2 "Ed25519 Public Key"
/// (kty OKP, crv Ed25519, x).
pub const RFC8037_ED25519_JWK: &str =
    r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

/// RFC 8037, Appendix A.4 "Ed25519 Signing": compact JWS, header `{"alg":"EdDSA"}`.
/// NOTE: the payload is the plain ASCII text "Example of Ed25519 signing", not JSON.
pub const RFC8037_A4_TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

/// A deterministic generator (splitmix64) so failures reproduce; claimed cryptographic only so
/// the `rsa` crate accepts it for key generation in tests.
pub struct TestRng(pub u64);

impl rsa::rand_core::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rsa::rand_core::CryptoRng for TestRng {}

/// A key set of one RSA key per kid, all with the 2048-bit test modulus.
pub fn key_set(kids: &[&str]) -> crate::core::keys::jwk_set::KeySet {
    let keys: Vec<String> = kids
        .iter()
        .map(|kid| format!(r#"{{"kty":"RSA","kid":"{kid}","n":"{RSA_2048_N}","e":"AQAB"}}"#))
        .collect();
    let doc = format!(r#"{{"keys":[{}]}}"#, keys.join(","));
    crate::core::keys::jwk_set::parse(doc.as_bytes())
        .expect("test key set")
        .set
}

/// Keys that are always ready, and never worth waiting for.
pub struct ReadyKeys(pub crate::core::keys::jwk_set::KeySet);

impl crate::core::keys::state::KeySource for ReadyKeys {
    fn keys(&self, _provider: usize) -> crate::core::keys::state::KeyState<'_> {
        crate::core::keys::state::KeyState::Ready(&self.0)
    }
    fn unknown_kid_may_wait(&self, _provider: usize) -> bool {
        false
    }
}
