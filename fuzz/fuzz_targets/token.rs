//! Token parsing and the header checks (token/jws.rs, access.rs, claims.rs), then signature
//! verification of whatever parses against the fixture keys, cross-checked with reference
//! implementations.
#![no_main]

use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::config::model::Config;
use okta_jwt_filter::core::crypto::pure::PureVerifier;
use okta_jwt_filter::core::crypto::verifier::SignatureVerifier;
use okta_jwt_filter::core::keys::jwk_set::KeySet;
use okta_jwt_filter::core::keys::source::JwksSource;
use okta_jwt_filter::core::token::{access, claims, jws};
use okta_jwt_filter_fuzz::{fixture, reference_verify, NOW};

fn keys(config: &Config) -> &KeySet {
    match &config.providers[0].jwks.source {
        JwksSource::Inline(set) => set,
        _ => unreachable!("the fixture's keys are inline"),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(token) = jws::parse(raw) else {
        return;
    };
    // What parsing promises: the token is three segments and the signed part is its prefix.
    assert_eq!(token.raw, raw);
    assert!(raw.len() <= jws::MAX_TOKEN_BYTES);
    assert!(raw.starts_with(token.signing_input));
    assert_eq!(raw.as_bytes()[token.signing_input.len()], b'.');
    assert!(token.signing_input.ends_with(token.payload_b64));
    assert!(!token.signature.is_empty());
    assert!(token
        .kid
        .as_ref()
        .is_none_or(|k| !k.is_empty() && k.len() <= 256));
    let _ = access::check(&token, false);
    if access::check(&token, true).is_ok() {
        assert!(
            access::check(&token, false).is_ok(),
            "require_at_jwt only adds refusals"
        );
    }
    let audiences = ["api://default".to_string()];
    let client_ids = ["0oa1".to_string()];
    for (skew, lifetime, ids, optional) in [
        (0, None, None, false),
        (60, Some(7200), Some(&client_ids[..]), false),
        (60, None, None, true),
    ] {
        let expected = claims::Expected {
            audiences: &audiences,
            clock_skew_s: skew,
            max_lifetime_s: lifetime,
            client_ids: ids,
            audience_optional: optional,
            exp_optional: optional,
        };
        for now in [0, NOW, u64::MAX] {
            let _ = claims::check(&expected, &token.claims, now);
        }
    }
    let _ = claims::client_id(&token.claims);
    // Every fixture key that fits the algorithm: the filter's verifier and the reference agree.
    let signed = token.signed();
    for key in keys(&f.config).keys.iter().filter(|k| k.fits(token.alg)) {
        let ours = PureVerifier.verify(&key.key, &signed);
        if let Some(reference) =
            reference_verify(&key.key, token.alg, signed.signing_input, signed.signature)
        {
            assert_eq!(ours, reference, "verifiers disagree on {:?}", token.alg);
        }
    }
});
