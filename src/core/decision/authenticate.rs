//! Authentication, stage by stage: find the token, take a verified one from the cache, parse
//! it, choose its provider, check its algorithm and claims, find the keys, check the
//! signature. Claims come before the signature, as in `jwt_authn`: an expired or misdirected
//! token costs no RSA work and never waits for keys (so replayed expired tokens cannot buy
//! signature checks or refetches).

use std::sync::Arc;

use serde_json::Value;

use crate::core::config::model::{Auth, Config, Provider, Rule};
use crate::core::denial::{Denial, Reason};
use crate::core::keys::jwk_set::KeySet;
use crate::core::keys::state::KeyState;
use crate::core::request::extract::{self, Extracted, Found, Source};
use crate::core::request::view::Request;
use crate::core::token::cache::Verified;
use crate::core::token::jws::{self, Token};
use crate::core::token::{access, claims};

use super::binding;
use super::env::Env;
use super::halt::Halt;
use super::identity::{Identity, Verification};
use super::introspect::{self, reads};
use super::outcome::Decision;
use super::signature;

/// A verified identity, or `None` when an optional rule got no token. `d` records what the
/// log needs as it becomes known (provider, and who an unverified token claims to be).
pub fn authenticate<'c, 'r>(
    env: &mut Env<'c>,
    rule: &'c Rule,
    req: &Request<'r>,
    d: &mut Decision,
) -> Result<Option<Identity<'c, 'r>>, Halt> {
    let identity = identify(env, rule, req, d)?;
    if let Some(id) = &identity {
        binding::check(env, req, id, d)?;
        introspect::still_active(env, id, d)?;
    }
    Ok(identity)
}

/// The token, verified now or taken from the cache; its binding is checked by the caller
/// either way, since it depends on this request.
fn identify<'c, 'r>(
    env: &mut Env<'c>,
    rule: &'c Rule,
    req: &Request<'r>,
    d: &mut Decision,
) -> Result<Option<Identity<'c, 'r>>, Halt> {
    let found = find_token(rule, req);
    let Some(Extracted { token, source }) = d.step("token", found)? else {
        d.detail = "no token on an optional rule";
        return Ok(None);
    };
    if introspect::takes_opaque_path(env, rule, &token) {
        return introspect::opaque(env, rule, token, source, d).map(Some);
    }
    if let Some(hit) = from_cache(env, rule, source, token.as_ref()) {
        d.provider = Some(hit.provider);
        d.note("token_cache", true, || {
            Some("verified earlier by this VM".into())
        });
        return Ok(Some(Identity {
            provider: hit.provider,
            source,
            token,
            claims: hit.claims,
            verification: Verification::Cached,
        }));
    }
    let cfg: &'c Config = env.config;
    let parsed = d.step("jws", parse(&token, source))?;
    d.kid = parsed.kid.clone();
    d.alg = Some(parsed.alg.as_str());
    let (provider, p) = d.step("provider", choose_provider(cfg, rule, &parsed, source))?;
    d.provider = Some(provider);
    let alg_ok = match p.algorithms.contains(parsed.alg) {
        true => Ok(()),
        false => Err(Denial::new(
            Reason::UnsupportedAlg,
            "alg is not in the provider's algorithms",
        )),
    };
    d.step("algorithm", alg_ok)?;
    check_claims(p, &parsed, env.now, d)?;
    let key = {
        let set = d.step("keys", key_set(env, provider))?;
        d.step("signature", verify(env, provider, set, &parsed))?
    };
    let claims = Arc::new(parsed.claims);
    if let Some(cache) = env.cache.as_deref_mut() {
        cache.insert(
            &token,
            Verified::new(provider, key, p.clock_skew_s, &claims),
        );
    }
    Ok(Some(Identity {
        provider,
        source,
        token,
        claims,
        verification: Verification::Signature,
    }))
}

/// Stages: registered claims, then access tokens only. On failure, who the token claims to
/// be is still logged, marked as unverified.
fn check_claims(
    p: &Provider,
    parsed: &Token<'_>,
    now: u64,
    d: &mut Decision,
) -> Result<(), Denial> {
    let checked = d
        .step("claims", claims::check(&p.expected(), &parsed.claims, now))
        .and_then(|()| d.step("access_token", access::check(parsed, p.require_at_jwt)));
    if checked.is_err() {
        d.sub = parsed
            .claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_owned);
        d.cid = claims::client_id(&parsed.claims).map(str::to_owned);
        d.identity_verified = false;
    }
    checked
}

/// Stage: the compact JWS; a header value that is several tokens joined is refused as such.
fn parse<'t>(token: &'t str, source: &Source) -> Result<Token<'t>, Denial> {
    jws::parse(token).map_err(|e| match extract::holds_several(source, token) {
        true => Denial::new(Reason::MultipleTokens, "more than one token in the request"),
        false => e,
    })
}

/// Stage: the one token the rule's sources hold.
fn find_token<'c, 'r>(
    rule: &'c Rule,
    req: &Request<'r>,
) -> Result<Option<Extracted<'c, 'r>>, Denial> {
    match extract::extract_one(&rule.sources, req) {
        Found::One(found) => Ok(Some(found)),
        Found::Several => Err(Denial::new(
            Reason::MultipleTokens,
            "more than one token in the request",
        )),
        Found::Nothing if rule.auth == Auth::Optional => Ok(None),
        Found::Nothing => Err(Denial::new(
            Reason::MissingToken,
            "no token in any configured source",
        )),
    }
}

/// Stage: a token this VM verified before, still usable for this rule, source and key set.
fn from_cache(env: &mut Env<'_>, rule: &Rule, source: &Source, token: &str) -> Option<Verified> {
    let cache = env.cache.as_deref_mut()?;
    let hit = cache.get(token, env.now)?;
    let usable = rule.providers.contains(&hit.provider)
        && (env.config.providers.get(hit.provider)).is_some_and(|p| reads(p, source))
        && matches!(env.keys.keys(hit.provider),
                    KeyState::Ready(set) if set.has_fingerprint(hit.key));
    usable.then(|| hit.clone())
}

/// Stage: the rule's provider whose issuer is the token's `iss` and which reads this source.
fn choose_provider<'c>(
    cfg: &'c Config,
    rule: &Rule,
    token: &Token<'_>,
    source: &Source,
) -> Result<(usize, &'c Provider), Denial> {
    let iss = token.claims.get("iss").and_then(Value::as_str);
    rule.providers
        .iter()
        .copied()
        .find_map(|p| {
            let prov = cfg.providers.get(p)?;
            (prov.verifies_jwts && Some(prov.issuer.as_str()) == iss && reads(prov, source))
                .then_some((p, prov))
        })
        .ok_or(Denial::new(
            Reason::WrongIssuer,
            "no provider of this rule has the token's issuer and source",
        ))
}

/// Stage: the provider's key set, or a wait for its first fetch.
fn key_set<'e>(env: &'e Env<'_>, provider: usize) -> Result<&'e KeySet, Halt> {
    match env.keys.keys(provider) {
        KeyState::Ready(set) => Ok(set),
        KeyState::Pending => Err(Halt::Wait {
            provider,
            refetch: false,
            detail: "",
        }),
        KeyState::Unavailable => Err(Halt::deny(
            Reason::JwksUnavailable,
            "no key set was ever fetched for the provider",
        )),
    }
}

/// Stage: the signature, by the key the token names. An unknown kid waits for a refetch when
/// one may run. Returns the verifying key's fingerprint.
fn verify(env: &Env<'_>, provider: usize, set: &KeySet, token: &Token<'_>) -> Result<u64, Halt> {
    signature::verify(env.verifier, set, token).map_err(|denial| {
        let kid_unknown = token.kid.as_deref().is_some_and(|k| !set.has_kid(k));
        if kid_unknown && env.keys.unknown_kid_may_wait(provider) {
            Halt::Wait {
                provider,
                refetch: true,
                detail: "kid not in the key set; waiting for a refetch",
            }
        } else {
            Halt::Deny(denial)
        }
    })
}
