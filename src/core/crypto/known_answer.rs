//! A known-answer test for the host's signature function. Run once at start-up: the host path
//! is used only if it accepts a valid signature AND refuses a tampered one, so a host that
//! answers "true" to everything can never be trusted with tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::core::crypto::der;
use crate::core::crypto::foreign_wire as foreign_proto;

/// RFC 7515 Appendix A.2: the RSA key's modulus (its exponent is AQAB).
pub const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
/// RFC 7515 Appendix A.2: an RS256 JWS signed with that key.
pub const RFC7515_A2_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

/// Foreign-function argument blobs and the answer each must get.
pub fn cases() -> Vec<(Vec<u8>, bool)> {
    let n = URL_SAFE_NO_PAD.decode(RFC7515_A2_N).unwrap_or_default();
    let key = der::rsa_spki(&n, &[1, 0, 1]);
    let (input, sig64) = RFC7515_A2_TOKEN.rsplit_once('.').unwrap_or_default();
    let sig = URL_SAFE_NO_PAD.decode(sig64).unwrap_or_default();
    let mut tampered = sig.clone();
    if let Some(b) = tampered.last_mut() {
        *b ^= 1;
    }
    vec![
        (
            foreign_proto::encode_args("sha256", &key, &sig, input.as_bytes()),
            true,
        ),
        (
            foreign_proto::encode_args("sha256", &key, &tampered, input.as_bytes()),
            false,
        ),
    ]
}

/// Whether a host function passes every case. `call` returns the raw result bytes, or `None`
/// when the call itself failed.
pub fn passes(mut call: impl FnMut(&[u8]) -> Option<Vec<u8>>) -> bool {
    cases().iter().all(|(args, want)| {
        call(args).and_then(|out| foreign_proto::decode_result(&out)) == Some(*want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::crypto::pure::PureVerifier;
    use crate::core::crypto::verifier::SignatureVerifier;
    use crate::core::keys::jwk_set as jwks;
    use crate::core::token::jws;

    #[test]
    fn probe_vector_is_a_real_signature() {
        let set = format!(r#"{{"keys":[{{"kty":"RSA","n":"{RFC7515_A2_N}","e":"AQAB"}}]}}"#);
        let key = jwks::parse(set.as_bytes()).unwrap().set.keys.remove(0);
        assert!(PureVerifier.verify(&key.key, &jws::parse(RFC7515_A2_TOKEN).unwrap().signed()));
    }

    #[test]
    fn a_host_that_always_says_yes_or_fails_is_refused() {
        assert!(!passes(|_| Some(vec![0x08, 0x01])));
        assert!(!passes(|_| Some(vec![])));
        assert!(!passes(|_| None));
        let mut answers = vec![vec![0x08, 0x00], vec![0x08, 0x01]].into_iter();
        assert!(!passes(|_| answers.next()), "answers swapped");
        let mut answers = vec![vec![0x08, 0x01], vec![0x08, 0x00]].into_iter();
        assert!(passes(|_| answers.next()));
    }
}
