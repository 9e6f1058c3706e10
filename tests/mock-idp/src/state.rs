//! Authorization servers (keys, faults, issued and revoked tokens) and global settings shared
//! by all handlers.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::{Map, Value};

use crate::counts::Counts;
use crate::faults::{Endpoint, Fault};
use crate::keys::SigningKey;
use crate::lock;

/// How many keys each server publishes.
pub const PUBLISHED_KEYS: usize = 2;

pub const DEFAULT_SERVER: &str = "default";

/// The id of Okta's org authorization server: issuer `{public-url}` (no `/oauth2/...`), also
/// served at Okta's own paths (`/oauth2/v1/...`), and its token endpoint mints opaque tokens.
pub const ORG_SERVER: &str = "org";

/// The most tokens a server remembers (opaque tokens and introspection overrides), and the most
/// revocations it keeps: an explicit bound on the mock's memory.
pub const MAX_REMEMBERED: usize = 200_000;

/// SHA-256 of a token: what the stores key on, so they never hold a token itself.
pub type TokenHash = [u8; 32];

/// What a server remembers about a token it issued.
#[derive(Clone, Debug, Default)]
pub struct Issued {
    /// An opaque token's claims (what introspection answers); `None` for a JWT, whose claims
    /// are in the token.
    pub claims: Option<Map<String, Value>>,
    /// Merged into every introspection answer for the token (`null` removes a member).
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Without a trailing slash.
    pub public_url: String,
    pub key_dir: Option<PathBuf>,
    pub lifetime_s: i64,
}

pub struct AuthServer {
    pub id: String,
    /// Newest first.
    pub keys: Vec<Arc<SigningKey>>,
    /// The fault of `/v1/keys`.
    pub fault: Fault,
    pub introspect_fault: Fault,
    /// Opaque tokens and tokens minted with introspection overrides.
    pub issued: HashMap<TokenHash, Issued>,
    pub revoked: HashSet<TokenHash>,
    /// Created on first use: generating a key nobody asked for would slow every start.
    pub rogue: Option<Arc<SigningKey>>,
}

pub type ServerHandle = Arc<Mutex<AuthServer>>;

pub struct App {
    pub config: Config,
    servers: Mutex<HashMap<String, ServerHandle>>,
    /// Serializes server creation so keys are generated (and written to --key-dir) once.
    create: Mutex<()>,
    pub counts: Counts,
    max_age: AtomicU64,
    /// How many introspection requests arrived since the last reset, and the last one's shape.
    pub introspections: Mutex<(u64, Option<Value>)>,
}

/// Ids become URL segments and file names, so keep them boring.
pub fn valid_server_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl App {
    pub fn new(config: Config, max_age: u64) -> App {
        App {
            config,
            servers: Mutex::new(HashMap::new()),
            create: Mutex::new(()),
            counts: Counts::default(),
            max_age: AtomicU64::new(max_age),
            introspections: Mutex::new((0, None)),
        }
    }

    pub fn is_org(id: &str) -> bool {
        id == ORG_SERVER
    }

    pub fn issuer(&self, id: &str) -> String {
        if App::is_org(id) {
            self.config.public_url.clone()
        } else {
            format!("{}/oauth2/{id}", self.config.public_url)
        }
    }

    /// Where the server's `v1/...` endpoints live (Okta's org server: `{public-url}/oauth2`).
    pub fn endpoint_base(&self, id: &str) -> String {
        if App::is_org(id) {
            format!("{}/oauth2", self.config.public_url)
        } else {
            self.issuer(id)
        }
    }

    pub fn max_age(&self) -> u64 {
        self.max_age.load(Ordering::Relaxed)
    }

    pub fn set_max_age(&self, secs: u64) {
        self.max_age.store(secs, Ordering::Relaxed);
    }

    /// Registers a server with the given keys (newest first), replacing any existing one.
    pub fn add_server(&self, id: &str, keys: Vec<SigningKey>) -> ServerHandle {
        let handle = Arc::new(Mutex::new(AuthServer {
            id: id.to_string(),
            keys: keys.into_iter().map(Arc::new).collect(),
            fault: Fault::None,
            introspect_fault: Fault::None,
            issued: HashMap::new(),
            revoked: HashSet::new(),
            rogue: None,
        }));
        lock(&self.servers).insert(id.to_string(), handle.clone());
        handle
    }

    /// Returns the server, creating it (loading or generating its keys) on first use.
    pub fn server(&self, id: &str) -> Result<ServerHandle, String> {
        if !valid_server_id(id) {
            return Err(format!(
                "invalid authorization server id `{id}` (use letters, digits, - and _)"
            ));
        }
        if let Some(s) = lock(&self.servers).get(id) {
            return Ok(s.clone());
        }
        let _creating = lock(&self.create);
        if let Some(s) = lock(&self.servers).get(id) {
            return Ok(s.clone());
        }
        let keys = self.initial_keys(id)?;
        eprintln!(
            "mock-idp: created authorization server `{id}` with kids {:?}",
            keys.iter().map(|k| k.kid()).collect::<Vec<_>>()
        );
        Ok(self.add_server(id, keys))
    }

    fn initial_keys(&self, id: &str) -> Result<Vec<SigningKey>, String> {
        let dir = self.config.key_dir.clone();
        let id = id.to_string();
        // Key generation dominates start-up time; do the keys in parallel.
        let jobs: Vec<_> = (1..=PUBLISHED_KEYS)
            .map(|n| {
                let path = dir.as_ref().map(|d| d.join(format!("{id}-{n}.pem")));
                thread::spawn(move || load_or_generate(path.as_deref()))
            })
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join()
                    .unwrap_or_else(|_| Err("key generation panicked".into()))
            })
            .collect()
    }

    pub fn kids(&self, id: &str) -> Result<Vec<String>, String> {
        let server = self.server(id)?;
        let kids = lock(&server)
            .keys
            .iter()
            .map(|k| k.kid().to_string())
            .collect();
        Ok(kids)
    }

    /// Puts a new key in front and drops the oldest; returns the new kids, newest first.
    pub fn rotate(&self, id: &str) -> Result<Vec<String>, String> {
        let server = self.server(id)?;
        let key = Arc::new(SigningKey::generate()?);
        let mut s = lock(&server);
        s.keys.insert(0, key);
        s.keys.truncate(PUBLISHED_KEYS);
        Ok(s.keys.iter().map(|k| k.kid().to_string()).collect())
    }

    pub fn rogue_key(&self, id: &str) -> Result<Arc<SigningKey>, String> {
        let server = self.server(id)?;
        if let Some(k) = &lock(&server).rogue {
            return Ok(k.clone());
        }
        let fresh = Arc::new(SigningKey::generate()?);
        let key = lock(&server).rogue.get_or_insert(fresh).clone();
        Ok(key)
    }

    pub fn set_fault(&self, id: &str, endpoint: Endpoint, fault: Fault) -> Result<(), String> {
        let server = self.server(id)?;
        let mut s = lock(&server);
        match endpoint {
            Endpoint::Keys => s.fault = fault,
            Endpoint::Introspect => s.introspect_fault = fault,
        }
        Ok(())
    }

    /// Remembers a token the server issued; when full, expired opaque tokens are forgotten
    /// first, and if that is not enough the token is refused.
    pub fn remember(&self, id: &str, hash: TokenHash, issued: Issued) -> Result<(), String> {
        let server = self.server(id)?;
        let mut s = lock(&server);
        if s.issued.len() >= MAX_REMEMBERED && !s.issued.contains_key(&hash) {
            let now = crate::tokens::now_s();
            s.issued
                .retain(|_, i| !i.claims.as_ref().is_some_and(|c| expired(c, now)));
            if s.issued.len() >= MAX_REMEMBERED {
                return Err(format!(
                    "server `{id}` already remembers {MAX_REMEMBERED} tokens"
                ));
            }
        }
        s.issued.insert(hash, issued);
        Ok(())
    }

    pub fn revoke(&self, id: &str, hash: TokenHash) -> Result<(), String> {
        let server = self.server(id)?;
        let mut s = lock(&server);
        if s.revoked.len() >= MAX_REMEMBERED && !s.revoked.contains(&hash) {
            return Err(format!(
                "server `{id}` already holds {MAX_REMEMBERED} revocations"
            ));
        }
        s.revoked.insert(hash);
        Ok(())
    }

    /// Zeroes counts and the introspection record and clears every server's faults (keys,
    /// max-age, issued tokens and revocations stay).
    pub fn reset(&self) {
        self.counts.reset();
        *lock(&self.introspections) = (0, None);
        for server in lock(&self.servers).values() {
            let mut s = lock(server);
            s.fault = Fault::None;
            s.introspect_fault = Fault::None;
        }
    }
}

/// A numeric `exp` at or before `now`; a token without one (or with a non-numeric one) never
/// expires here.
pub fn expired(claims: &Map<String, Value>, now: i64) -> bool {
    claims
        .get("exp")
        .and_then(Value::as_f64)
        .is_some_and(|exp| exp <= now as f64)
}

/// Loads the PEM at `path` if it exists; otherwise generates a key and, when a path was
/// given, tries to save it so the next start publishes the same keys.
fn load_or_generate(path: Option<&Path>) -> Result<SigningKey, String> {
    if let Some(path) = path {
        match fs::read_to_string(path) {
            Ok(pem) => {
                return SigningKey::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    let key = SigningKey::generate()?;
    if let Some(path) = path {
        if let Err(e) = save_new(path, &key) {
            eprintln!("mock-idp: could not save {}: {e}", path.display());
        }
    }
    Ok(key)
}

fn save_new(path: &Path, key: &SigningKey) -> Result<(), String> {
    let pem = key.to_pkcs8_pem()?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    file.write_all(pem.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{test_app, test_app_with_key_dir, test_keys};

    #[test]
    fn rotation_adds_front_and_drops_oldest() {
        let app = test_app();
        let before = app.kids("default").unwrap();
        assert_eq!(before.len(), 2);
        let after = app.rotate("default").unwrap();
        assert_eq!(after.len(), 2);
        assert!(!before.contains(&after[0]));
        assert_eq!(after[1], before[0]);
        assert!(!after.contains(&before[1]));
        assert_eq!(app.kids("default").unwrap(), after);
    }

    #[test]
    fn rejects_bad_server_ids() {
        let app = test_app();
        assert!(app.server("../etc").is_err());
        assert!(app.server("").is_err());
        assert!(app.server("a b").is_err());
        assert!(valid_server_id("second_AS-2"));
    }

    #[test]
    fn key_dir_loads_existing_and_saves_missing() {
        let dir = std::env::temp_dir().join(format!("mock-idp-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("kd-1.pem"), test_keys()[1].to_pkcs8_pem().unwrap()).unwrap();
        let app = test_app_with_key_dir(Some(dir.clone()));
        let kids = app.kids("kd").unwrap();
        assert_eq!(kids[0], test_keys()[1].kid());
        let saved = fs::read_to_string(dir.join("kd-2.pem")).unwrap();
        assert_eq!(SigningKey::from_pem(&saved).unwrap().kid(), kids[1]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn reset_clears_faults_and_counts() {
        let app = test_app();
        app.set_fault("default", Endpoint::Keys, Fault::Empty)
            .unwrap();
        app.set_fault("default", Endpoint::Introspect, Fault::Oversize)
            .unwrap();
        app.remember("default", [7; 32], Issued::default()).unwrap();
        app.revoke("default", [8; 32]).unwrap();
        app.counts.record("GET", "/x");
        *lock(&app.introspections) = (3, Some(Value::Null));
        app.reset();
        let server = app.server("default").unwrap();
        let s = lock(&server);
        assert_eq!((s.fault, s.introspect_fault), (Fault::None, Fault::None));
        assert!(app.counts.snapshot().is_empty());
        assert_eq!(*lock(&app.introspections), (0, None));
        // Tokens and revocations outlive a reset, as keys do.
        assert!(s.issued.contains_key(&[7; 32]) && s.revoked.contains(&[8; 32]));
    }

    #[test]
    fn org_server_issuer_has_no_oauth2_path() {
        let app = test_app();
        assert_eq!(app.issuer("org"), "http://idp.test");
        assert_eq!(app.endpoint_base("org"), "http://idp.test/oauth2");
        assert_eq!(app.issuer("default"), "http://idp.test/oauth2/default");
        assert_eq!(
            app.endpoint_base("default"),
            "http://idp.test/oauth2/default"
        );
    }

    #[test]
    fn expiry_needs_a_numeric_exp() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert!(expired(&claims(serde_json::json!({"exp": 10})), 10));
        assert!(!expired(&claims(serde_json::json!({"exp": 11})), 10));
        assert!(!expired(&claims(serde_json::json!({"exp": "1"})), 10));
        assert!(!expired(&claims(serde_json::json!({})), 10));
    }
}
