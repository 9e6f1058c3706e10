//! The decision for one request: the pipeline of stages and what it decides. The top of the
//! core: it may import every other folder; nothing imports it.

pub mod authenticate;
pub mod authorize;
pub mod env;
pub mod halt;
pub mod identity;
pub mod outcome;
pub mod pipeline;
pub mod response;
pub mod signature;
