//! Sender-constrained tokens, checked on every request (a cached token too, since the binding
//! is to this request): DPoP proofs (RFC 9449) and client certificates (RFC 8705).

use serde_json::{Map, Value};

use crate::core::config::model::{DpopMode, Provider};
use crate::core::config::rule::is_dpop_scheme;
use crate::core::denial::{Denial, Reason};
use crate::core::request::view::{ClientCert, Request};
use crate::core::token::dpop::{self, Checked, Expect};
use crate::core::token::replay::{self, Recorded};

use super::env::Env;
use super::halt::Halt;
use super::identity::Identity;
use super::outcome::{Decision, HeaderOp};

/// Stages `dpop` and `certificate`, where the provider or the token asks for them.
pub fn check(
    env: &Env<'_>,
    req: &Request<'_>,
    id: &Identity<'_, '_>,
    d: &mut Decision,
) -> Result<(), Halt> {
    let p = provider(env, id)?;
    let cnf = id.claims.get("cnf").and_then(Value::as_object);
    let under_dpop = is_dpop_scheme(id.source);
    let bound = cnf.is_some_and(|c| c.contains_key("jkt"));
    // Before the DPoP proof, whose jti is recorded once it passes: a decision that stops
    // here to have the certificate read is made again from the start.
    let x5t = cnf.and_then(|c| c.get("x5t#S256"));
    if x5t.is_some() || p.mtls_binding {
        if req.client_cert == ClientCert::Unread {
            return Err(Halt::NeedClientCert);
        }
        d.step("certificate", certificate(req, x5t))?;
    }
    if under_dpop || bound || p.dpop.mode != DpopMode::Disabled {
        let checked = d.step("dpop", proof(env, req, id, cnf))?;
        if let Some(c) = checked {
            let recorded = remember(env, id.provider, &c, d);
            d.step("dpop_replay", recorded)?;
        }
    }
    // A proof goes upstream only with its token.
    if !p.forward_token && req.header("dpop").is_some() {
        d.ops.push(HeaderOp::Remove("dpop".into()));
    }
    Ok(())
}

/// The identity's provider; refused (never the case: the index comes from the configuration).
fn provider<'c>(env: &Env<'c>, id: &Identity<'_, '_>) -> Result<&'c Provider, Denial> {
    (env.config.providers.get(id.provider))
        .ok_or(Denial::new(Reason::WrongIssuer, "provider not configured"))
}

fn deny<T>(reason: Reason, detail: &'static str) -> Result<T, Denial> {
    Err(Denial::new(reason, detail))
}

/// The scheme against the token's binding, then the proof: `None` when neither the scheme nor
/// the token asks for one (and the provider allows that).
fn proof(
    env: &Env<'_>,
    req: &Request<'_>,
    id: &Identity<'_, '_>,
    cnf: Option<&Map<String, Value>>,
) -> Result<Option<Checked>, Denial> {
    let p = provider(env, id)?;
    let jkt = cnf.and_then(|c| c.get("jkt"));
    match (is_dpop_scheme(id.source), jkt) {
        (false, None) if p.dpop.mode == DpopMode::Required => deny(
            Reason::DpopUnbound,
            "the provider requires DPoP and the token is not DPoP-bound",
        ),
        (false, None) => Ok(None),
        (false, Some(_)) => deny(
            Reason::DpopBound,
            "DPoP-bound token (cnf.jkt) sent without the DPoP scheme",
        ),
        (true, _) if p.dpop.mode == DpopMode::Disabled => deny(
            Reason::DpopDisabled,
            "DPoP scheme while the provider's dpop is disabled",
        ),
        (true, None) => deny(Reason::DpopUnbound, "unbound token under the DPoP scheme"),
        (true, Some(jkt)) => {
            let Some(jkt) = jkt.as_str() else {
                return deny(Reason::DpopBound, "cnf.jkt is not a string");
            };
            let proof = one_proof(req)?;
            let htu = expected_htu(p, req)?;
            let expect = Expect {
                algorithms: p.dpop.algorithms,
                method: req.method,
                htu: &htu,
                token: &id.token,
                jkt,
                now: env.now,
                max_age_s: p.dpop.max_age_s,
                clock_skew_s: p.clock_skew_s,
            };
            dpop::check(proof, env.verifier, &expect).map(Some)
        }
    }
}

/// Exactly one `DPoP` header (Envoy may join repeated ones with `,`, which no JWS contains).
fn one_proof<'r>(req: &Request<'r>) -> Result<&'r str, Denial> {
    let mut values = req.header_values("dpop");
    match (values.next(), values.next()) {
        (None, _) => deny(Reason::InvalidDpopProof, "no DPoP header"),
        (Some(_), Some(_)) => deny(Reason::InvalidDpopProof, "more than one DPoP header"),
        (Some(v), None) if v.contains(',') => {
            deny(Reason::InvalidDpopProof, "more than one DPoP proof")
        }
        (Some(v), None) if v.trim().is_empty() => {
            deny(Reason::InvalidDpopProof, "empty DPoP header")
        }
        (Some(v), None) => Ok(v.trim()),
    }
}

/// The URI the proof's `htu` must name: `dpop_origin`, else Envoy's `:scheme` and
/// `:authority` (never `x-forwarded-proto`), then the path as received, without its query.
fn expected_htu(p: &Provider, req: &Request<'_>) -> Result<String, Denial> {
    let path = req.raw_path.split(['?', '#']).next().unwrap_or_default();
    if let Some(origin) = &p.dpop.origin {
        return Ok(format!("{origin}{path}"));
    }
    match (req.header(":scheme"), req.header(":authority")) {
        (Some(scheme), Some(authority)) if !authority.is_empty() => {
            Ok(format!("{scheme}://{authority}{path}"))
        }
        _ => deny(
            Reason::InvalidDpopProof,
            "the request has no :scheme or :authority to compare htu with",
        ),
    }
}

/// The `jti`, recorded once per provider across every worker. Refused when seen before; 503
/// when the record has no room (never admitted unrecorded).
fn remember(env: &Env<'_>, provider: usize, c: &Checked, d: &mut Decision) -> Result<(), Denial> {
    let Some(store) = env.store else {
        d.retry_after_s = Some(1);
        return deny(
            Reason::DpopReplayFull,
            "no shared store for the replay record",
        );
    };
    match replay::record(store, provider, &c.jti, c.expires, env.now) {
        Ok(Recorded::Fresh) => Ok(()),
        Ok(Recorded::Replayed) => deny(
            Reason::InvalidDpopProof,
            "jti seen before: a replayed proof",
        ),
        Ok(Recorded::Full { retry_after_s }) => {
            d.retry_after_s = Some(retry_after_s);
            deny(
                Reason::DpopReplayFull,
                "the replay record has no room for the proof",
            )
        }
        Err(_) => {
            d.retry_after_s = Some(1);
            deny(
                Reason::DpopReplayFull,
                "the replay record could not be updated",
            )
        }
    }
}

/// RFC 8705 section 3: `cnf["x5t#S256"]` equals the client certificate's thumbprint.
fn certificate(req: &Request<'_>, x5t: Option<&Value>) -> Result<(), Denial> {
    let Some(x5t) = x5t else {
        return deny(
            Reason::CertificateMismatch,
            "mtls_binding is required and the token is not certificate-bound",
        );
    };
    match (x5t.as_str(), req.client_cert) {
        (Some(want), ClientCert::Thumbprint(got)) if want == got => Ok(()),
        (_, ClientCert::Absent | ClientCert::Unread) => deny(
            Reason::CertificateMismatch,
            "certificate-bound token and no client certificate",
        ),
        _ => deny(
            Reason::CertificateMismatch,
            "the client certificate is not the one the token is bound to",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::compile;
    use crate::core::config::model::Config;
    use crate::core::crypto::public_key::PublicKey;
    use crate::core::crypto::verifier::{SignatureVerifier, Signed};
    use crate::core::decision::env::Incoming;
    use crate::core::decision::outcome::Outcome;
    use crate::core::decision::pipeline::decide;
    use crate::core::ratelimit::charge::KeyHasher;
    use crate::core::store::{MemoryStore, SharedStore};
    use crate::core::test_keys;
    use crate::core::token::{dpop::ath, replay, thumbprint};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://idp.example/oauth2/default";

    /// Accepts exactly the signature bytes "good", for tokens and proofs alike.
    struct Fake;
    impl SignatureVerifier for Fake {
        fn verify(&self, _key: &PublicKey, signed: &Signed<'_>) -> bool {
            signed.signature == b"good"
        }
        fn name(&self) -> &'static str {
            "fake"
        }
    }

    fn keys() -> test_keys::ReadyKeys {
        test_keys::ReadyKeys(test_keys::key_set(&["k1"]))
    }

    fn cfg() -> Config {
        let p = |extra: Value| {
            let mut p = json!({"issuer": ISS, "audiences": ["api://default"],
                               "jwks": {"uri": "https://idp.example/k", "cluster": "idp"}});
            for (k, v) in extra.as_object().unwrap() {
                p[k] = v.clone();
            }
            p
        };
        let rules: Vec<Value> = ["allowed", "required", "disabled", "fwd", "mtls"]
            .iter()
            .map(|n| json!({"match": {"prefix": format!("/{n}")}, "providers": [n]}))
            .collect();
        let c = json!({
            "providers": {
                "allowed": p(json!({"dpop": "allowed"})),
                "required": p(json!({"dpop": "required"})),
                "disabled": p(json!({})),
                "fwd": p(json!({"dpop": "allowed", "forward_token": true})),
                "mtls": p(json!({"mtls_binding": "required"}))
            },
            "rules": rules,
            "realm": "api"
        });
        compile::parse(c.to_string().as_bytes()).unwrap()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn jwk() -> Value {
        serde_json::from_str(test_keys::RFC7515_A2_JWK).unwrap()
    }

    fn jkt() -> String {
        thumbprint::sha256(jwk().as_object().unwrap()).unwrap()
    }

    fn token(cnf: Value) -> String {
        let claims = json!({"iss": ISS, "aud": "api://default", "iat": NOW - 5,
                            "exp": NOW + 3600, "sub": "alice", "cnf": cnf});
        format!(
            "{}.{}.Z29vZA",
            b64(&json!({"alg": "RS256", "kid": "k1"})),
            b64(&claims)
        )
    }

    fn proof(path: &str, token: &str, jti: &str) -> String {
        let header = json!({"typ": "dpop+jwt", "alg": "RS256", "jwk": jwk()});
        let claims = json!({"htm": "GET", "htu": format!("https://api.example{path}"),
                            "iat": NOW, "jti": jti, "ath": ath(token)});
        format!("{}.{}.Z29vZA", b64(&header), b64(&claims))
    }

    /// One worker's decision on the shared `store`.
    fn run(
        store: &dyn SharedStore,
        path: &str,
        headers: &[(&str, &str)],
        cert: Option<&str>,
    ) -> Decision {
        run_with(store, path, headers, ClientCert::from_option(cert))
    }

    fn run_with(
        store: &dyn SharedStore,
        path: &str,
        headers: &[(&str, &str)],
        cert: ClientCert<'_>,
    ) -> Decision {
        let config = cfg();
        let keys = keys();
        let mut env = Env {
            config: &config,
            cache: None,
            keys: &keys,
            answers: &crate::core::introspection::answers::NoAnswers,
            verifier: &Fake,
            now: NOW,
            now_ms: NOW * 1000,
            store: Some(store),
            limit_hasher: KeyHasher::new(1, 2),
            trace: false,
        };
        let mut all: Vec<(String, String)> = vec![
            (":scheme".into(), "https".into()),
            (":authority".into(), "api.example".into()),
        ];
        all.extend(headers.iter().map(|(a, b)| (a.to_string(), b.to_string())));
        let incoming = Incoming {
            method: "GET",
            path,
            headers: &all,
            client_ip: None,
            client_cert: cert,
        };
        decide(&mut env, &incoming)
    }

    fn reason(d: &Decision) -> Option<Reason> {
        match d.outcome {
            Outcome::Deny { reason, .. } => Some(reason),
            _ => None,
        }
    }

    fn dpop_run(store: &dyn SharedStore, path: &str, t: &str, p: &str) -> Decision {
        let auth = format!("DPoP {t}");
        run(store, path, &[("authorization", &auth), ("dpop", p)], None)
    }

    #[test]
    fn scheme_binding_and_mode_decide_together() {
        let store = MemoryStore::default();
        let bound = token(json!({"jkt": jkt()}));
        let unbound = token(json!({}));
        let bearer = |t: &str| format!("Bearer {t}");
        // Bound tokens: only under DPoP with a proof, and never where DPoP is disabled.
        let d = dpop_run(&store, "/allowed", &bound, &proof("/allowed", &bound, "a"));
        assert!(d.is_allowed(), "{d:?}");
        assert!(
            d.ops.contains(&HeaderOp::Remove("dpop".into())),
            "{:?}",
            d.ops
        );
        let d = dpop_run(&store, "/fwd", &bound, &proof("/fwd", &bound, "f"));
        assert!(d.is_allowed() && !d.ops.contains(&HeaderOp::Remove("dpop".into())));
        for path in ["/allowed", "/required", "/disabled"] {
            let d = run(&store, path, &[("authorization", &bearer(&bound))], None);
            assert_eq!(reason(&d), Some(Reason::DpopBound), "{path}");
        }
        let d = dpop_run(
            &store,
            "/disabled",
            &bound,
            &proof("/disabled", &bound, "d"),
        );
        assert_eq!(reason(&d), Some(Reason::DpopDisabled));
        // Unbound tokens: as Bearer unless DPoP is required, never under DPoP.
        let d = run(
            &store,
            "/allowed",
            &[("authorization", &bearer(&unbound))],
            None,
        );
        assert!(d.is_allowed(), "{d:?}");
        // A stray proof beside a bearer token does not go upstream either.
        let stray = [("authorization", bearer(&unbound)), ("dpop", "x".into())];
        let stray: Vec<(&str, &str)> = stray.iter().map(|(a, b)| (*a, b.as_str())).collect();
        let d = run(&store, "/disabled", &stray, None);
        assert!(d.is_allowed() && d.ops.contains(&HeaderOp::Remove("dpop".into())));
        let d = run(
            &store,
            "/required",
            &[("authorization", &bearer(&unbound))],
            None,
        );
        assert_eq!(reason(&d), Some(Reason::DpopUnbound));
        let d = dpop_run(
            &store,
            "/allowed",
            &unbound,
            &proof("/allowed", &unbound, "u"),
        );
        assert_eq!(reason(&d), Some(Reason::DpopUnbound));
        // A bound token without a proof, or with a proof for another path.
        let auth = format!("DPoP {bound}");
        let d = run(&store, "/required", &[("authorization", &auth)], None);
        assert_eq!(reason(&d), Some(Reason::InvalidDpopProof));
        let d = dpop_run(&store, "/required", &bound, &proof("/allowed", &bound, "p"));
        assert_eq!(reason(&d), Some(Reason::InvalidDpopProof));
    }

    #[test]
    fn a_proof_is_admitted_once_across_workers_and_a_refused_one_is_not_recorded() {
        let store = MemoryStore::default();
        replay::ensure_records(&store, 0).unwrap();
        let bound = token(json!({"jkt": jkt()}));
        let p = proof("/allowed", &bound, "once");
        // Eight decisions of the same proof on one shared store, as from several workers.
        let admitted = (0..8)
            .filter(|_| dpop_run(&store, "/allowed", &bound, &p).is_allowed())
            .count();
        assert_eq!(admitted, 1);
        // A proof failing its htu check does not spend its jti.
        let wrong = proof("/elsewhere", &bound, "later");
        let d = dpop_run(&store, "/allowed", &bound, &wrong);
        assert_eq!(reason(&d), Some(Reason::InvalidDpopProof));
        let right = proof("/allowed", &bound, "later");
        assert!(dpop_run(&store, "/allowed", &bound, &right).is_allowed());
    }

    /// A certificate thumbprint, and `Authorization` values bound to it and not bound.
    fn cert_bound_and_unbound() -> (&'static str, String, String) {
        let x5t = "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2";
        let bound = format!("Bearer {}", token(json!({"x5t#S256": x5t})));
        let unbound = format!("Bearer {}", token(json!({})));
        (x5t, bound, unbound)
    }

    #[test]
    fn certificate_bound_tokens_need_the_certificate() {
        let store = MemoryStore::default();
        let (x5t, bound, unbound) = cert_bound_and_unbound();
        let go = |path: &str, auth: &str, cert: Option<&str>| {
            reason(&run(&store, path, &[("authorization", auth)], cert))
        };
        assert_eq!(go("/disabled", &bound, Some(x5t)), None);
        assert_eq!(go("/mtls", &bound, Some(x5t)), None);
        assert_eq!(
            go("/disabled", &bound, None),
            Some(Reason::CertificateMismatch)
        );
        assert_eq!(
            go("/disabled", &bound, Some("other")),
            Some(Reason::CertificateMismatch)
        );
        assert_eq!(go("/disabled", &unbound, Some(x5t)), None);
        assert_eq!(
            go("/mtls", &unbound, Some(x5t)),
            Some(Reason::CertificateMismatch)
        );
    }

    #[test]
    fn the_certificate_is_asked_for_only_for_bound_tokens_and_before_the_proof() {
        let store = MemoryStore::default();
        let (x5t, bound, unbound) = cert_bound_and_unbound();
        let at = |auth: &str, path: &str, cert| {
            run_with(&store, path, &[("authorization", auth)], cert).outcome
        };
        // An unbound token never costs the read, unless the provider requires binding.
        assert_eq!(
            at(&unbound, "/disabled", ClientCert::Unread),
            Outcome::Allow
        );
        assert_eq!(
            at(&unbound, "/mtls", ClientCert::Unread),
            Outcome::NeedClientCert
        );
        assert_eq!(
            at(&bound, "/disabled", ClientCert::Unread),
            Outcome::NeedClientCert
        );
        assert_eq!(
            at(&bound, "/disabled", ClientCert::Thumbprint(x5t)),
            Outcome::Allow
        );
        // Bound to both a DPoP key and a certificate: asking for the certificate records no
        // jti, so the same proof passes when the decision is made again with it.
        let both = token(json!({"x5t#S256": x5t, "jkt": jkt()}));
        let p = proof("/allowed", &both, "once");
        let auth = format!("DPoP {both}");
        let headers = [("authorization", auth.as_str()), ("dpop", p.as_str())];
        let first = run_with(&store, "/allowed", &headers, ClientCert::Unread);
        assert_eq!(first.outcome, Outcome::NeedClientCert);
        let again = run_with(&store, "/allowed", &headers, ClientCert::Thumbprint(x5t));
        assert_eq!(again.outcome, Outcome::Allow);
        let replayed = run_with(&store, "/allowed", &headers, ClientCert::Thumbprint(x5t));
        assert_eq!(reason(&replayed), Some(Reason::InvalidDpopProof));
    }
}
