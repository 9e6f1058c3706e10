//! Rate limits: what a limit is, and token buckets shared by every worker through the store
//! (the keyed hash, bucket arithmetic, the records and their bytes, charging by CAS, failure
//! throttling). From the
//! rest of the core it may import only `store` and `token` (a limit keyed by a claim path).

pub mod bucket;
pub mod charge;
pub mod failures;
pub mod hash_key;
pub mod limits;
pub mod record;
