pub mod forward;
pub mod requirements;
