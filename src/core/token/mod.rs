//! The token itself: compact JWS parsing, registered-claim checks, scopes, claim paths and the
//! cache of verified tokens, DPoP proofs and their replay record. From the rest of the core it
//! may import only `crypto` (algorithms, what a signature covers), `keys` (a key set, to forget
//! what it verified; a proof's `jwk`), `store` (the replay record) and `denial`.

pub mod access;
pub mod cache;
pub mod claim_path;
pub mod claims;
pub mod dpop;
pub mod jws;
pub mod replay;
pub mod scopes;
pub mod thumbprint;
