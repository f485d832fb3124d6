//! The memory lines of `retort model info`: the preflight's estimate for each use (inference,
//! full fine-tuning, LoRA, ...), part by part. Shared by the decoder and the VLM descriptions.

use crate::model::estimate::human_bytes;
use crate::preflight::plan::{model_info, peak, Arch, InfoShape, Target};

pub(super) fn memory_text(arch: &Arch, shape: InfoShape, target: Target) -> String {
    let mut s = String::new();
    for (title, parts) in model_info(arch, shape, target) {
        let place = if target.gpu { " (device and host)" } else { "" };
        s += &format!("memory, {title}: peak {}{place}\n", human_bytes(peak(&parts, None)));
        for p in &parts {
            s += &format!("    {:<58} {}\n", p.name, human_bytes(p.bytes));
        }
    }
    s += "(estimates; activations are a coarse count for retort's unfused training forward)\n";
    s
}
