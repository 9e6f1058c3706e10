//! The request as the core sees it: path normalization, query and cookie access, token
//! extraction, rule matching, the client address and the ranges it is matched against.
//! Imports nothing else of the core.

pub mod cidr;
pub mod client_address;
pub mod cookie;
pub mod extract;
pub mod matcher;
pub mod path;
pub mod query;
pub mod view;
