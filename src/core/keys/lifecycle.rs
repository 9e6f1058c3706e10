//! One provider's key-set lifecycle, shared by every VM of an Envoy process.
//!
//! The state lives in one shared-data record per provider (`SharedRecord`): the last good
//! JWKS document, when to fetch next, failures so far, and a lease naming the VM whose fetch
//! is in flight. Every change is a compare-and-swap, so exactly one VM fetches at a time and
//! the others pick up the result on their next tick. Each VM keeps a parsed copy
//! (`ProviderCache`) and re-parses only when the record's version moves.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::core::keys::source::authority_of;

use crate::core::keys::source::JwksConfig;

use crate::core::keys::source::JwksSource;

use crate::core::keys::jwk_set::{self as jwks, KeySet, MAX_JWKS_BYTES};
use crate::core::keys::state::KeyState;
use crate::core::store::{self as shared_store, stable_hash, SharedStore};

/// Freshness bounds for a `Cache-Control: max-age` (SPEC.md).
pub const MIN_FRESH_S: u64 = 30;
pub const MAX_FRESH_S: u64 = 86_400;
/// A lease outlives its fetch's timeout by this much, so a VM that never hears back (its
/// callback lost with a reconfiguration) cannot block fetching for ever.
const LEASE_MARGIN_MS: u64 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Discovery,
    Keys,
}

/// Why a VM wants to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The record says a fetch or retry is due.
    Routine,
    /// A token named a kid the set does not have.
    UnknownKid,
}

/// An HTTP GET the shell must perform on the provider's cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub phase: Phase,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
}

/// The answer to a key fetch, as the host reports it.
#[derive(Debug, Clone, Copy)]
pub struct FetchAnswer<'a> {
    /// `None` when the call failed without an HTTP status (reset, timeout).
    pub status: Option<u32>,
    pub cache_control: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A new key set is in place.
    Updated {
        keys: usize,
        skipped: Vec<String>,
        fresh_s: u64,
    },
    /// The discovery document named the JWKS URI; the keys are fetched next.
    Discovered,
    /// The fetch failed; the previous set (if any) is kept.
    Failed { why: String, retry_in_ms: u64 },
}

/// The shared state of one provider. Serialized as JSON into shared data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRecord {
    /// Fetch completions, successful or not: parked requests wake when it moves.
    pub epoch: u64,
    /// Successful key-set updates: VMs re-parse `body` when it moves.
    pub version: u64,
    /// The last good JWKS document.
    pub body: String,
    pub fetched_at_ms: u64,
    /// The URI read from the discovery document, when the provider uses discovery.
    pub jwks_uri: Option<String>,
    pub next_at_ms: u64,
    pub failures: u32,
    /// Start of the last refetch caused by an unknown kid.
    pub last_refetch_ms: u64,
    /// Until when the last good key set is fresh (its Cache-Control or cache_duration_s).
    #[serde(default)]
    pub fresh_until_ms: u64,
    pub lease_until_ms: u64,
    pub lease_owner: u64,
    pub lease_phase: Option<Phase>,
}

impl SharedRecord {
    fn decode(bytes: Option<&[u8]>) -> SharedRecord {
        bytes
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default()
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn in_flight(&self, now_ms: u64) -> bool {
        self.lease_until_ms > now_ms
    }
}

/// What a sync brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Synced {
    /// A fetch finished since the last sync (parked requests can be decided again).
    pub epoch_moved: bool,
    pub keys_changed: bool,
}

#[derive(Debug)]
pub struct ProviderCache {
    pub store_key: String,
    issuer: String,
    cfg: JwksConfig,
    set: Option<Arc<KeySet>>,
    /// This VM's view of the shared record, as of the last sync.
    seen: SharedRecord,
}

impl ProviderCache {
    /// `name` and `issuer` only name the shared record, so providers with the same keys
    /// under different names never share one.
    pub fn new(name: &str, issuer: &str, jwks: &JwksConfig) -> ProviderCache {
        let (set, source) = match &jwks.source {
            JwksSource::Inline(keys) => (Some(Arc::new(keys.clone())), "inline".to_owned()),
            JwksSource::Remote { uri, cluster } => (None, format!("{cluster} {uri}")),
            JwksSource::Discovery { cluster } => (None, format!("{cluster} discovery")),
        };
        let id = format!("{name}\n{issuer}\n{source}");
        ProviderCache {
            store_key: format!("okta_jwt.jwks.{:016x}", stable_hash(id.as_bytes())),
            issuer: issuer.to_owned(),
            cfg: jwks.clone(),
            set,
            seen: SharedRecord::default(),
        }
    }

    pub fn is_remote(&self) -> bool {
        !matches!(self.cfg.source, JwksSource::Inline(_))
    }

    pub fn key_state(&self) -> KeyState<'_> {
        match (&self.set, self.seen.epoch) {
            (Some(set), _) => KeyState::Ready(set),
            (None, 0) => KeyState::Pending,
            (None, _) => KeyState::Unavailable,
        }
    }

    pub fn keys(&self) -> Option<&Arc<KeySet>> {
        self.set.as_ref()
    }

    pub fn epoch(&self) -> u64 {
        self.seen.epoch
    }

    pub fn fetched_at_ms(&self) -> u64 {
        self.seen.fetched_at_ms
    }

    pub fn fresh_until_ms(&self) -> u64 {
        self.seen.fresh_until_ms
    }

    pub fn timeout_ms(&self) -> u64 {
        self.cfg.timeout_ms
    }

    /// Creates the shared record if no VM has yet. Called at configuration, which Envoy runs
    /// on the main thread before any worker starts.
    pub fn ensure_record(&self, store: &dyn SharedStore) {
        if self.is_remote() {
            let _ = shared_store::ensure(store, &self.store_key, &SharedRecord::default().encode());
        }
    }

    /// Reads the shared record and takes in what changed.
    pub fn sync(&mut self, store: &dyn SharedStore) -> Synced {
        if !self.is_remote() {
            return Synced::default();
        }
        let rec = SharedRecord::decode(store.get(&self.store_key).0.as_deref());
        self.adopt(rec)
    }

    fn adopt(&mut self, rec: SharedRecord) -> Synced {
        let mut out = Synced {
            epoch_moved: rec.epoch != self.seen.epoch,
            keys_changed: false,
        };
        if rec.version != self.seen.version || (self.set.is_none() && rec.version > 0) {
            // The record only ever holds a body that parsed when it was stored.
            if let Ok(parsed) = jwks::parse(rec.body.as_bytes()) {
                self.set = Some(Arc::new(parsed.set));
                out.keys_changed = true;
            }
        }
        self.seen = rec;
        out
    }

    /// For a token whose kid is not in the set: wait (a fetch is in flight, or a refetch may
    /// start now) or reject at once (a refetch happened too recently).
    pub fn unknown_kid_may_wait(&self, now_ms: u64) -> bool {
        self.seen.in_flight(now_ms) || self.refetch_allowed(&self.seen, now_ms)
    }

    fn refetch_allowed(&self, rec: &SharedRecord, now_ms: u64) -> bool {
        rec.last_refetch_ms == 0
            || now_ms
                >= rec
                    .last_refetch_ms
                    .saturating_add(self.cfg.min_refetch_interval_s * 1000)
    }

    fn cluster(&self) -> Option<&str> {
        match &self.cfg.source {
            JwksSource::Remote { cluster, .. } | JwksSource::Discovery { cluster } => Some(cluster),
            JwksSource::Inline(_) => None,
        }
    }

    fn request_for(&self, rec: &SharedRecord) -> Option<FetchRequest> {
        let uri = match (&self.cfg.source, &rec.jwks_uri) {
            (JwksSource::Remote { uri, .. }, _) => Some(uri.clone()),
            (JwksSource::Discovery { .. }, Some(uri)) => Some(uri.clone()),
            _ => None,
        };
        let (phase, url) = match uri {
            Some(u) => (Phase::Keys, u),
            None => (
                Phase::Discovery,
                format!("{}/.well-known/openid-configuration", self.issuer),
            ),
        };
        let (authority, path) = authority_of(&url)?;
        Some(FetchRequest {
            phase,
            cluster: self.cluster()?.to_owned(),
            authority: authority.to_owned(),
            path: path.to_owned(),
            timeout_ms: self.cfg.timeout_ms,
        })
    }

    /// Whether this VM's view says a routine fetch is due (cheap pre-check before a CAS).
    pub fn routine_due(&self, now_ms: u64) -> bool {
        self.is_remote() && !self.seen.in_flight(now_ms) && now_ms >= self.seen.next_at_ms
    }

    /// Takes the lease and returns the fetch to perform, if one should start now. At most one
    /// VM in the process gets `Some` for the same record state.
    pub fn try_start(
        &mut self,
        store: &dyn SharedStore,
        now_ms: u64,
        owner: u64,
        want: Want,
    ) -> Option<FetchRequest> {
        if !self.is_remote() {
            return None;
        }
        let result = shared_store::update(store, &self.store_key, |cur| {
            let mut rec = SharedRecord::decode(cur);
            if rec.in_flight(now_ms) {
                return (None, None);
            }
            let go = match want {
                Want::Routine => now_ms >= rec.next_at_ms,
                Want::UnknownKid => self.refetch_allowed(&rec, now_ms),
            };
            let Some(req) = go.then(|| self.request_for(&rec)).flatten() else {
                return (None, None);
            };
            if want == Want::UnknownKid {
                rec.last_refetch_ms = now_ms.max(1);
            }
            rec.lease_until_ms = now_ms + req.timeout_ms + LEASE_MARGIN_MS;
            rec.lease_owner = owner;
            rec.lease_phase = Some(req.phase);
            (Some(rec.encode()), Some((req, rec)))
        });
        let (req, rec) = result.ok().flatten()?;
        self.adopt(rec);
        Some(req)
    }

    /// Gives up the lease if `owner` holds it: for a root context that goes away (a
    /// reconfiguration) with its fetch in flight, whose answer Envoy never delivers. Without
    /// this every VM would wait out the lease, and requests waiting for keys would get 503.
    pub fn release_lease(&self, store: &dyn SharedStore, owner: u64) {
        if !self.is_remote() {
            return;
        }
        let _ = shared_store::update(store, &self.store_key, |cur| {
            let mut rec = SharedRecord::decode(cur);
            if rec.lease_owner != owner || rec.lease_until_ms == 0 {
                return (None, ());
            }
            rec.lease_until_ms = 0;
            rec.lease_phase = None;
            (Some(rec.encode()), ())
        });
    }

    /// Records the end of this VM's fetch. Returns the outcome and, after discovery, the keys
    /// fetch to perform next (the lease is kept for it).
    pub fn finish(
        &mut self,
        store: &dyn SharedStore,
        now_ms: u64,
        owner: u64,
        answer: FetchAnswer<'_>,
        jitter_permille: u64,
    ) -> (FetchOutcome, Option<FetchRequest>) {
        let result = shared_store::update(store, &self.store_key, |cur| {
            let mut rec = SharedRecord::decode(cur);
            let phase = if rec.lease_owner == owner {
                rec.lease_phase
            } else {
                None
            };
            let outcome =
                match self.apply_response(&mut rec, now_ms, phase.unwrap_or(Phase::Keys), answer) {
                    Ok(outcome) => outcome,
                    Err(why) => self.record_failure(&mut rec, now_ms, why, jitter_permille),
                };
            let next = if outcome == FetchOutcome::Discovered {
                self.request_for(&rec).inspect(|req| {
                    rec.lease_until_ms = now_ms + req.timeout_ms + LEASE_MARGIN_MS;
                    rec.lease_owner = owner;
                    rec.lease_phase = Some(req.phase);
                })
            } else {
                if rec.lease_owner == owner {
                    rec.lease_until_ms = 0;
                    rec.lease_phase = None;
                }
                None
            };
            (Some(rec.encode()), (outcome, next, rec))
        });
        match result {
            Ok((outcome, next, rec)) => {
                self.adopt(rec);
                (outcome, next)
            }
            Err(e) => (
                FetchOutcome::Failed {
                    why: format!("could not record the result in shared data: {e:?}"),
                    retry_in_ms: 1000,
                },
                None,
            ),
        }
    }

    /// The HTTP call could not even be dispatched.
    pub fn dispatch_failed(
        &mut self,
        store: &dyn SharedStore,
        now_ms: u64,
        owner: u64,
        jitter_permille: u64,
    ) -> FetchOutcome {
        let none = FetchAnswer {
            status: None,
            cache_control: None,
            body: b"",
        };
        self.finish(store, now_ms, owner, none, jitter_permille).0
    }

    /// Takes a successful answer into `rec`: the discovered URI, or the new key set. `Err`
    /// says why the fetch failed, and leaves `rec` as it was.
    fn apply_response(
        &self,
        rec: &mut SharedRecord,
        now_ms: u64,
        phase: Phase,
        answer: FetchAnswer<'_>,
    ) -> Result<FetchOutcome, String> {
        let body = answer.body;
        match answer.status {
            None => return Err("no response (timeout, reset or no route to the cluster)".into()),
            Some(200) => {}
            Some(s) => return Err(format!("HTTP status {s}")),
        }
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("body over {MAX_JWKS_BYTES} bytes"));
        }
        match phase {
            Phase::Discovery => {
                rec.jwks_uri = Some(self.discovered_uri(body)?);
                Ok(FetchOutcome::Discovered)
            }
            Phase::Keys => {
                let parsed = jwks::parse(body).map_err(|e| e.to_string())?;
                let fresh_s = freshness_s(answer.cache_control, self.cfg.cache_duration_s);
                rec.epoch += 1;
                rec.version += 1;
                rec.body = String::from_utf8_lossy(body).into_owned();
                rec.fetched_at_ms = now_ms;
                rec.failures = 0;
                rec.next_at_ms = now_ms.saturating_add(fresh_s * 1000);
                rec.fresh_until_ms = rec.next_at_ms;
                Ok(FetchOutcome::Updated {
                    keys: parsed.set.keys.len(),
                    skipped: parsed.skipped,
                    fresh_s,
                })
            }
        }
    }

    /// A failed fetch: the epoch moves (so waiters get their answer) and the next attempt
    /// backs off.
    fn record_failure(
        &self,
        rec: &mut SharedRecord,
        now_ms: u64,
        why: String,
        jitter_permille: u64,
    ) -> FetchOutcome {
        rec.epoch += 1;
        rec.failures = rec.failures.saturating_add(1);
        let retry_in_ms = self.backoff_ms(rec.failures, jitter_permille);
        rec.next_at_ms = now_ms.saturating_add(retry_in_ms);
        FetchOutcome::Failed { why, retry_in_ms }
    }

    fn discovered_uri(&self, body: &[u8]) -> Result<String, String> {
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let doc: Discovery = serde_json::from_slice(body)
            .map_err(|e| format!("discovery document without a jwks_uri string: {e}"))?;
        let scheme = |u: &str| u.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        let same_origin = scheme(&doc.jwks_uri) == scheme(&self.issuer)
            && authority_of(&doc.jwks_uri)
                .zip(authority_of(&self.issuer))
                .is_some_and(|((a, _), (b, _))| a.eq_ignore_ascii_case(b));
        if !same_origin {
            // The cluster only reaches the issuer's host; following another origin would trust
            // a key source no operator configured.
            return Err("discovered jwks_uri is not on the issuer's scheme and host".into());
        }
        Ok(doc.jwks_uri)
    }

    /// 1 s, 2 s, 4 s ... capped at `cache_duration_s`, plus up to 25 % jitter so that many
    /// proxies do not retry in lock-step.
    fn backoff_ms(&self, failures: u32, jitter_permille: u64) -> u64 {
        let exp = failures.saturating_sub(1).min(20);
        let base = (1000u64 << exp).min(self.cfg.cache_duration_s * 1000);
        base + base * jitter_permille.min(1000) / 4000
    }

    /// Whole seconds until the next attempt, for `Retry-After`.
    pub fn retry_after_s(&self, now_ms: u64) -> u64 {
        self.seen
            .next_at_ms
            .saturating_sub(now_ms)
            .div_ceil(1000)
            .max(1)
    }
}

/// How long a fetched set stays fresh: `max-age` when given (`no-cache`/`no-store` mean the
/// floor), else the configured duration; always within [30 s, 24 h].
pub fn freshness_s(cache_control: Option<&str>, default_s: u64) -> u64 {
    let mut fresh = default_s;
    if let Some(cc) = cache_control {
        for directive in cc.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-cache" || lower == "no-store" {
                fresh = MIN_FRESH_S;
                break;
            }
            if let Some(v) = lower.strip_prefix("max-age=") {
                if let Ok(secs) = v.trim_matches('"').parse::<u64>() {
                    fresh = secs;
                }
            }
        }
    }
    fresh.clamp(MIN_FRESH_S, MAX_FRESH_S)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::compile as config;
    use crate::core::config::model::Provider;
    use crate::core::store::MemoryStore;
    use crate::core::test_keys;
    use serde_json::json;

    fn provider(jwks: serde_json::Value) -> Provider {
        let c = json!({"providers": {"okta": {
            "issuer": "https://idp.example/oauth2/default",
            "audiences": ["a"], "jwks": jwks}}});
        config::parse(c.to_string().as_bytes())
            .unwrap()
            .providers
            .remove(0)
    }

    fn remote() -> Provider {
        provider(
            json!({"uri": "https://idp.example/oauth2/default/v1/keys", "cluster": "idp", "min_refetch_interval_s": 30}),
        )
    }

    fn answer<'a>(status: Option<u32>, cc: Option<&'a str>, body: &'a [u8]) -> FetchAnswer<'a> {
        FetchAnswer {
            status,
            cache_control: cc,
            body,
        }
    }

    fn keys_body() -> String {
        format!(r#"{{"keys":[{}]}}"#, test_keys::RFC7515_A2_JWK)
    }

    /// `n` VMs of one process over one store, configured main-thread-first as Envoy does.
    fn vms(p: &Provider, n: usize) -> (MemoryStore, Vec<ProviderCache>) {
        let store = MemoryStore::default();
        let caches: Vec<_> = (0..n)
            .map(|_| ProviderCache::new(&p.name, &p.issuer, &p.jwks))
            .collect();
        for c in &caches {
            c.ensure_record(&store);
        }
        (store, caches)
    }

    fn ok(
        c: &mut ProviderCache,
        s: &MemoryStore,
        now: u64,
        owner: u64,
        cc: Option<&str>,
    ) -> FetchOutcome {
        c.finish(
            s,
            now,
            owner,
            answer(Some(200), cc, keys_body().as_bytes()),
            0,
        )
        .0
    }

    #[test]
    fn one_fetch_per_process_and_every_vm_gets_the_keys() {
        let p = remote();
        let (s, mut vms) = vms(&p, 5);
        let started: Vec<_> = vms
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| {
                c.try_start(&s, 100, i as u64 + 1, Want::Routine)
                    .map(|r| (i, r))
            })
            .collect();
        assert_eq!(started.len(), 1, "exactly one VM fetches");
        let (winner, req) = &started[0];
        assert_eq!(req.phase, Phase::Keys);
        assert_eq!(req.authority, "idp.example");
        assert_eq!(req.path, "/oauth2/default/v1/keys");
        for c in vms.iter_mut() {
            c.sync(&s);
            assert!(matches!(c.key_state(), KeyState::Pending));
        }
        let out = ok(
            &mut vms[*winner],
            &s,
            150,
            *winner as u64 + 1,
            Some("max-age=120"),
        );
        assert_eq!(
            out,
            FetchOutcome::Updated {
                keys: 1,
                skipped: vec![],
                fresh_s: 120
            }
        );
        for (i, c) in vms.iter_mut().enumerate() {
            let synced = c.sync(&s);
            assert_eq!(
                synced.epoch_moved,
                i != *winner,
                "the winner adopted it already"
            );
            assert!(matches!(c.key_state(), KeyState::Ready(set) if set.keys.len() == 1));
            assert!(!c.routine_due(150 + 119_999));
            assert!(c.routine_due(150 + 120_000));
        }
    }

    #[test]
    fn failures_keep_the_last_good_set_and_back_off() {
        let (s, mut v) = vms(&remote(), 2);
        v[0].try_start(&s, 0, 1, Want::Routine).unwrap();
        ok(&mut v[0], &s, 0, 1, None);
        let mut now = 300_000;
        let mut delays = Vec::new();
        for status in [Some(500), None, Some(200), Some(200)] {
            v[1].sync(&s);
            v[1].try_start(&s, now, 2, Want::Routine).expect("due");
            let body: &[u8] = if status == Some(200) {
                b"{\"keys\": ["
            } else {
                b""
            };
            match v[1].finish(&s, now, 2, answer(status, None, body), 0).0 {
                FetchOutcome::Failed { retry_in_ms, .. } => delays.push(retry_in_ms),
                other => panic!("{other:?}"),
            }
            v[0].sync(&s);
            assert!(
                matches!(v[0].key_state(), KeyState::Ready(_)),
                "stale keys stay"
            );
            assert_eq!(
                v[0].try_start(&s, now + 1, 1, Want::Routine),
                None,
                "no retry before the back-off"
            );
            now += delays.last().unwrap();
        }
        assert_eq!(delays, vec![1000, 2000, 4000, 8000]);
        v[0].sync(&s);
        v[0].try_start(&s, now, 1, Want::Routine).unwrap();
        let out = v[0]
            .finish(&s, now, 1, answer(Some(200), None, br#"{"keys":[]}"#), 0)
            .0;
        assert!(
            matches!(out, FetchOutcome::Failed { .. }),
            "an empty set is a failure"
        );
    }

    #[test]
    fn first_failure_makes_keys_unavailable_until_recovery() {
        let (s, mut v) = vms(&remote(), 2);
        v[0].try_start(&s, 0, 1, Want::Routine).unwrap();
        let out = v[0].finish(&s, 0, 1, answer(Some(503), None, b""), 1000).0;
        assert_eq!(
            out,
            FetchOutcome::Failed {
                why: "HTTP status 503".into(),
                retry_in_ms: 1250
            }
        );
        v[1].sync(&s);
        for c in &v {
            assert!(matches!(c.key_state(), KeyState::Unavailable));
            assert_eq!(c.retry_after_s(0), 2);
        }
        assert_eq!(v[1].try_start(&s, 1000, 2, Want::Routine), None);
        v[1].try_start(&s, 1250, 2, Want::Routine).unwrap();
        ok(&mut v[1], &s, 1250, 2, None);
        v[0].sync(&s);
        assert!(matches!(v[0].key_state(), KeyState::Ready(_)));
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited_process_wide() {
        let (s, mut v) = vms(&remote(), 3);
        v[0].try_start(&s, 0, 1, Want::Routine).unwrap();
        ok(&mut v[0], &s, 0, 1, None);
        for c in v.iter_mut() {
            c.sync(&s);
        }
        // A storm of unknown kids on every VM: one refetch.
        let mut started = 0;
        for t in 0..200u64 {
            let i = (t % 3) as usize;
            if v[i]
                .try_start(&s, 1000 + t, i as u64 + 1, Want::UnknownKid)
                .is_some()
            {
                started += 1;
            }
        }
        assert_eq!(started, 1);
        // While it is in flight, unknown kids wait for it; the fetcher finishes.
        v[1].sync(&s);
        assert!(v[1].unknown_kid_may_wait(1500));
        let fetcher = (0..3)
            .find(|i| {
                s.get(&v[0].store_key)
                    .0
                    .map(|b| SharedRecord::decode(Some(&b)).lease_owner)
                    == Some(*i as u64 + 1)
            })
            .unwrap();
        ok(&mut v[fetcher], &s, 1600, fetcher as u64 + 1, None);
        v[1].sync(&s);
        assert!(
            !v[1].unknown_kid_may_wait(1700),
            "no second refetch within 30 s"
        );
        assert_eq!(v[1].try_start(&s, 30_999, 2, Want::UnknownKid), None);
        assert!(v[1].try_start(&s, 31_000, 2, Want::UnknownKid).is_some());
    }

    #[test]
    fn an_expired_lease_lets_another_vm_take_over() {
        let (s, mut v) = vms(&remote(), 2);
        v[0].try_start(&s, 0, 1, Want::Routine).unwrap();
        assert_eq!(
            v[1].try_start(&s, 5_000, 2, Want::Routine),
            None,
            "lease held"
        );
        assert!(
            v[1].try_start(&s, 7_001, 2, Want::Routine).is_some(),
            "timeout + margin passed"
        );
        // The first VM's late answer still counts, and does not clear the new owner's lease.
        ok(&mut v[0], &s, 7_100, 1, None);
        let rec = SharedRecord::decode(s.get(&v[0].store_key).0.as_deref());
        assert_eq!(rec.lease_owner, 2);
        assert!(rec.lease_until_ms > 7_100);
        assert_eq!(rec.version, 1);
    }

    /// A reconfigured VM's lost fetch does not hold the others up for timeout + margin.
    #[test]
    fn a_released_lease_lets_another_vm_fetch_at_once() {
        let (s, mut v) = vms(&remote(), 2);
        v[0].try_start(&s, 0, 1, Want::Routine).unwrap();
        assert_eq!(v[1].try_start(&s, 10, 2, Want::Routine), None, "lease held");
        v[1].release_lease(&s, 2);
        assert_eq!(
            v[1].try_start(&s, 10, 2, Want::Routine),
            None,
            "only the owner releases"
        );
        let before = s.get(&v[0].store_key);
        v[0].release_lease(&s, 1);
        let rec = SharedRecord::decode(s.get(&v[0].store_key).0.as_deref());
        assert_eq!((rec.lease_until_ms, rec.lease_phase), (0, None));
        assert_ne!(s.get(&v[0].store_key).1, before.1);
        let req = v[1]
            .try_start(&s, 20, 2, Want::Routine)
            .expect("taken over at once");
        assert_eq!(req.phase, Phase::Keys);
        ok(&mut v[1], &s, 30, 2, None);
        v[0].sync(&s);
        assert!(matches!(v[0].key_state(), KeyState::Ready(_)));
        // Nothing in flight: releasing writes nothing.
        let before = s.get(&v[0].store_key);
        v[1].release_lease(&s, 2);
        assert_eq!(s.get(&v[0].store_key), before);
    }

    #[test]
    fn backoff_is_capped_at_cache_duration() {
        let p = provider(
            json!({"uri": "https://idp.example/k", "cluster": "idp", "cache_duration_s": 30}),
        );
        let (s, mut v) = vms(&p, 1);
        let mut now = 0;
        let mut last = 0;
        for _ in 0..12 {
            v[0].try_start(&s, now, 1, Want::Routine).unwrap();
            if let FetchOutcome::Failed { retry_in_ms, .. } =
                v[0].finish(&s, now, 1, answer(Some(500), None, b""), 0).0
            {
                last = retry_in_ms;
                now += retry_in_ms;
            }
        }
        assert_eq!(last, 30_000);
    }

    #[test]
    fn oversized_body_fails() {
        let (s, mut v) = vms(&remote(), 1);
        v[0].try_start(&s, 0, 1, Want::Routine).unwrap();
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert!(matches!(
            v[0].finish(&s, 0, 1, answer(Some(200), None, &big), 0).0,
            FetchOutcome::Failed { .. }
        ));
    }

    #[test]
    fn discovery_then_keys_under_one_lease() {
        let (s, mut v) = vms(&provider(json!({"discovery": true, "cluster": "idp"})), 2);
        let req = v[0].try_start(&s, 0, 1, Want::Routine).unwrap();
        assert_eq!(req.phase, Phase::Discovery);
        assert_eq!(req.path, "/oauth2/default/.well-known/openid-configuration");
        let doc = json!({"issuer": "https://idp.example/oauth2/default", "jwks_uri": "https://idp.example/oauth2/default/v1/keys"});
        let (out, next) = v[0].finish(
            &s,
            5,
            1,
            answer(Some(200), None, doc.to_string().as_bytes()),
            0,
        );
        assert_eq!(out, FetchOutcome::Discovered);
        let next = next.unwrap();
        assert_eq!(next.phase, Phase::Keys);
        assert_eq!(next.path, "/oauth2/default/v1/keys");
        assert_eq!(
            v[1].try_start(&s, 6, 2, Want::Routine),
            None,
            "the lease is kept"
        );
        v[1].sync(&s);
        assert!(
            matches!(v[1].key_state(), KeyState::Pending),
            "still waiting for keys"
        );
        ok(&mut v[0], &s, 10, 1, None);
        v[1].sync(&s);
        assert!(matches!(v[1].key_state(), KeyState::Ready(_)));
    }

    #[test]
    fn discovery_refuses_another_origin() {
        for uri in [
            "https://evil.example/keys",
            "http://idp.example/oauth2/default/v1/keys",
        ] {
            let (s, mut v) = vms(&provider(json!({"discovery": true, "cluster": "idp"})), 1);
            v[0].try_start(&s, 0, 1, Want::Routine).unwrap();
            let doc = json!({"jwks_uri": uri});
            let (out, next) = v[0].finish(
                &s,
                0,
                1,
                answer(Some(200), None, doc.to_string().as_bytes()),
                0,
            );
            assert!(matches!(out, FetchOutcome::Failed { .. }), "{uri}");
            assert_eq!(next, None);
        }
    }

    #[test]
    fn inline_keys_never_fetch() {
        let jwks: serde_json::Value = serde_json::from_str(&keys_body()).unwrap();
        let (s, mut v) = vms(&provider(json!({"inline": jwks})), 1);
        assert!(matches!(v[0].key_state(), KeyState::Ready(_)));
        assert_eq!(v[0].try_start(&s, 0, 1, Want::Routine), None);
        assert!(s.is_empty(), "no shared record for inline keys");
    }

    #[test]
    fn corrupt_record_is_treated_as_fresh() {
        let (s, mut v) = vms(&remote(), 1);
        s.set(&v[0].store_key, b"\xff not json", None).unwrap();
        assert!(v[0].try_start(&s, 0, 1, Want::Routine).is_some());
    }

    #[test]
    fn cache_control_clamp() {
        assert_eq!(freshness_s(None, 300), 300);
        assert_eq!(freshness_s(Some("max-age=5"), 300), 30);
        assert_eq!(freshness_s(Some("max-age=999999"), 300), 86_400);
        assert_eq!(freshness_s(Some("public, Max-Age=600"), 300), 600);
        assert_eq!(freshness_s(Some("no-cache"), 300), 30);
        assert_eq!(freshness_s(Some("no-store, max-age=600"), 300), 30);
        assert_eq!(freshness_s(Some("max-age=abc"), 300), 300);
    }
}
