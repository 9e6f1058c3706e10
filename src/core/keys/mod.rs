pub mod jwk_set;
pub mod lifecycle;
pub mod source;
pub mod state;
