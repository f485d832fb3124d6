//! A trained tiny VLM must answer from its image: four plain-colour images, the same question
//! for each, the colour as the answer. Nothing but the image tells the answers apart, so a
//! training path that lost the image signal (features not placed, gradients not reaching
//! the tower or projector, positions off) would leave the model naming one colour for all.
//! This is the check that told the `adamllm-tiny` experiment's "trained models ignore the
//! image" apart from a bug (it was the vision learning rate; see the preset's comment).

#[path = "support/vlm.rs"]
mod vlm;

use std::path::Path;
use vlm::{init, ok, retort, run_dir};

const COLOURS: [(&str, [u8; 3]); 4] = [("red", [220, 30, 30]), ("green", [30, 200, 40]), ("blue", [30, 40, 220]), ("yellow", [230, 220, 30])];

fn plain_image(path: &Path, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(32, 32, image::Rgb(rgb)).save(path).unwrap();
}

#[test]
fn a_trained_tiny_vlm_names_the_colour_of_its_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (name, rgb) in COLOURS {
        plain_image(&dir.join(format!("{name}.png")), rgb);
    }
    // 200 rows, the colours in a fixed shuffled order (seeded by the row index).
    let rows: String = (0..200u64)
        .map(|i| {
            let name = COLOURS[((i * 7 + i / 3) % 4) as usize].0;
            let row = serde_json::json!({ "messages": [{ "role": "user", "content": "<image>What colour is this?" }, { "role": "assistant", "content": name }], "images": [format!("{name}.png")] });
            format!("{row}\n")
        })
        .collect();
    std::fs::write(dir.join("train.jsonl"), rows).unwrap();
    let model = init(dir);
    let runs = dir.join("runs");
    let train = dir.join("train.jsonl");
    let sets = ["steps=120", "batch_size=8", "lr=3e-3", "eval_every=0", "sample_every=0", "eval_samples=0"];
    let mut cmd = retort();
    cmd.args(["sft", model.to_str().unwrap(), "--jsonl", train.to_str().unwrap(), "--headless", "--runs-dir", runs.to_str().unwrap()]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    ok(cmd.output().unwrap());
    let run = run_dir(dir, "sft");
    let trained = run.join("sft/model");
    for (name, _) in COLOURS {
        let image = dir.join(format!("{name}.png"));
        let args = ["generate", trained.to_str().unwrap(), "--image", image.to_str().unwrap(), "--prompt", "What colour is this?", "--chat", "--greedy", "--max-new-tokens", "10"];
        let said = ok(retort().args(args).output().unwrap());
        assert_eq!(said.trim(), name, "the {name} image");
    }
}
