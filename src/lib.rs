//! retort: a terminal lab for LLM post-training research.
//!
//! See DESIGN.md in the shared folder for the map; each module's doc says its one job.

pub mod bus;
pub mod rng;
pub mod tasks;
pub mod ui;
