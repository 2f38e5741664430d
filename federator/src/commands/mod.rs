//! One module per command group.

pub mod ca;
pub mod hub;
