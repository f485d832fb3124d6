//! Exports of a profile to other engines (`retort export`): today verl, for RL stages that
//! outgrow one workstation.

pub mod verl;
