//! The decision for one request: path, rule, token, provider, key, signature, claims, policy.
//! Pure: the shell supplies the keys it holds, a signature verifier and the clock.

use serde_json::Value;

use super::config::{Auth, Config, Provider, Rule, Source};
use super::extract::{self, Extracted};
use super::jwks::KeySet;
use super::jws::{self, Token};
use super::path;
use super::policy;
use super::reason::Reason;
use super::request::{Headers, Request};
use super::validate;
use super::verify::SignatureVerifier;
use super::{cookie, forward, query};

/// What the shell knows of one provider's keys.
pub enum KeyState<'k> {
    Ready(&'k KeySet),
    /// The first fetch has not finished yet.
    Pending,
    /// No key set was ever obtained.
    Unavailable,
}

pub trait KeySource {
    fn keys(&self, provider: usize) -> KeyState<'_>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    Remove(String),
    Set(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Deny {
        reason: Reason,
        /// For `insufficient_scope`: the scopes to name in `WWW-Authenticate`.
        scope: Option<String>,
    },
    /// The provider's first key fetch is still in flight; decide again once it ends.
    Wait {
        provider: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    /// Header changes to apply when the request is allowed.
    pub ops: Vec<HeaderOp>,
    /// A new `:path` to send upstream (normalized, or with a query token removed).
    pub path: Option<String>,
    pub rule: Option<usize>,
    pub provider: Option<usize>,
    pub sub: Option<String>,
    pub cid: Option<String>,
    /// Precise reason for the log; never token bytes.
    pub detail: &'static str,
}

impl Decision {
    fn new(outcome: Outcome) -> Decision {
        Decision {
            outcome,
            ops: Vec::new(),
            path: None,
            rule: None,
            provider: None,
            sub: None,
            cid: None,
            detail: "",
        }
    }

    fn deny(mut self, reason: Reason, detail: &'static str) -> Decision {
        self.outcome = Outcome::Deny {
            reason,
            scope: None,
        };
        self.detail = detail;
        self
    }
}

pub struct Env<'a> {
    pub config: &'a Config,
    pub keys: &'a dyn KeySource,
    pub verifier: &'a dyn SignatureVerifier,
    /// Seconds since the Unix epoch.
    pub now: u64,
}

pub fn decide(env: &Env<'_>, method: &str, raw_path: &str, headers: &Headers) -> Decision {
    let cfg = env.config;
    let normalized = match path::normalize(raw_path) {
        Ok(p) => p,
        Err(e) => return Decision::new(Outcome::Allow).deny(Reason::BadPath, e.as_str()),
    };
    let req = Request {
        method,
        path: &normalized.path,
        query: normalized.query.as_deref(),
        headers,
    };
    let mut d = Decision::new(Outcome::Allow);
    // Anti-spoofing comes first and applies to every request, whatever the rule.
    for h in &cfg.protected_headers {
        if req.header(h).is_some() {
            d.ops.push(HeaderOp::Remove(h.clone()));
        }
    }
    let mut upstream_query = normalized.query.clone();
    let mut path_changed = normalized.changed;

    if cfg.bypass_cors_preflight && req.is_cors_preflight() {
        d.detail = "cors preflight";
    } else {
        let (rule, params) = cfg
            .rules
            .iter()
            .find_map(|r| r.matcher.matches(&req).map(|p| (r, p)))
            .unwrap_or((&cfg.default_rule, Vec::new()));
        if rule.index != usize::MAX {
            d.rule = Some(rule.index);
        }
        if rule.auth != Auth::None {
            d = authenticate(env, rule, &params, &req, d);
            if d.outcome != Outcome::Allow {
                return d;
            }
            if let Some(source_query) = d.path.take() {
                // `authenticate` leaves the query without the token here.
                upstream_query = (!source_query.is_empty()).then_some(source_query);
                path_changed = true;
            }
        }
    }
    if path_changed {
        d.path = Some(match &upstream_query {
            Some(q) => format!("{}?{}", normalized.path, q),
            None => normalized.path.clone(),
        });
    }
    d
}

/// The sources of the rule's providers, in rule order, without repeats.
fn sources<'c>(cfg: &'c Config, rule: &Rule) -> Vec<&'c Source> {
    let mut out: Vec<&Source> = Vec::new();
    for &p in &rule.providers {
        for s in &cfg.providers[p].from {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

fn authenticate(
    env: &Env<'_>,
    rule: &Rule,
    params: &[(&str, &str)],
    req: &Request<'_>,
    mut d: Decision,
) -> Decision {
    let cfg = env.config;
    let Some(Extracted { token, source }) = extract::extract(sources(cfg, rule), req) else {
        return match rule.auth {
            Auth::Optional => {
                d.detail = "no token on an optional rule";
                d
            }
            _ => d.deny(Reason::MissingToken, "no token in any configured source"),
        };
    };
    let parsed = match jws::parse(&token) {
        Ok(t) => t,
        Err(e) => return d.deny(e.reason, e.detail),
    };
    let iss = parsed.claims.get("iss").and_then(Value::as_str);
    let provider = rule.providers.iter().copied().find(|&p| {
        let prov = &cfg.providers[p];
        Some(prov.issuer.as_str()) == iss && prov.from.contains(source)
    });
    let Some(pi) = provider else {
        return d.deny(
            Reason::WrongIssuer,
            "no provider of this rule has the token's issuer and source",
        );
    };
    d.provider = Some(pi);
    let p = &cfg.providers[pi];
    if !p.algorithms.contains(parsed.alg) {
        return d.deny(
            Reason::UnsupportedAlg,
            "alg is not in the provider's algorithms",
        );
    }
    let set = match env.keys.keys(pi) {
        KeyState::Ready(set) => set,
        KeyState::Pending => {
            d.outcome = Outcome::Wait { provider: pi };
            return d;
        }
        KeyState::Unavailable => {
            return d.deny(
                Reason::JwksUnavailable,
                "no key set was ever fetched for the provider",
            )
        }
    };
    if let Err((reason, detail)) = verify_signature(env.verifier, set, &parsed) {
        return d.deny(reason, detail);
    }
    d.sub = parsed
        .claims
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_owned);
    d.cid = validate::client_id(&parsed.claims).map(str::to_owned);
    if let Err(e) = validate::check(p, &parsed.claims, env.now) {
        return d.deny(e.reason, e.detail);
    }
    if let Err(denied) = policy::check(rule, &parsed.claims, &params.to_vec()) {
        let reason = denied.reason();
        d = d.deny(reason, "");
        match denied {
            policy::Denied::Scope(scope) => {
                d.detail = "required scopes missing";
                d.outcome = Outcome::Deny {
                    reason,
                    scope: Some(scope),
                };
            }
            policy::Denied::Claim(_) => d.detail = "claim requirement not met",
        }
        return d;
    }
    forward_claims(p, &parsed, &mut d.ops);
    if !p.forward_token {
        remove_token(source, req, &mut d);
    }
    d.detail = "verified";
    d
}

fn verify_signature(
    verifier: &dyn SignatureVerifier,
    set: &KeySet,
    token: &Token<'_>,
) -> Result<(), (Reason, &'static str)> {
    let mut tried = false;
    let candidates: Box<dyn Iterator<Item = _>> = match &token.kid {
        Some(kid) => Box::new(set.by_kid(kid)),
        None => Box::new(set.keys.iter()),
    };
    for key in candidates.filter(|k| k.fits(token.alg)) {
        tried = true;
        if verifier.verify(key, token) {
            return Ok(());
        }
    }
    if tried {
        Err((Reason::BadSignature, "signature does not verify"))
    } else if token.kid.is_some() {
        Err((
            Reason::UnknownKid,
            "no key with the token's kid fits its alg",
        ))
    } else {
        Err((Reason::UnknownKid, "no key fits the token's alg"))
    }
}

fn forward_claims(p: &Provider, token: &Token<'_>, ops: &mut Vec<HeaderOp>) {
    for ch in &p.claims_to_headers {
        if let Some(value) = ch
            .claim
            .lookup(&token.claims)
            .and_then(forward::header_value)
        {
            ops.push(HeaderOp::Set(ch.header.clone(), value));
        }
    }
    if let Some(h) = &p.payload_header {
        ops.push(HeaderOp::Set(h.clone(), token.payload_b64.to_owned()));
    }
}

/// Takes the credential out of the request. A query token is handled by leaving the new query
/// in `d.path` for `decide` to assemble.
fn remove_token(source: &Source, req: &Request<'_>, d: &mut Decision) {
    match source {
        Source::Header { name, .. } => d.ops.push(HeaderOp::Remove(name.clone())),
        Source::Query(name) => {
            d.path = Some(query::remove_param(req.query.unwrap_or_default(), name));
        }
        Source::Cookie(name) => {
            let all: Vec<&str> = req.header_values("cookie").collect();
            match cookie::remove(&all.join("; "), name) {
                Some(rest) => d.ops.push(HeaderOp::Set("cookie".into(), rest)),
                None => d.ops.push(HeaderOp::Remove("cookie".into())),
            }
        }
    }
}
