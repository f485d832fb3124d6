//! The eval stage's `images` sets on the tiny VLM: greedy answers equal to `retort generate
//! --image --greedy` on the same prompt, batched rows equal to one at a time, scores per row
//! and per set as the metrics define them, and a missing image named by file and line before
//! any model loads.

#[path = "support/vlm.rs"]
mod vlm;
use retort::metrics::{answer_match, open_answer};
use std::path::{Path, PathBuf};
use vlm::{ok, retort, run_dir, write_image};

const MAX_NEW: usize = 5;

fn profile(dir: &Path, model: &Path, name: &str, batch: usize) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "[run]\nname = \"{name}\"\nseed = 1\n\n[[stage]]\nkind = \"eval\"\nname = \"eval\"\nmodels = [{:?}]\nmax_new_tokens = {MAX_NEW}\nimage_batch_size = {batch}\n\
             images = [{{ file = \"data/open.jsonl\", metric = \"recall\" }}, {{ file = \"data/open.jsonl\", metric = \"rouge_l\" }}, {{ file = \"data/choice.jsonl\", metric = \"choice\" }}]\n",
            model.to_str().unwrap()
        ),
    )
    .unwrap();
    p
}

#[test]
fn image_sets_answer_greedily_and_score_each_row() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let model = dir.join("vlm");
    ok(retort().args(["model", "init", "--preset", "tiny-vlm", "--seed", "5", "--out", model.to_str().unwrap()]).output().unwrap());
    std::fs::create_dir_all(dir.join("data/img")).unwrap();
    let colours = [("red", [220u8, 20, 20], 56u32), ("green", [20, 200, 40], 84), ("blue", [30, 40, 220], 112)];
    for (c, rgb, size) in colours {
        write_image(&dir.join(format!("data/img/{c}.png")), size, rgb);
    }
    // The untrained model's greedy answer to the first row, from `retort generate`.
    let first = ok(retort()
        .args(["generate", model.to_str().unwrap(), "--greedy", "--chat", "--max-new-tokens", &MAX_NEW.to_string()])
        .args(["--image", dir.join("data/img/red.png").to_str().unwrap(), "--prompt", "<image>What colour is it?"])
        .output()
        .unwrap());
    let first = first.trim().to_string();
    // Row 1's gold is that answer (an exact match); rows 2 and 3 ask other questions with golds
    // made of words the untrained model does not write.
    let open = format!(
        "{}\n{}\n{}\n",
        serde_json::json!({"images": ["img/red.png"], "prompt": "<image>What colour is it?", "answer": first}),
        serde_json::json!({"images": ["img/green.png"], "prompt": "Describe <image> please.", "answer": "qqqq zzzz"}),
        serde_json::json!({"images": ["img/blue.png", "img/red.png"], "prompt": "Compare.", "answer": "xxxx"}),
    );
    std::fs::write(dir.join("data/open.jsonl"), open).unwrap();
    let choice = format!(
        "{}\n{}\n",
        serde_json::json!({"images": ["img/red.png"], "prompt": "<image>What colour is it?", "answer": "A", "options": [first, "qqqq"]}),
        serde_json::json!({"images": ["img/red.png"], "prompt": "<image>What colour is it?", "answer": "qqqq", "options": [first, "qqqq"]}),
    );
    std::fs::write(dir.join("data/choice.jsonl"), choice).unwrap();

    let mut outcomes = Vec::new();
    for (name, batch) in [("one", 1), ("batched", 3)] {
        let p = profile(dir, &model, name, batch);
        ok(retort().args(["run", p.to_str().unwrap(), "--headless", "--name", name]).current_dir(dir).output().unwrap());
        let run = run_dir(dir, name);
        let rows: Vec<serde_json::Value> = std::fs::read_to_string(run.join("eval/images-vlm.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 3 + 3 + 2, "a line per row of each set");
        let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("eval/results.json")).unwrap()).unwrap();
        let sets = &results["images"][0]["sets"];
        eprintln!("{name}: {}", serde_json::to_string_pretty(sets).unwrap());
        // The first row's response is `retort generate`'s; its gold is that text.
        assert_eq!(rows[0]["response"], first.as_str(), "{}", rows[0]);
        assert_eq!(rows[0]["exact"].as_f64(), Some(1.0));
        // Every row's scores are the metrics of its response and gold (the metrics' values
        // are checked by hand and against rouge-score in src/metrics/open_answer.rs).
        for r in &rows {
            let (resp, gold) = (r["response"].as_str().unwrap(), r["answer"].as_str().unwrap());
            assert_eq!(r["exact"].as_f64(), Some(answer_match::exact_match(resp, gold)), "{r}");
            assert_eq!(r["recall"].as_f64(), Some(open_answer::recall(resp, gold)), "{r}");
            assert_eq!(r["rouge_l"].as_f64(), Some(open_answer::rouge_l(resp, gold)), "{r}");
        }
        for r in &rows[1..3] {
            assert_eq!((r["recall"].as_f64(), r["rouge_l"].as_f64(), r["exact"].as_f64()), (Some(0.0), Some(0.0), Some(0.0)), "{r}");
        }
        let mean = |set: &str, key: &str| {
            let xs: Vec<f64> = rows.iter().filter(|r| r["set"] == set).map(|r| r[key].as_f64().unwrap()).collect();
            xs.iter().sum::<f64>() / xs.len() as f64
        };
        for (set, metric) in [("open", "recall"), ("open-2", "rouge_l")] {
            assert_eq!(sets[set]["score"].as_f64(), Some(mean(set, metric)), "{set}");
            assert_eq!(sets[set]["exact"].as_f64(), Some(mean(set, "exact")), "{set}");
        }
        // Choice: row 1 right (A is the response's own text), row 2 wrong.
        assert_eq!(sets["open"]["metric"], "recall");
        assert_eq!(sets["open-2"]["metric"], "rouge_l");
        assert_eq!(sets["choice"]["score"].as_f64(), Some(0.5));
        assert_eq!(sets["choice"]["rows"].as_u64(), Some(2));
        let events = std::fs::read_to_string(run.join("events.jsonl")).unwrap();
        assert!(events.contains("recall/open") && events.contains("rouge_l/open-2") && events.contains("acc/choice"), "summary keys");
        outcomes.push(rows.iter().map(|r| r["response"].as_str().unwrap().to_string()).collect::<Vec<_>>());
    }
    assert_eq!(outcomes[0], outcomes[1], "batched rows answer as one at a time");

    // A missing image fails the preflight, naming the file and line, before anything runs.
    std::fs::write(dir.join("data/choice.jsonl"), "{\"images\": [\"img/none.png\"], \"prompt\": \"q\", \"answer\": \"A\", \"options\": [\"x\"]}\n").unwrap();
    let p = profile(dir, &model, "bad", 1);
    let out = retort().args(["run", p.to_str().unwrap(), "--headless", "--name", "bad"]).current_dir(dir).output().unwrap();
    assert!(!out.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("choice.jsonl:1") && all.contains("img/none.png"), "{all}");
}
