//! What follows a verified token: the rule's scope and claim requirements, its rate limits,
//! and what goes upstream (claim headers, the payload, the token removed).

use serde_json::{Map, Value};

use crate::core::config::model::{Provider, Rule};
use crate::core::policy::forward;
use crate::core::policy::requirements::{self as policy, Denied};
use crate::core::ratelimit::charge::{self as ratelimit, LimitState, Verdict};
use crate::core::ratelimit::limits::LimitKey;
use crate::core::request::cookie;
use crate::core::request::extract::Source;
use crate::core::request::query;
use crate::core::request::view::Request;

use super::env::Env;
use super::halt::Halt;
use super::identity::Identity;
use super::outcome::HeaderOp;

/// Stage: scopes, then claim requirements.
pub fn check_policy(
    rule: &Rule,
    claims: &Map<String, Value>,
    params: &[(&str, &str)],
) -> Result<(), Halt> {
    policy::check(&rule.scopes, &rule.claims, claims, params).map_err(|denied| match denied {
        Denied::Scope(scope) => Halt::Scope(scope),
        Denied::Claim(_) => Halt::deny(denied.reason(), "claim requirement not met"),
    })
}

/// The rule and where it sits in `rules`, for rate-limit bucket names.
#[derive(Clone, Copy)]
pub struct Limits<'c> {
    pub rule: &'c Rule,
    pub index: usize,
}

/// Stage: charges the rule's rate limits. Runs after authentication and authorization
/// succeeded, so an invalid token gets its 401 and spends nothing. Claim keys are empty when
/// no token was verified. Gives the most restrictive state, for `RateLimit-*`.
pub fn charge_limits(
    env: &Env<'_>,
    limits: Limits<'_>,
    claims: Option<&Map<String, Value>>,
    req: &Request<'_>,
) -> Result<Option<LimitState>, Halt> {
    let rule = limits.rule;
    let Some(store) = env.store.filter(|_| !rule.rate_limits.is_empty()) else {
        return Ok(None);
    };
    let keys: Vec<String> = rule
        .rate_limits
        .iter()
        .map(|l| limit_key(&l.key, claims, req))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let meter = ratelimit::Meter {
        store,
        hasher: &env.limit_hasher,
        rule: limits.index,
        now_ms: env.now_ms,
    };
    let verdict = ratelimit::admit(&meter, &rule.rate_limits, &keys);
    match verdict {
        Verdict::Admitted { most_restrictive } => Ok(most_restrictive),
        Verdict::Limited {
            state,
            retry_after_s,
        } => Err(Halt::Limited {
            state,
            retry_after_s,
        }),
    }
}

/// The key a rate limit counts this request under; absent keys count as the empty key.
pub(super) fn limit_key(
    key: &LimitKey,
    claims: Option<&Map<String, Value>>,
    req: &Request<'_>,
) -> String {
    match key {
        LimitKey::Claim(path) => claims
            .and_then(|c| path.lookup(c))
            .and_then(forward::header_value)
            .unwrap_or_default(),
        LimitKey::Header(name) => req.header(name).unwrap_or_default().to_owned(),
        LimitKey::Ip => req.client_ip.map(|a| a.to_string()).unwrap_or_default(),
        LimitKey::Route => String::new(),
    }
}

/// Stage: the chosen claims and the payload as headers.
pub fn forward_claims(p: &Provider, id: &Identity<'_, '_>, ops: &mut Vec<HeaderOp>) {
    for ch in &p.claims_to_headers {
        if let Some(value) = ch.claim.lookup(&id.claims).and_then(forward::header_value) {
            ops.push(HeaderOp::Set(ch.header.clone(), value));
        }
    }
    if let Some(h) = &p.payload_header {
        ops.push(HeaderOp::Set(h.clone(), id.payload_b64().into_owned()));
    }
}

/// Stage: takes the credential out of the request. Gives the new query when the token was a
/// query parameter (the caller puts the path back together).
pub fn remove_token(source: &Source, req: &Request<'_>, ops: &mut Vec<HeaderOp>) -> Option<String> {
    match source {
        Source::Header { name, .. } => ops.push(HeaderOp::Remove(name.clone())),
        Source::Query(name) => {
            return Some(query::remove_param(req.query.unwrap_or_default(), name));
        }
        Source::Cookie(name) => {
            let all: Vec<&str> = req.header_values("cookie").collect();
            match cookie::remove(&all.join("; "), name) {
                Some(rest) => ops.push(HeaderOp::Set("cookie".into(), rest)),
                None => ops.push(HeaderOp::Remove("cookie".into())),
            }
        }
    }
    None
}
