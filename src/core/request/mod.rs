pub mod cookie;
pub mod extract;
pub mod matcher;
pub mod path;
pub mod query;
pub mod view;
