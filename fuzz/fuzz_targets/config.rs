//! Configuration parsing and compiling (config/raw.rs, compile.rs and the rest of config/),
//! then a few decisions under whatever compiled, so a configuration the compiler accepts
//! cannot make the request path panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use okta_jwt_filter::core::config::compile;
use okta_jwt_filter::core::crypto::pure::PureVerifier;
use okta_jwt_filter::core::decision::env::{Env, Incoming};
use okta_jwt_filter::core::decision::pipeline;
use okta_jwt_filter::core::introspection::answers::NoAnswers;
use okta_jwt_filter::core::ratelimit::charge::{ensure_records, KeyHasher};
use okta_jwt_filter::core::request::view::ClientCert;
use okta_jwt_filter::core::token::replay;
use okta_jwt_filter_fuzz::{fixture, good_claims, CloneStore, InlineKeys, SignAlg, NOW};
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let one = compile::parse(data);
    let all = compile::parse_all(data);
    assert_eq!(one.is_ok(), all.is_ok(), "parse and parse_all disagree");
    if let (Err(first), Err(errors)) = (&one, &all) {
        assert_eq!(
            errors.first(),
            Some(first),
            "parse reports parse_all's first error"
        );
    }
    let Ok(config) = one else {
        return;
    };
    let f = fixture();
    let store = CloneStore::default();
    for (i, rule) in config.rules.iter().enumerate() {
        let _ = ensure_records(&store, i, &rule.rate_limits);
    }
    for i in 0..config.providers.len() {
        let _ = replay::ensure_records(&store, i);
    }
    let keys = InlineKeys::new(&config, false);
    let token = f.jws(SignAlg::EdDSA, json!({"kid": "ed1"}), &good_claims());
    let bearer = format!("Bearer {token}");
    type Headers = Vec<(String, String)>;
    let requests: [(&str, &str, Headers); 3] = [
        ("GET", "/", vec![]),
        (
            "POST",
            "/orders/1?access_token=x",
            vec![("authorization".into(), bearer.clone())],
        ),
        (
            "OPTIONS",
            "/users/00u1",
            vec![
                ("origin".into(), "https://a.example".into()),
                ("access-control-request-method".into(), "GET".into()),
                ("cookie".into(), format!("at={token}")),
            ],
        ),
    ];
    for (method, path, headers) in &requests {
        let mut env = Env {
            config: &config,
            cache: None,
            keys: &keys,
            answers: &NoAnswers,
            verifier: &PureVerifier,
            now: NOW,
            now_ms: NOW * 1000,
            store: Some(&store),
            limit_hasher: KeyHasher::new(1, 2),
            trace: true,
        };
        let incoming = Incoming {
            method,
            path,
            headers,
            client_ip: Some("10.0.0.1"),
            client_cert: ClientCert::Absent,
        };
        let d = pipeline::decide(&mut env, &incoming);
        let _ = pipeline::charge_failure(&env, &incoming, d);
    }
});
