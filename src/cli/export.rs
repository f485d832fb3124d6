//! `retort export verl`: glue between the command line and [`crate::export::verl`].

use crate::export::verl::{self, mapping::Target};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ExportAction {
    /// An RL stage as a verl run: Parquet data, reward.py, run.sh and a README of the mapping.
    #[command(long_about = concat!(
        "Write an rl stage of PROFILE as a run of verl's PPO trainer, for training beyond one\n",
        "workstation. DIR gets:\n",
        "\n",
        "  train.parquet, test.parquet  the stage's problems in verl's RL schema\n",
        "  reward.py                    compute_score(data_source, solution_str, ground_truth,\n",
        "                               extra_info=None): retort's verifier\n",
        "  run.sh                       python3 -m verl.trainer.main_ppo with the stage's settings\n",
        "                               as Hydra overrides\n",
        "  README.md                    every override with the retort key it comes from, and\n",
        "                               what does not map\n",
        "\n",
        "GRPO and PPO stages target verl 0.9.1; FlowRL stages the FlowRL authors' verl fork\n",
        "(Xuekai-Zhu/FlowRL). Several rl stages go to DIR/<stage>/ (or pick one with --stage).\n",
        "\n",
        "Example:\n",
        "  retort export verl grpo-qwen2.5-7b --out verl-grpo\n",
        "  MODEL_PATH=Qwen/Qwen2.5-7B N_GPUS=8 bash verl-grpo/run.sh"
    ))]
    Verl(VerlArgs),
}

#[derive(Args, Debug)]
pub struct VerlArgs {
    /// A preset name (`retort profiles`) or a path to a profile TOML file.
    pub profile: String,
    /// The folder to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Override a profile key, e.g. `--set stage.grpo.steps=500`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Export only this rl stage.
    #[arg(long)]
    pub stage: Option<String>,
    /// A finished run of the profile: `@stage` inputs (data, the starting model) come from it.
    #[arg(long, value_name = "RUN_DIR")]
    pub run: Option<PathBuf>,
    /// The retort binary reward.py calls for math and code (default: this one).
    #[arg(long, value_name = "PATH")]
    pub retort_bin: Option<PathBuf>,
    /// Overwrite an earlier export in DIR.
    #[arg(long)]
    pub force: bool,
}

pub fn cmd_export(action: ExportAction) -> Result<i32> {
    let ExportAction::Verl(args) = action;
    let profile = super::load_profile(&args.profile, &args.set)?;
    let retort_bin = match args.retort_bin {
        Some(p) => p,
        None => std::env::current_exe().context("the path of this retort binary (pass --retort-bin)")?,
    };
    let opts = verl::Options { out: args.out, stage: args.stage, run: args.run, retort_bin, force: args.force };
    for e in verl::export(&profile, &opts)? {
        let target = match e.target {
            Target::Verl => format!("verl {}", verl::mapping::VERL_VERSION),
            Target::FlowRl => format!("the FlowRL fork of verl (Xuekai-Zhu/FlowRL @ {})", &verl::mapping::FLOWRL_COMMIT[..7]),
        };
        println!(
            "{}: stage `{}` for {target}: {} train / {} test rows, {} overrides; not mapped: {}",
            e.dir.display(),
            e.stage,
            e.train_rows,
            e.test_rows,
            e.overrides,
            if e.unmapped.is_empty() { "nothing".to_string() } else { e.unmapped.join(", ") }
        );
    }
    Ok(0)
}
