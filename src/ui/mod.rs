//! Everything the user sees: the live dashboard, the headless lines and the events-log
//! follower. Nothing below the UI imports it; the pipeline hands it records through a
//! [`crate::pipeline::Sink`].

pub mod follow;
pub mod headless;
pub mod sink;
pub mod tui;
