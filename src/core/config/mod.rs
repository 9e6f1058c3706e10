pub mod compile;
pub mod error;
pub mod model;
pub mod rate_limit;
pub mod raw;
