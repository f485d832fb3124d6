//! The text files of an export: `run.sh`, `reward.py` (the embedded verifier script with
//! this stage's reward settings) and `README.md`.

use super::mapping::{Mapping, Override, Target, FLOWRL_COMMIT, FLOWRL_VERL_BASE, VERL_VERSION};
use crate::fsutil::write_atomic;
use crate::train::rl::config::RlStage;
use anyhow::{Context as _, Result};
use std::fmt::Write as _;
use std::path::Path;

pub const TRAIN: &str = "train.parquet";
pub const TEST: &str = "test.parquet";
pub const REWARD: &str = "reward.py";
pub const RUN: &str = "run.sh";
pub const README: &str = "README.md";

/// The verifier script; [`reward_py`] fills in the line marked `@@SETTINGS@@`.
pub const REWARD_TEMPLATE: &str = include_str!("../../../assets/verl/reward.py");

/// What the files say about the stage.
pub struct Context<'a> {
    pub profile: &'a str,
    pub stage: &'a str,
    pub cfg: &'a RlStage,
    pub map: &'a Mapping,
    /// The model path run.sh defaults to (`None`: the user must set MODEL_PATH).
    pub model: Option<&'a str>,
    pub model_ref: &'a str,
    pub train_rows: usize,
    pub test_rows: usize,
    /// (tokens, set by max_prompt_tokens, measured with the tokenizer)
    pub prompt_tokens: (usize, bool, bool),
    pub retort_bin: &'a Path,
}

pub fn write_all(dir: &Path, ctx: &Context) -> Result<()> {
    for (name, text) in [(RUN, run_sh(ctx)), (REWARD, reward_py(ctx)), (README, readme(ctx))] {
        let path = dir.join(name);
        write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(RUN), std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// A single-quoted shell word.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One override as a shell word: values that name shell variables (`"$HERE/…"`) stay
/// expandable, everything else is quoted so Hydra sees it verbatim (in double quotes when it
/// holds Hydra's own single quotes and nothing the shell would expand).
pub fn shell_word(o: &Override) -> String {
    let arg = o.arg();
    if o.value.contains('$') {
        arg
    } else if arg.contains('\'') && !arg.contains(['"', '$', '`', '\\', '!']) {
        format!("\"{arg}\"")
    } else {
        sh(&arg)
    }
}

pub fn run_sh(ctx: &Context) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "#!/usr/bin/env bash");
    let _ = writeln!(s, "# verl run of retort profile `{}`, stage `{}` (written by `retort export verl`, retort {}).", ctx.profile, ctx.stage, env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "# README.md beside this file lists every setting, its verl key, and what does not map.");
    let _ = writeln!(s, "# Environment: MODEL_PATH (the starting policy), N_GPUS (per node, default 1), NNODES (default 1),");
    let _ = writeln!(s, "# RETORT_BIN (the retort binary reward.py calls for math and code), PYTHON (default python3).");
    if ctx.map.target == Target::FlowRl {
        let _ = writeln!(s, "# FLOWRL_DIR: the verl_FlowRL folder of a clone of github.com/Xuekai-Zhu/FlowRL (checked at {FLOWRL_COMMIT}).");
    }
    let _ = writeln!(s, "# Extra arguments are passed to verl as further Hydra overrides.");
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(s, "HERE=\"$(cd \"$(dirname \"${{BASH_SOURCE[0]}}\")\" && pwd)\"");
    let _ = writeln!(s, "MODEL_PATH=\"${{MODEL_PATH:-{}}}\"", ctx.model.unwrap_or(""));
    let _ = writeln!(s, "if [ -z \"$MODEL_PATH\" ]; then");
    let _ = writeln!(
        s,
        "  echo \"run.sh: set MODEL_PATH: the stage starts from {} (a model retort makes); run the profile with retort and export again with --run RUN_DIR, or point MODEL_PATH at a Hugging Face model folder or hub id\" >&2",
        ctx.model_ref
    );
    let _ = writeln!(s, "  exit 2");
    let _ = writeln!(s, "fi");
    let _ = writeln!(s, "N_GPUS=\"${{N_GPUS:-1}}\"");
    let _ = writeln!(s, "NNODES=\"${{NNODES:-1}}\"");
    let _ = writeln!(s, "export RETORT_BIN=\"${{RETORT_BIN:-{}}}\"", ctx.retort_bin.display());
    if ctx.map.target == Target::FlowRl {
        let _ = writeln!(s, "if [ -z \"${{FLOWRL_DIR:-}}\" ] || [ ! -d \"$FLOWRL_DIR/verl\" ]; then");
        let _ = writeln!(
            s,
            "  echo \"run.sh: FlowRL runs in the authors' verl fork: git clone https://github.com/Xuekai-Zhu/FlowRL, check out {FLOWRL_COMMIT}, pip install -e FlowRL/verl_FlowRL, and set FLOWRL_DIR=FlowRL/verl_FlowRL\" >&2"
        );
        let _ = writeln!(s, "  exit 2");
        let _ = writeln!(s, "fi");
        let _ = writeln!(s, "cd \"$FLOWRL_DIR\"");
    }
    let _ = writeln!(s, "overrides=(");
    for o in &ctx.map.overrides {
        let _ = writeln!(s, "  {}  # {}", shell_word(o), o.from);
    }
    let _ = writeln!(s, "  trainer.n_gpus_per_node=\"$N_GPUS\"");
    let _ = writeln!(s, "  trainer.nnodes=\"$NNODES\"");
    let _ = writeln!(s, ")");
    let _ = writeln!(s, "exec \"${{PYTHON:-python3}}\" -m verl.trainer.main_ppo \"${{overrides[@]}}\" \"$@\"");
    s
}

/// reward.py with this stage's reward settings: the format rule folded into the score and
/// the retort binary used for math and code.
pub fn reward_py(ctx: &Context) -> String {
    let settings = serde_json::json!({
        "format_reward": ctx.cfg.format_reward,
        "retort_bin": ctx.retort_bin.display().to_string(),
    });
    let line = format!("SETTINGS = json.loads({})", python_str(&settings.to_string()));
    REWARD_TEMPLATE.replacen("SETTINGS = json.loads(\"{}\")  # @@SETTINGS@@", &line, 1)
}

/// A Python string literal (JSON's escapes are Python's too).
fn python_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn readme(ctx: &Context) -> String {
    let mut s = String::new();
    let m = ctx.map;
    let _ = writeln!(s, "# verl export of `{}` / `{}`\n", ctx.profile, ctx.stage);
    let _ = writeln!(s, "Written by `retort export verl` (retort {}). The same problems, prompts, verifier and settings as", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "retort's `rl` stage `{}`, for verl's PPO trainer on one or more GPU nodes.\n", ctx.stage);
    let _ = writeln!(s, "| file | what |\n| --- | --- |");
    let _ = writeln!(s, "| `{TRAIN}` | {} training problems in verl's RL schema |", ctx.train_rows);
    let _ = writeln!(s, "| `{TEST}` | {} held-out problems (verl's validation set) |", ctx.test_rows);
    let _ = writeln!(s, "| `{REWARD}` | `compute_score(data_source, solution_str, ground_truth, extra_info=None)`: retort's verifier |");
    let _ = writeln!(s, "| `{RUN}` | `python3 -m verl.trainer.main_ppo` with the overrides below |\n");
    let _ = writeln!(s, "## Run\n");
    let _ = writeln!(s, "```sh");
    match m.target {
        Target::Verl => {
            let _ = writeln!(s, "pip install verl=={VERL_VERSION}   # plus vLLM / SGLang for rollouts, as verl's install guide says");
        }
        Target::FlowRl => {
            let _ = writeln!(s, "git clone https://github.com/Xuekai-Zhu/FlowRL && git -C FlowRL checkout {FLOWRL_COMMIT}");
            let _ = writeln!(s, "pip install -e FlowRL/verl_FlowRL");
            let _ = writeln!(s, "export FLOWRL_DIR=$PWD/FlowRL/verl_FlowRL");
        }
    }
    let model = ctx.model.map(|p| format!("MODEL_PATH={p} ")).unwrap_or_else(|| "MODEL_PATH=/path/to/model ".into());
    let _ = writeln!(s, "{model}N_GPUS=8 bash run.sh            # more Hydra overrides may follow");
    let _ = writeln!(s, "```\n");
    match m.target {
        Target::Verl => {
            let _ = writeln!(s, "The overrides are composed against verl {VERL_VERSION}'s `ppo_trainer.yaml` by retort's test suite (every key exists and has the default's type).\n");
        }
        Target::FlowRl => {
            let _ = writeln!(
                s,
                "FlowRL runs in the authors' verl fork (Xuekai-Zhu/FlowRL, `verl_FlowRL/`, read at commit `{FLOWRL_COMMIT}`), \
                 which replaces the PPO loss of verl's actor with the trajectory-balance loss. Its config is verl {FLOWRL_VERL_BASE}'s \
                 `ppo_trainer.yaml` (retort's test suite composes the overrides against it) plus `+actor_rollout_ref.actor.porj_layer` \
                 (sic: the depth of the Z head `proj_z`). β = 15 and the importance-weight clamp `max = 10` are literals in the fork's \
                 `dp_actor.py`, not keys; they match this stage unless listed under *Not mapped*.\n"
            );
        }
    }
    let _ = writeln!(s, "`MODEL_PATH` defaults to {}.", match ctx.model {
        Some(p) => format!("`{p}`"),
        None => format!("nothing: the stage starts from `{}`, which retort trains; run the profile and export again with `--run RUN_DIR`, or set it", ctx.model_ref),
    });
    let (tokens, set, measured) = ctx.prompt_tokens;
    let why = if set {
        "the stage's `max_prompt_tokens`"
    } else if measured {
        "the longest prompt, measured with the model's tokenizer"
    } else {
        "an assumption (no tokenizer at hand; built-in tasks ≤ 64, JSONL ≤ 1024): set `max_prompt_tokens` in the profile, or override `data.max_prompt_length`"
    };
    let _ = writeln!(s, "`data.max_prompt_length` = {tokens} is {why}.\n");

    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(s, "Each row: `data_source` = `retort/<verifier>` (`math`, `code` or the task name), `prompt` = `[{{role: user, content: <retort's prompt>}}]`,");
    let _ = writeln!(s, "`ability`, `reward_model` = `{{style: rule, ground_truth}}` (the gold answer for math; JSON of the instance data for a built-in task,");
    let _ = writeln!(s, "of the tests for code), `extra_info` = `{{split, index, id}}` (retort's problem id).");
    if ctx.cfg.source.chat {
        let _ = writeln!(s, "The stage renders prompts through the model's chat template as one user turn (`chat = true`), as verl does with these messages.\n");
    } else if m.target == Target::Verl {
        let _ = writeln!(
            s,
            "The stage feeds the prompt text without a chat template (`chat = false`); verl always applies one, so run.sh passes \
             `data.apply_chat_template_kwargs.chat_template` = `{}`, which renders the message's text as is (the same tokens).\n",
            super::mapping::RAW_TEMPLATE
        );
    } else {
        let _ = writeln!(s, "The stage feeds the prompt text without a chat template (`chat = false`); the fork has no key for that: see *Not mapped*.\n");
    }

    let _ = writeln!(s, "## Reward\n");
    let _ = writeln!(s, "`reward.py` gives verl the score retort's rollouts get: the verifier's reward{}{}.",
        if ctx.cfg.format_reward.is_some() { ", then the stage's format rule (`format_reward`)" } else { "" },
        if ctx.cfg.overlong.is_some() { "; the overlong penalty is verl's DAPO reward manager (`reward_kwargs.overlong_buffer_cfg`), as retort computes it" } else { "" });
    let _ = writeln!(s, "- `countdown`, `arithmetic`, `subset-sum`: Python ports of retort's verifiers (same parser, same integer rules).");
    let _ = writeln!(s, "- `math` and `code`: reward.py runs retort's own verifier, `$RETORT_BIN reward test --json` (the same code, so the same");
    let _ = writeln!(s, "  verdicts; the binary must be on every reward worker). retort's math grader is about 2000 lines of extraction, LaTeX");
    let _ = writeln!(s, "  normalisation and symbolic equivalence: a Python copy would drift, so there is none. Code runs in retort's local");
    let _ = writeln!(s, "  sandbox (`python3` in a subprocess with retort's time and memory limits), not in verl's sandbox-fusion service.");
    let _ = writeln!(s, "The return value is `{{\"score\": …, \"acc\": 0|1}}` (verl logs `acc`).\n");

    let _ = writeln!(s, "## Settings mapped\n");
    let _ = writeln!(s, "| verl override | from retort |\n| --- | --- |");
    for o in &m.overrides {
        let _ = writeln!(s, "| `{}` | {} |", cell(&o.arg()), cell(&o.from));
    }
    let _ = writeln!(s, "| `trainer.n_gpus_per_node`, `trainer.nnodes` | `N_GPUS`, `NNODES` (retort runs on one device) |\n");
    let _ = writeln!(s, "## Not mapped\n");
    if m.unmapped.is_empty() {
        let _ = writeln!(s, "Every setting of this stage maps to a verl key.\n");
    } else {
        let _ = writeln!(s, "| retort key | value | why |\n| --- | --- | --- |");
        for u in &m.unmapped {
            let _ = writeln!(s, "| `{}` | `{}` | {} |", cell(&u.key), cell(&u.value), cell(&u.why));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Differences worth knowing\n");
    for n in &m.notes {
        let _ = writeln!(s, "- {n}");
    }
    let _ = writeln!(s, "- verl samples with vLLM / SGLang in bf16 and trains with FSDP; retort samples and trains in f32 on one device, so runs agree in settings, not bit for bit.");
    let _ = writeln!(s, "- retort's metrics (diversity, pass@k to large k, entropy by position) are not logged by verl; evaluate verl's checkpoints with `retort eval` (they are Hugging Face folders after verl's model merger).");
    s
}
