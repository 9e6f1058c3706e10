//! The token itself: compact JWS parsing, registered-claim checks, scopes, claim paths and the
//! cache of verified tokens. From the rest of the core it may import only `crypto` (algorithms,
//! what a signature covers), `keys` (a key set, to forget what it verified) and `denial`.

pub mod access;
pub mod cache;
pub mod claim_path;
pub mod claims;
pub mod jws;
pub mod scopes;
