//! retort: a terminal lab for LLM post-training research.
//!
//! See DESIGN.md in the shared folder for the map; each module's doc says its one job.

pub mod bench;
pub mod bus;
pub mod cli;
pub mod config_keys;
pub mod cpu_threads;
pub mod device;
pub mod diffusion;
pub mod error_text;
pub mod eval;
pub mod export;
pub mod fsutil;
pub mod generate;
pub mod hub;
pub mod malloc_tuning;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod preflight;
pub mod profile;
pub mod report;
pub mod rng;
pub mod run;
pub mod sandbox;
pub mod selftest;
pub mod stage;
pub mod stages;
pub mod synth;
pub mod tasks;
pub mod text;
pub mod train;
pub mod ui;
pub mod uprise;
