//! The decision for one request: the pipeline of stages, what it decides, and the responses.
//! May import every folder but `gate`; only `gate`, the shell and the CLI import it.

pub mod abuse;
pub mod authenticate;
pub mod authorize;
pub mod binding;
pub mod env;
pub mod halt;
pub mod identity;
pub mod introspect;
pub mod log;
pub mod outcome;
pub mod pipeline;
pub mod response;
pub mod signature;
pub mod trace;
