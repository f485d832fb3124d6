//! LLaVA through the binary: `model init --preset tiny-llava` writes a folder that `model info`
//! describes, `generate --image` continues from, and the `sft` stage trains on multimodal chat
//! rows with a falling loss.

use std::path::{Path, PathBuf};
#[path = "support/vlm.rs"]
mod vlm;
use vlm::{losses, ok, retort};

fn init(dir: &Path) -> PathBuf {
    let out = dir.join("llava");
    let said = ok(retort().args(["model", "init", "--preset", "tiny-llava", "--seed", "5", "--out", out.to_str().unwrap()]).output().unwrap());
    assert!(said.contains("llava preset tiny-llava"), "{said}");
    out
}

/// A `w`×`h` image filled with `rgb` and a white square in one corner.
fn write_image(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    let img = image::RgbImage::from_fn(w, h, |x, y| if x < w / 3 && y < h / 3 { image::Rgb([255; 3]) } else { image::Rgb(rgb) });
    img.save(path).unwrap();
}

#[test]
fn model_info_describes_the_tower_projector_and_llm() {
    let d = tempfile::tempdir().unwrap();
    let dir = init(d.path());
    let info = ok(retort().args(["model", "info", dir.to_str().unwrap()]).output().unwrap());
    assert!(info.contains("LlavaForConditionalGeneration"), "{info}");
    assert!(info.contains("CLIP ViT: layers 3 (features after layer 2, vision_feature_layer -2)"), "{info}");
    assert!(info.contains("mlp2x_gelu 64 → 128 → 128"), "{info}");
    assert!(info.contains("pad to square, shortest edge to 56, center crop 56×56, then 16 image tokens"), "{info}");
    assert!(info.contains("memory, full fine-tuning"), "{info}");
}

#[test]
fn generate_takes_images_on_a_llava_folder() {
    let d = tempfile::tempdir().unwrap();
    let dir = init(d.path());
    let img = d.path().join("red.png");
    write_image(&img, 70, 40, [220, 20, 20]);
    let run = |extra: &[&str]| {
        let mut c = retort();
        c.args(["generate", dir.to_str().unwrap(), "--greedy", "--max-new-tokens", "6"]).args(extra);
        c.output().unwrap()
    };
    let a = run(&["--image", img.to_str().unwrap(), "--image", img.to_str().unwrap(), "--prompt", "<image>and<image>: colour?", "--chat"]);
    let err = String::from_utf8_lossy(&a.stderr).into_owned();
    let first = ok(a);
    assert!(err.contains("(32 from 2 image(s))"), "{err}");
    let b = run(&["--image", img.to_str().unwrap(), "--image", img.to_str().unwrap(), "--prompt", "<image>and<image>: colour?", "--chat"]);
    assert_eq!(ok(b), first, "greedy is deterministic");
    let e = run(&["--image", img.to_str().unwrap(), "--prompt", "<image><image>two?"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("2 <image> marker(s) but 1"), "{}", String::from_utf8_lossy(&e.stderr));
}

const COLOURS: [(&str, [u8; 3]); 4] = [("red", [220, 20, 20]), ("green", [20, 200, 40]), ("blue", [30, 40, 220]), ("yellow", [230, 220, 30])];

#[test]
fn multimodal_sft_trains_a_llava_folder() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = init(dir);
    std::fs::create_dir_all(dir.join("imgs")).unwrap();
    let mut rows = String::new();
    for (colour, rgb) in COLOURS {
        write_image(&dir.join(format!("imgs/{colour}.png")), 80, 60, rgb);
        rows += &format!(
            "{{\"messages\":[{{\"role\":\"user\",\"content\":\"<image>Colour?\"}},{{\"role\":\"assistant\",\"content\":\"{colour}\"}}],\"images\":[\"imgs/{colour}.png\"]}}\n"
        );
    }
    std::fs::write(dir.join("rows.jsonl"), rows).unwrap();
    let profile = dir.join("llava.toml");
    std::fs::write(
        &profile,
        format!(
            "[run]\nname = \"llava\"\nseed = 4\n\n[[stage]]\nkind = \"sft\"\nname = \"sft\"\nmodel = {:?}\nsteps = 24\nbatch_size = 4\n\
             lr = 3e-3\nwarmup_steps = 0\nmax_len = 128\ncheckpoint_every = 0\neval_every = 0\nsample_every = 0\n\n\
             [stage.data]\njsonl = {:?}\n\n[stage.vision]\ntower_lr = 1e-3\n",
            model.to_str().unwrap(),
            dir.join("rows.jsonl").to_str().unwrap()
        ),
    )
    .unwrap();
    ok(retort().args(["run", profile.to_str().unwrap(), "--headless", "--name", "llava"]).current_dir(dir).output().unwrap());
    let run = std::fs::read_dir(dir.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("llava-")).unwrap();
    let l = losses(&run);
    eprintln!("losses: {l:?}");
    assert_eq!(l.len(), 24, "one loss per step");
    let (first, last) = (l[..3].iter().sum::<f64>() / 3.0, l[21..].iter().sum::<f64>() / 3.0);
    assert!(last < 0.5 * first, "the loss falls: first steps {first:.3}, last steps {last:.3}");
    // The trained folder is a llava folder again (generate opens it).
    let img = dir.join("imgs/red.png");
    let out = retort().args(["generate", run.join("sft/model").to_str().unwrap(), "--greedy", "--max-new-tokens", "3", "--image", img.to_str().unwrap(), "--prompt", "<image>Colour?", "--chat"]).output().unwrap();
    ok(out);
}
