//! The binary, a tiny VLM folder and images for the VLM integration tests (vlm_cli, vlm_eval,
//! vlm_lora, llava_cli, llava_train).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn retort() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_retort"));
    c.env_remove("RETORT_RUNS_DIR");
    c
}

pub fn ok(out: std::process::Output) -> String {
    assert!(out.status.success(), "stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `retort model init --preset tiny-vlm --seed 5` into `dir/vlm`.
pub fn init(dir: &Path) -> PathBuf {
    let out = dir.join("vlm");
    ok(retort().args(["model", "init", "--preset", "tiny-vlm", "--seed", "5", "--out", out.to_str().unwrap()]).output().unwrap());
    out
}

/// A `size`×`size` image filled with `rgb` and a white square in one corner.
pub fn write_image(path: &Path, size: u32, rgb: [u8; 3]) {
    let img = image::RgbImage::from_fn(size, size, |x, y| if x < size / 3 && y < size / 3 { image::Rgb([255; 3]) } else { image::Rgb(rgb) });
    img.save(path).unwrap();
}

/// Four colours for the one-colour training rows.
pub const COLOURS: [(&str, [u8; 3]); 4] = [("red", [220, 20, 20]), ("green", [20, 200, 40]), ("blue", [30, 40, 220]), ("yellow", [230, 220, 30])];

/// `dir/imgs/<colour>.png` (`size`², [`write_image`]) for each of [`COLOURS`] and
/// `dir/rows.jsonl`: one "<image>Colour?" row each, answered with the colour.
pub fn write_colour_rows(dir: &Path, size: u32) {
    std::fs::create_dir_all(dir.join("imgs")).unwrap();
    let mut rows = String::new();
    for (colour, rgb) in COLOURS {
        write_image(&dir.join(format!("imgs/{colour}.png")), size, rgb);
        rows += &format!(
            "{{\"messages\":[{{\"role\":\"user\",\"content\":\"<image>Colour?\"}},{{\"role\":\"assistant\",\"content\":\"{colour}\"}}],\"images\":[\"imgs/{colour}.png\"]}}\n"
        );
    }
    std::fs::write(dir.join("rows.jsonl"), rows).unwrap();
}

/// The run folder `dir/runs/<name>-*`.
pub fn run_dir(dir: &Path, name: &str) -> PathBuf {
    std::fs::read_dir(dir.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{name}-"))).unwrap()
}

/// Every `loss` of the run's metrics events, in order.
pub fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("events.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "metrics")
        .filter_map(|v| v["values"]["loss"].as_f64())
        .collect()
}
