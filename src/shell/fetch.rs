//! Key fetching for this VM: take the process-wide lease, call the IdP, record the result in
//! shared data, and decide again the requests that were waiting for it.

use std::time::Duration;

use proxy_wasm::hostcalls;

use crate::core::decision::outcome::Outcome;
use crate::core::keys::lifecycle::{FetchOutcome, FetchRequest, Want};
use crate::core::ratelimit::charge as ratelimit;

use super::apply::{self, Applied};
use super::plugin::{Plugin, Waiter, MAX_WAITERS};
use super::shared_data::HostStore;

/// Spreads retries of many proxies apart; no cryptographic quality needed.
fn jitter_permille() -> u64 {
    super::root::now_ms() % 1000
}

/// Starts a fetch for `provider` if this VM wins the lease. True if one started.
pub fn start(plugin: &Plugin, provider: usize, now: u64, want: Want) -> bool {
    let req = plugin
        .caches
        .borrow_mut()
        .get_mut(provider)
        .and_then(|c| c.try_start(&HostStore, now, plugin.owner, want));
    match req {
        Some(req) => {
            if want == Want::UnknownKid {
                plugin.metrics.refetch_unknown_kid(provider);
            }
            dispatch(plugin, provider, &req, now);
            true
        }
        None => false,
    }
}

fn dispatch(plugin: &Plugin, provider: usize, req: &FetchRequest, now: u64) {
    let headers = vec![
        (":method", "GET"),
        (":path", req.path.as_str()),
        (":authority", req.authority.as_str()),
        ("accept", "application/json"),
        ("user-agent", "okta-jwt-filter"),
    ];
    let timeout = Duration::from_millis(req.timeout_ms);
    match hostcalls::dispatch_http_call(&req.cluster, headers, None, vec![], timeout) {
        Ok(token) => {
            plugin.fetches.borrow_mut().insert(token, provider);
        }
        Err(status) => {
            let outcome = plugin.caches.borrow_mut()[provider].dispatch_failed(
                &HostStore,
                now,
                plugin.owner,
                jitter_permille(),
            );
            report(
                plugin,
                provider,
                &outcome,
                &format!(" (cluster {:?}: {status:?})", req.cluster),
            );
            settle(plugin, provider, now);
        }
    }
}

/// The end of one of this VM's calls.
pub fn finished(
    plugin: &Plugin,
    provider: usize,
    now: u64,
    status: Option<u32>,
    cache_control: Option<&str>,
    body: &[u8],
) {
    let (outcome, next) = plugin.caches.borrow_mut()[provider].finish(
        &HostStore,
        now,
        plugin.owner,
        status,
        cache_control,
        body,
        jitter_permille(),
    );
    report(plugin, provider, &outcome, "");
    plugin.purge_token_cache(provider);
    match next {
        Some(req) => dispatch(plugin, provider, &req, now),
        None => settle(plugin, provider, now),
    }
}

fn report(plugin: &Plugin, provider: usize, outcome: &FetchOutcome, extra: &str) {
    let name = plugin.provider_name(Some(provider));
    match outcome {
        FetchOutcome::Updated {
            keys,
            skipped,
            fresh_s,
        } => {
            plugin.metrics.fetch(provider, true);
            log::info!("jwks fetched provider={name} keys={keys} fresh_for_s={fresh_s}");
            for s in skipped {
                log::warn!("jwks key skipped provider={name}: {s}");
            }
        }
        FetchOutcome::Discovered => log::info!("jwks discovery document read provider={name}"),
        FetchOutcome::Failed { why, retry_in_ms } => {
            plugin.metrics.fetch(provider, false);
            log::warn!(
                "jwks fetch failed provider={name}: {why}{extra}; next attempt in {retry_in_ms} ms"
            );
        }
    }
}

/// Every tick: take in what other VMs fetched, start routine fetches that are due, publish
/// the key-set gauges, and answer requests that waited too long.
pub fn tick(plugin: &Plugin, now: u64) {
    let n = plugin.caches.borrow().len();
    for provider in 0..n {
        let (synced, due) = {
            let mut caches = plugin.caches.borrow_mut();
            let c = &mut caches[provider];
            if !c.is_remote() {
                continue;
            }
            (c.sync(&HostStore), c.routine_due(now))
        };
        if synced.keys_changed {
            plugin.purge_token_cache(provider);
        }
        if synced.epoch_moved | plugin.settle_wanted.borrow_mut().remove(&provider) {
            settle(plugin, provider, now);
        }
        if plugin.refetch_wanted.borrow_mut().remove(&provider)
            && !start(plugin, provider, now, Want::UnknownKid)
        {
            // Another VM refetched first, or too recently: the parked requests get their
            // answer from what is there now.
            settle(plugin, provider, now);
        }
        if due {
            start(plugin, provider, now, Want::Routine);
        }
        let caches = plugin.caches.borrow();
        let c = &caches[provider];
        let keys = c.keys().map_or(0, |k| k.keys.len() as u64);
        let age_s = (c.fetched_at_ms() > 0).then(|| now.saturating_sub(c.fetched_at_ms()) / 1000);
        plugin.metrics.key_set(provider, keys, age_s.unwrap_or(0));
    }
    if plugin.second_done_s.replace(now / 1000) != now / 1000 && plugin.config.has_rate_limits() {
        sync_limit_hasher(plugin);
        publish_buckets(plugin);
    }
    expire(plugin, now);
}

/// Adopts the hash key in shared data: VMs that raced to create it converge on the stored one.
fn sync_limit_hasher(plugin: &Plugin) {
    if let Some(h) = ratelimit::stored_hasher(&HostStore) {
        plugin.limit_hasher.set(h);
    }
}

/// Buckets in use per rate limit, read from shared data (about once a second).
fn publish_buckets(plugin: &Plugin) {
    for (index, rule) in plugin.config.rules.iter().enumerate() {
        for i in 0..rule.rate_limits.len() {
            plugin
                .metrics
                .buckets(index, i, ratelimit::buckets_in_use(&HostStore, index, i));
        }
    }
}

/// Parks a request until `provider`'s next fetch ends. A refetch is only requested here: the
/// SDK delivers an HTTP call's answer to the context that made it, and only the root context
/// outlives every request, so the root starts it on its next tick. Hands the waiter back when
/// there is nothing to wait for or too many requests wait already; the caller then decides
/// again.
pub fn park(plugin: &Plugin, waiter: Waiter, refetch: bool, now: u64) -> Result<(), Waiter> {
    let provider = waiter.provider;
    if plugin.waiters.borrow().len() >= MAX_WAITERS {
        return Err(waiter);
    }
    if refetch {
        let (synced, may_wait) = {
            let mut caches = plugin.caches.borrow_mut();
            let c = &mut caches[provider];
            (c.sync(&HostStore), c.unknown_kid_may_wait(now))
        };
        if synced.epoch_moved {
            // A fetch ended that this VM had not seen: this request is decided again on the
            // fresh set, and those parked earlier are settled on the next tick: resuming other
            // streams from inside this stream's callback would re-enter Envoy's filter chain.
            plugin.settle_wanted.borrow_mut().insert(provider);
            return Err(waiter);
        }
        if !may_wait {
            return Err(waiter);
        }
        plugin.refetch_wanted.borrow_mut().insert(provider);
    }
    plugin.waiters.borrow_mut().push(waiter);
    Ok(())
}

/// Decides again every request parked on `provider`, now that a fetch has ended.
pub fn settle(plugin: &Plugin, provider: usize, now: u64) {
    let parked: Vec<Waiter> = {
        let mut waiters = plugin.waiters.borrow_mut();
        let (mine, rest) = waiters.drain(..).partition(|w| w.provider == provider);
        *waiters = rest;
        mine
    };
    let mut refetch = false;
    for w in parked {
        let d = plugin.decide(now, &w.request);
        if let Outcome::Wait { refetch: r, .. } = d.outcome {
            refetch |= r;
            plugin.waiters.borrow_mut().push(w);
            continue;
        }
        if hostcalls::set_effective_context(w.context_id).is_err() {
            continue;
        }
        if let Applied::Continue = apply::apply(plugin, w.context_id, &d, &w.request, now) {
            let _ = hostcalls::resume_http_request();
        }
    }
    if refetch {
        plugin.refetch_wanted.borrow_mut().insert(provider);
    }
}

fn expire(plugin: &Plugin, now: u64) {
    let expired: Vec<Waiter> = {
        let mut waiters = plugin.waiters.borrow_mut();
        let (late, rest) = waiters.drain(..).partition(|w| w.deadline_ms <= now);
        *waiters = rest;
        late
    };
    for w in expired {
        if hostcalls::set_effective_context(w.context_id).is_err() {
            continue;
        }
        let mut d = plugin.decide(now, &w.request);
        if matches!(d.outcome, Outcome::Wait { .. }) {
            d.detail = "timed out waiting for a key fetch";
        }
        if let Applied::Continue = apply::apply(plugin, w.context_id, &d, &w.request, now) {
            let _ = hostcalls::resume_http_request();
        }
    }
}
