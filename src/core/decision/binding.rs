//! Sender-constrained tokens, checked on every request (a cached token too, since the binding
//! is to this request): DPoP proofs (RFC 9449) and client certificates (RFC 8705).

use serde_json::{Map, Value};

use crate::core::config::model::{DpopMode, Provider};
use crate::core::config::rule::is_dpop_scheme;
use crate::core::denial::{Denial, Reason};
use crate::core::request::view::Request;
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
    let p = &env.config.providers[id.provider];
    let cnf = id.claims.get("cnf").and_then(Value::as_object);
    let under_dpop = is_dpop_scheme(id.source);
    let bound = cnf.is_some_and(|c| c.contains_key("jkt"));
    if under_dpop || bound || p.dpop.mode != DpopMode::Disabled {
        let checked = d.step("dpop", proof(env, req, id, cnf))?;
        if let Some(c) = checked {
            let recorded = remember(env, id.provider, &c, d);
            d.step("dpop_replay", recorded)?;
        }
        if !p.forward_token && req.header("dpop").is_some() {
            d.ops.push(HeaderOp::Remove("dpop".into()));
        }
    }
    let x5t = cnf.and_then(|c| c.get("x5t#S256"));
    if x5t.is_some() || p.mtls_binding {
        d.step("certificate", certificate(req, x5t))?;
    }
    Ok(())
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
    let p = &env.config.providers[id.provider];
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
        (Some(want), Some(got)) if want == got => Ok(()),
        (_, None) => deny(
            Reason::CertificateMismatch,
            "certificate-bound token and no client certificate",
        ),
        _ => deny(
            Reason::CertificateMismatch,
            "the client certificate is not the one the token is bound to",
        ),
    }
}
