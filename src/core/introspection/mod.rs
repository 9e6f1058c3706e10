//! RFC 7662 token introspection, per provider and per VM: the settings, the call, its answer,
//! the answer cache keyed by a keyed hash of the token, the calls in flight and the circuit
//! breaker. It imports only `token` and `denial`; the decision asks it for cached answers and
//! the gate runs the calls.

pub mod answer;
pub mod answers;
pub mod breaker;
pub mod cache;
pub mod call;
pub mod flights;
pub mod settings;
pub mod token_key;
