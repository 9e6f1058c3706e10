//! The functional core: everything that decides, nothing that talks to the host.

pub mod config;
pub mod crypto;
pub mod decision;
pub mod denial;
pub mod gate;
pub mod keys;
pub mod policy;
pub mod ratelimit;
pub mod request;
pub mod store;
pub mod token;

#[cfg(test)]
mod test_keys;
