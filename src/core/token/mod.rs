pub mod cache;
pub mod claim_path;
pub mod claims;
pub mod jws;
pub mod scopes;
