//! The configuration: raw serde types, the compiled model, and the compilation that validates
//! one into the other with errors that name their field. May import every folder below
//! `decision` and `gate`; only those two (and the shell) import it.

pub mod compile;
pub mod error;
pub mod introspection;
pub mod jwks;
pub mod matching;
pub mod model;
pub mod names;
pub mod provider;
pub mod rate_limit;
pub mod raw;
pub mod rule;
