pub mod jwk_set;
pub mod lifecycle;
