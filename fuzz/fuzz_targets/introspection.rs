//! Introspection answers (introspection/answer.rs, RFC 7662) and the opaque-token checks
//! (introspection/call.rs). The input is the answer's body after one status byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::introspection::answer::{self, Answer, Expect, MAX_ANSWER_BYTES};
use okta_jwt_filter::core::introspection::call;
use okta_jwt_filter::core::token::claims::Expected;
use okta_jwt_filter_fuzz::{ISS, NOW};

fuzz_target!(|data: &[u8]| {
    let Some((&status, body)) = data.split_first() else {
        return;
    };
    let status = match status {
        0 => None,
        1..=200 => Some(200),
        s => Some(u32::from(s) * 3),
    };
    match answer::read(status, body.len(), body) {
        Ok(Answer::Active(claims)) => {
            assert_eq!(status, Some(200));
            assert!(body.len() <= MAX_ANSWER_BYTES);
            assert!(!claims.contains_key("active"), "active is not a claim");
            let audiences = ["api://default".to_string()];
            for optional in [false, true] {
                let e = Expect {
                    issuer: ISS,
                    claims: Expected {
                        audiences: &audiences,
                        clock_skew_s: 60,
                        max_lifetime_s: Some(7200),
                        client_ids: None,
                        audience_optional: optional,
                        exp_optional: optional,
                    },
                };
                if answer::check_active(&e, &claims, NOW).is_ok() {
                    let iss = claims.get("iss");
                    assert!(iss.is_none() || iss.and_then(|v| v.as_str()) == Some(ISS));
                    if !optional {
                        assert!(claims.contains_key("exp") && claims.contains_key("aud"));
                    }
                }
            }
        }
        Ok(Answer::Inactive) => assert_eq!(status, Some(200)),
        Err(f) => {
            let _ = f.class();
        }
    }
    if let Ok(token) = std::str::from_utf8(body) {
        if call::check_opaque(token).is_ok() {
            assert!(!token.is_empty() && token.len() <= 8 * 1024);
            assert!(!token.contains([' ', ',', '\n', '\0']));
        }
        let _ = call::is_opaque(token);
    }
});
