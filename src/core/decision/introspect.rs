//! Stages of introspection (RFC 7662): an opaque token is described by its provider's
//! introspection endpoint; with `tokens: "all"`, a verified JWT must also still be active.
//! Answers come from the VM's cache; a miss halts the pipeline until the gate has the answer.

use std::borrow::Cow;

use crate::core::config::model::{Provider, Rule};
use crate::core::config::rule::is_dpop_scheme;
use crate::core::denial::{Denial, Reason};
use crate::core::introspection::answer::{self, Answer};
use crate::core::introspection::call;
use crate::core::introspection::settings::{Secret, Tokens};
use crate::core::request::extract::Source;

use super::env::Env;
use super::halt::Halt;
use super::identity::{Identity, Verification};
use super::outcome::Decision;

/// Whether this token takes the opaque path: it is not shaped as a JWS and some provider of
/// the rule introspects.
pub fn takes_opaque_path(env: &Env<'_>, rule: &Rule, token: &str) -> bool {
    env.config.introspects
        && rule
            .providers
            .iter()
            .filter_map(|&p| env.config.providers.get(p))
            .any(|p| p.introspection.is_some())
        && call::is_opaque(token)
}

/// Stage: an opaque token goes to the first of the rule's providers that introspects and
/// reads its source; the answer's claims are checked as a JWT's are.
pub fn opaque<'c, 'r>(
    env: &Env<'c>,
    rule: &'c Rule,
    token: Cow<'r, str>,
    source: &'c Source,
    d: &mut Decision,
) -> Result<Identity<'c, 'r>, Halt> {
    let cfg = env.config;
    let chosen = rule.providers.iter().find_map(|&i| {
        let prov = cfg.providers.get(i)?;
        (prov.introspection.is_some() && reads(prov, source)).then_some((i, prov))
    });
    let chosen = chosen.ok_or(Denial::new(
        Reason::Malformed,
        "not a JWT, and no provider of this rule introspects tokens from this source",
    ));
    let (provider, p) = d.step("provider", chosen)?;
    d.provider = Some(provider);
    d.step("opaque_token", call::check_opaque(&token))?;
    let claims = match lookup(env, provider, &token, d)? {
        Answer::Active(claims) => claims,
        Answer::Inactive => return Err(inactive(d)),
    };
    let require_exp = p.introspection.as_ref().is_none_or(|s| s.require_exp);
    let checked = answer::check_active(&p.expected_answer(require_exp), &claims, env.now);
    d.step("claims", checked)?;
    Ok(Identity {
        provider,
        source,
        token,
        claims,
        verification: Verification::Introspected,
    })
}

/// Stage, with `tokens: "all"`: a JWT that passed its local checks must still be active.
pub fn still_active(env: &Env<'_>, id: &Identity<'_, '_>, d: &mut Decision) -> Result<(), Halt> {
    let all = env
        .config
        .providers
        .get(id.provider)
        .and_then(|p| p.introspection.as_ref())
        .is_some_and(|s| s.tokens == Tokens::All);
    if !all || id.verification == Verification::Introspected {
        return Ok(());
    }
    match lookup(env, id.provider, &id.token, d)? {
        Answer::Active(_) => {
            d.note("introspection", true, || Some("still active".into()));
            Ok(())
        }
        Answer::Inactive => Err(inactive(d)),
    }
}

/// The cached answer, or a halt that asks the gate for one.
fn lookup(env: &Env<'_>, provider: usize, token: &str, d: &mut Decision) -> Result<Answer, Halt> {
    let key = env.answers.key(token);
    match env.answers.answer(provider, key, env.now_ms) {
        Some(a) => {
            d.introspection_hit = Some(true);
            Ok(a)
        }
        None => {
            d.introspection_hit = Some(false);
            Err(Halt::Introspect {
                provider,
                key,
                token: Secret::new(token.to_owned()),
            })
        }
    }
}

fn inactive(d: &mut Decision) -> Halt {
    let denial = Denial::new(
        Reason::InactiveToken,
        "the introspection endpoint says inactive",
    );
    let _ = d.step::<(), _>("introspection", Err(denial));
    Halt::Deny(denial)
}

/// Whether the provider takes tokens from `source`: its `from`, and the `DPoP` scheme (the
/// binding stage refuses it when the provider's `dpop` is disabled).
pub fn reads(p: &Provider, source: &Source) -> bool {
    p.from.contains(source) || is_dpop_scheme(source)
}
