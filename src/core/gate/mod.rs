//! One VM's filter state and its event handlers (a request, a tick, a fetch's answer), each
//! returning what the shell must do. The top of the core: it may import every other folder.

pub mod action;
pub mod fetching;
pub mod introspecting;
pub mod state;
pub mod waiting_room;

#[cfg(test)]
mod races;

#[cfg(test)]
mod introspection_races;
