//! What a rule asks of a verified token (scopes, claim requirements) and how claims become
//! header values. May import `token` and `denial`.

pub mod forward;
pub mod requirements;
