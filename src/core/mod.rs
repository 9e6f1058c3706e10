//! The functional core: everything that decides, nothing that talks to the host. Folders by
//! concern, from the top: `gate` (a VM's state and events) over `decision` (the pipeline) over
//! `config` over `policy`, `ratelimit`, `token`, `keys`, `request` and `crypto`, with the
//! leaves `denial` and `store`. No module imports one above it (tests/module_graph.rs).

pub mod config;
pub mod crypto;
pub mod decision;
pub mod denial;
pub mod gate;
pub mod introspection;
pub mod keys;
pub mod policy;
pub mod ratelimit;
pub mod request;
pub mod store;
pub mod token;

#[cfg(test)]
pub(crate) mod test_keys;
