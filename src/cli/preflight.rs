//! `retort preflight PROFILE`: the memory preflight's table without running, for this machine
//! or for a card it does not have; and the check `retort run` / `retort sft` make before a
//! run folder exists.

use super::load_profile;
use crate::preflight::{self, budget};
use crate::profile::Profile;
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args, Debug)]
pub struct PreflightArgs {
    /// A preset name or a profile TOML file.
    pub profile: String,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The device to size for (default: the profile's run.device): cpu, cuda:N, metal.
    #[arg(long)]
    pub device: Option<String>,
    /// The device's memory instead of asking it, e.g. 80GiB or 24G (G, GB and GiB all mean
    /// 2^30 bytes); implies a GPU when --device is not given.
    #[arg(long, value_parser = budget::parse_size)]
    pub device_memory: Option<f64>,
    /// Host RAM instead of /proc/meminfo's MemAvailable, e.g. 512GiB.
    #[arg(long, value_parser = budget::parse_size)]
    pub host_memory: Option<f64>,
}

/// Print the table; exit code 1 when a stage does not fit.
pub fn cmd_preflight(args: PreflightArgs) -> Result<i32> {
    let profile = load_profile(&args.profile, &args.set)?;
    let device = args.device.clone().unwrap_or_else(|| profile.run.device.clone());
    let b = budget::budget(&device, &profile.run.dtype, args.device_memory, args.host_memory).map_err(anyhow::Error::msg)?;
    let checks = preflight::check(&profile, &b);
    print!("{}", preflight::render(&checks, &b));
    if checks.iter().all(|c| c.fits()) {
        Ok(0)
    } else {
        print!("{}", preflight::ways_out(&checks));
        Ok(1)
    }
}

/// The check before a run starts: an error with the figures when a stage does not fit,
/// a warning when `force` runs it anyway.
pub fn check_before_run(profile: &Profile, force: bool) -> Result<()> {
    let b = budget::budget(&profile.run.device, &profile.run.dtype, None, None).map_err(anyhow::Error::msg)?;
    let checks = preflight::check(profile, &b);
    if let Some(text) = preflight::refusal(&checks, &b) {
        if force {
            eprintln!("retort: warning: --force given; running although the memory preflight says it does not fit:\n{text}");
        } else {
            bail!("{text}");
        }
    }
    Ok(())
}
