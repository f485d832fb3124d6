//! Everything the user sees: the live dashboard and the events-log follower.

pub mod follow;
pub mod tui;
pub mod sink;
