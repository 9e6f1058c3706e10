pub mod charge;
pub mod limits;
