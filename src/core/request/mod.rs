//! The request as the core sees it: path normalization, query and cookie access, token
//! extraction and rule matching. Imports nothing else of the core.

pub mod cookie;
pub mod extract;
pub mod matcher;
pub mod path;
pub mod query;
pub mod view;
