//! The functional core: everything that decides, nothing that talks to the host.

pub mod alg;
pub mod authenticator;
pub mod claim_path;
pub mod config;
pub mod cookie;
pub mod der;
pub mod extract;
pub mod foreign_proto;
pub mod forward;
pub mod host_probe;
pub mod jwks;
pub mod jwks_cache;
pub mod jws;
pub mod matcher;
pub mod path;
pub mod policy;
pub mod query;
pub mod ratelimit;
pub mod ratelimit_config;
pub mod reason;
pub mod request;
pub mod response;
pub mod rsa_verify;
pub mod scopes;
pub mod shared_store;
pub mod token_cache;
pub mod validate;
pub mod verify;
pub mod verify_pure;

#[cfg(test)]
mod test_keys;
