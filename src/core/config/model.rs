//! The compiled configuration: what the request path reads. Built only by `compile`.

use crate::core::crypto::alg::{Alg, AlgSet};
use crate::core::introspection::answer::Expect as IntrospectionExpect;
use crate::core::introspection::settings::Introspection;
use crate::core::keys::source::{JwksConfig, JwksSource};
use crate::core::policy::requirements::{ClaimRequirement, Scopes};
use crate::core::ratelimit::limits::{LimitKey, RateLimit};
use crate::core::request::cidr::IpList;
use crate::core::request::extract::Source;
use crate::core::request::matcher::Match;
use crate::core::request::path::PathParameters;
use crate::core::token::claim_path::ClaimPath;
use crate::core::token::claims::Expected;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: ClaimPath,
    pub header: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: JwksConfig,
    pub algorithms: AlgSet,
    pub clock_skew_s: u64,
    pub max_lifetime_s: Option<u64>,
    pub client_ids: Option<Vec<String>>,
    pub from: Vec<Source>,
    pub forward_token: bool,
    pub claims_to_headers: Vec<ClaimHeader>,
    pub payload_header: Option<String>,
    /// Only RFC 9068 access tokens (`typ` `at+jwt`).
    pub require_at_jwt: bool,
    /// DPoP (RFC 9449): whether the `DPoP` scheme is accepted, and how proofs are checked.
    pub dpop: Dpop,
    /// `mtls_binding: "required"`: only certificate-bound tokens (RFC 8705).
    pub mtls_binding: bool,
    /// False when the provider has no `jwks` (introspection only): it takes no JWT.
    pub verifies_jwts: bool,
    /// RFC 7662 introspection of opaque tokens (and of JWTs with `tokens: "all"`).
    pub introspection: Option<Introspection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopMode {
    Disabled,
    Allowed,
    Required,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dpop {
    pub mode: DpopMode,
    /// Proof algorithms; never `none` or HS*.
    pub algorithms: AlgSet,
    pub max_age_s: u64,
    /// The scheme and authority `htu` is compared with, instead of `:scheme` and `:authority`.
    pub origin: Option<String>,
}

impl Default for Dpop {
    fn default() -> Dpop {
        Dpop {
            mode: DpopMode::Disabled,
            algorithms: [Alg::ES256, Alg::RS256, Alg::PS256, Alg::EdDSA]
                .into_iter()
                .collect(),
            max_age_s: 300,
            origin: None,
        }
    }
}

impl Dpop {
    /// `algs="..."` of the `DPoP` challenge: the proof algorithms joined by spaces.
    pub fn algs(&self) -> String {
        self.algorithms
            .iter()
            .map(Alg::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Required,
    Optional,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matcher: Match,
    pub auth: Auth,
    /// Indexes into `Config::providers`, in the order the rule lists them.
    pub providers: Vec<usize>,
    /// The token sources of those providers, in order, without repeats: computed once here
    /// rather than per request.
    pub sources: Vec<Source>,
    pub scopes: Scopes,
    pub claims: Vec<ClaimRequirement>,
    pub rate_limits: Vec<RateLimit>,
    /// Client address ranges, checked before any token work.
    pub ip: Option<IpList>,
}

/// What a `DPoP` challenge says (see `Config::dpop_challenge`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopChallenge {
    /// The proof algorithms, joined by spaces.
    pub algs: String,
    /// Every provider of the rule requires DPoP: no `Bearer` challenge.
    pub only: bool,
}

/// Which implementation checks signatures (an extension to SPEC.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureBackend {
    /// Envoy's BoringSSL through the `verify_signature` foreign function when the host passes
    /// a known-answer test, pure Rust otherwise and for PS*/EdDSA.
    Auto,
    /// Like `Auto`, but refuse to start when the host function is missing.
    Host,
    /// Pure Rust only.
    Pure,
}

/// Top-level `log`: which decisions get a log line, and which claims it names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// Allowed requests get a line too (denials always do).
    pub allowed: bool,
    pub claims: Vec<ClaimPath>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub providers: Vec<Provider>,
    /// Some provider has `introspection` (opaque tokens are worth looking for).
    pub introspects: bool,
    pub rules: Vec<Rule>,
    pub realm: Option<String>,
    pub bypass_cors_preflight: bool,
    /// What to do with `;` parameters in path segments.
    pub path_parameters: PathParameters,
    /// The decision log's options.
    pub log: LogConfig,
    pub signature_backend: SignatureBackend,
    /// Verified tokens remembered per VM (0 disables the cache).
    pub token_cache_entries: usize,
    /// Every claim and payload header of every provider: stripped from each request first.
    pub protected_headers: Vec<String>,
    /// `client_ip.xff_trusted_hops`: the client address is this `X-Forwarded-For` entry from
    /// the right (1 = the last); `None`: the downstream address.
    pub xff_trusted_hops: Option<u32>,
    /// The rule used when none matches: `auth: required`, any provider, no further checks.
    /// It has no position in `rules`, so decisions under it name no rule.
    pub default_rule: Rule,
}

impl Provider {
    pub fn expected(&self) -> Expected<'_> {
        Expected {
            audiences: &self.audiences,
            clock_skew_s: self.clock_skew_s,
            max_lifetime_s: self.max_lifetime_s,
            client_ids: self.client_ids.as_deref(),
            audience_optional: false,
            exp_optional: false,
        }
    }

    /// What an active introspection answer must satisfy (`iss`, `aud` when present).
    pub fn expected_answer(&self, require_exp: bool) -> IntrospectionExpect<'_> {
        IntrospectionExpect {
            issuer: &self.issuer,
            claims: Expected {
                audience_optional: true,
                exp_optional: !require_exp,
                ..self.expected()
            },
        }
    }
}

impl Config {
    /// Whether any rate limit keys on the client address (worth a host call per request).
    pub fn has_rate_limits(&self) -> bool {
        self.rules.iter().any(|r| !r.rate_limits.is_empty())
    }

    /// Whether a rule's `ip` or an `ip` rate-limit key needs the downstream address (worth a
    /// host call per request).
    pub fn needs_client_ip(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.ip.is_some() || r.rate_limits.iter().any(|l| l.key == LimitKey::Ip))
    }

    /// Whether any provider accepts DPoP proofs (their replay records live in shared data).
    pub fn has_dpop(&self) -> bool {
        self.providers
            .iter()
            .any(|p| p.dpop.mode != DpopMode::Disabled)
    }

    /// The `DPoP` challenge a denial under `rule` (`None`: the default rule) carries: the
    /// providers' modes and proof algorithms. `None` when no provider of the rule accepts DPoP.
    pub fn dpop_challenge(&self, rule: Option<usize>) -> Option<DpopChallenge> {
        let rule = rule
            .and_then(|i| self.rules.get(i))
            .unwrap_or(&self.default_rule);
        let modes: Vec<&Dpop> = rule
            .providers
            .iter()
            .filter_map(|&i| self.providers.get(i))
            .map(|p| &p.dpop)
            .collect();
        let enabled: Vec<&&Dpop> = modes
            .iter()
            .filter(|d| d.mode != DpopMode::Disabled)
            .collect();
        let first = enabled.first()?;
        let mut algorithms = AlgSet::default();
        for d in &enabled {
            for a in d.algorithms.iter() {
                algorithms.insert(a);
            }
        }
        Some(DpopChallenge {
            algs: Dpop {
                algorithms,
                ..(**first).clone()
            }
            .algs(),
            only: modes.iter().all(|d| d.mode == DpopMode::Required),
        })
    }

    /// Providers that need their keys fetched over the network.
    pub fn remote_providers(&self) -> impl Iterator<Item = (usize, &Provider)> {
        self.providers
            .iter()
            .enumerate()
            .filter(|(_, p)| !matches!(p.jwks.source, JwksSource::Inline(_)))
    }
}
