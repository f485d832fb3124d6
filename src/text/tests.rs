//! Tests of the tokenizer, the tiny tokenizer builder and chat templates
//! loaded from model directories. Expected prompts are written by hand from
//! the published formats (ChatML, Llama 3).

use super::tiny::{self, build_char_tokenizer, VOCAB_SIZE};
use super::*;
use crate::rng::Rng;
use std::path::Path;

fn tiny_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    build_char_tokenizer(dir.path()).unwrap();
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
}

fn random_printable(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| if rng.bool(0.05) { '\n' } else { char::from(32 + rng.below(95) as u8) })
        .collect()
}

#[test]
fn tiny_round_trips_printable_text_one_token_per_char() {
    let dir = tiny_dir();
    let tokenizer = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(tokenizer.vocab_size(), VOCAB_SIZE);
    assert_eq!(VOCAB_SIZE, 99);
    let vocabulary = tiny::vocabulary();
    let mut rng = Rng::new(7);
    for round in 0..50 {
        let text = random_printable(&mut rng, 1 + round * 7);
        let ids = tokenizer.encode(&text, true).unwrap();
        assert_eq!(ids.len(), text.chars().count(), "{text:?}");
        for (id, ch) in ids.iter().zip(text.chars()) {
            // The vocabulary is written in the byte-level alphabet (space `Ġ`, newline `Ċ`).
            let written = match ch {
                ' ' => "Ġ".to_string(),
                '\n' => "Ċ".to_string(),
                c => c.to_string(),
            };
            assert_eq!(vocabulary[*id as usize], written, "{ch:?}");
            assert_eq!(tokenizer.decode(&[*id], false).unwrap(), ch.to_string());
        }
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn tiny_ids_follow_the_documented_order() {
    let dir = tiny_dir();
    let tokenizer = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(tokenizer.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(tokenizer.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tokenizer.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tokenizer.token_to_id("Ċ"), Some(3));
    assert_eq!(tokenizer.token_to_id("Ġ"), Some(4));
    assert_eq!(tokenizer.encode("\n", false).unwrap(), vec![3]);
    assert_eq!(tokenizer.encode(" ", false).unwrap(), vec![4]);
    assert_eq!(tokenizer.encode("  \n\n x", false).unwrap(), vec![4, 4, 3, 3, 4, tokenizer.token_to_id("x").unwrap()]);
    assert_eq!(tokenizer.token_to_id("A"), Some(4 + 65 - 32));
    assert_eq!(tokenizer.token_to_id("~"), Some(98));
}

#[test]
fn tiny_recognises_special_tokens_as_single_tokens() {
    let dir = tiny_dir();
    let tokenizer = Tokenizer::load(dir.path()).unwrap();
    let ids = tokenizer.encode("<|im_start|>ab<|im_end|>\n<|endoftext|>", false).unwrap();
    let a = tokenizer.token_to_id("a").unwrap();
    let b = tokenizer.token_to_id("b").unwrap();
    assert_eq!(ids, vec![1, a, b, 2, 3, 0]);
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), "<|im_start|>ab<|im_end|>\n<|endoftext|>");
    assert_eq!(tokenizer.decode(&ids, true).unwrap(), "ab\n");
    // A partial marker is ordinary text.
    assert_eq!(tokenizer.encode("<|im_", false).unwrap().len(), 5);
}

#[test]
fn tiny_special_ids() {
    let dir = tiny_dir();
    let tokenizer = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(tokenizer.bos_id(), None);
    assert_eq!(tokenizer.eos_id(), Some(0));
    assert_eq!(tokenizer.pad_id(), Some(0));
    assert_eq!(tokenizer.eos_ids(), vec![0]);
    let tokenizer = tokenizer.with_model_eos(&[2, 0]);
    assert_eq!(tokenizer.eos_ids(), vec![0, 2]);
}

#[test]
fn tiny_chat_template_renders_chatml() {
    let dir = tiny_dir();
    let tokenizer = Tokenizer::load(dir.path()).unwrap();
    let messages = [Message::user("2+2?"), Message::assistant("4"), Message::user("3+3?")];
    let prompt = tokenizer.apply_chat_template(&messages, true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n"
    );
    let closed = tokenizer.apply_chat_template(&messages[..2], false).unwrap();
    assert_eq!(closed, "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n");
    let ids = tokenizer.encode(&prompt, false).unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 4);
}

#[test]
fn a_template_in_chat_template_jinja_is_used_when_the_config_has_none() {
    let dir = tiny_dir();
    let expected = Tokenizer::load(dir.path()).unwrap().apply_chat_template(&[Message::user("hi")], true).unwrap();
    let mut template = String::new();
    edit_config(dir.path(), |c| template = c.as_object_mut().unwrap().remove("chat_template").unwrap().as_str().unwrap().to_string());
    let e = Tokenizer::load(dir.path()).unwrap().apply_chat_template(&[Message::user("hi")], true).unwrap_err().to_string();
    assert!(e.contains("no `chat_template` and there is no chat_template.jinja"), "{e}");
    // As transformers ≥ 4.44 saves it: the template alone in chat_template.jinja.
    std::fs::write(dir.path().join(CHAT_TEMPLATE_FILE), &template).unwrap();
    let got = Tokenizer::load(dir.path()).unwrap().apply_chat_template(&[Message::user("hi")], true).unwrap();
    assert_eq!(got, expected);
    // The config's own key wins over the file.
    edit_config(dir.path(), |c| c["chat_template"] = serde_json::json!("{{ 'from config' }}"));
    let got = Tokenizer::load(dir.path()).unwrap().apply_chat_template(&[Message::user("hi")], true).unwrap();
    assert_eq!(got, "from config");
}

const QWEN25_STYLE: &str = "{%- if messages[0]['role'] == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- else %}
    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == \"assistant\") %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
";

#[test]
fn qwen25_style_template_from_named_list() {
    let dir = tiny_dir();
    edit_config(dir.path(), |config| {
        config["chat_template"] = serde_json::json!([
            {"name": "tool_use", "template": "{{ raise_exception('wrong template') }}"},
            {"name": "default", "template": QWEN25_STYLE},
        ]);
    });
    let tokenizer = Tokenizer::load(dir.path()).unwrap();
    let prompt = tokenizer.apply_chat_template(&[Message::user("What is 2+2?")], true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let messages = [Message::system("Be terse."), Message::user("Hi"), Message::assistant("Hello.")];
    let prompt = tokenizer.apply_chat_template(&messages, false).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
    );
}

const LLAMA3_STYLE: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

#[test]
fn llama3_style_template_uses_bos_and_trim() {
    let specials = vec![("bos_token".to_string(), "<|begin_of_text|>".to_string())];
    let template = ChatTemplate::new(LLAMA3_STYLE, specials).unwrap();
    let messages = [Message::system("Be brief. "), Message::user("  Hi\n")];
    assert_eq!(
        template.render(&messages, true).unwrap(),
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
         <|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        template.render(&messages[1..], false).unwrap(),
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    );
}

#[test]
fn special_tokens_given_as_objects_reach_the_template() {
    let dir = tiny_dir();
    std::fs::remove_file(dir.path().join("special_tokens_map.json")).unwrap();
    edit_config(dir.path(), |config| {
        config["bos_token"] = serde_json::json!({"content": "<|im_start|>", "lstrip": false, "__type": "AddedToken"});
        config["eos_token"] = serde_json::json!({"content": "<|im_end|>"});
        config["chat_template"] = serde_json::json!("{{ bos_token }}{{ messages[0].content }}{{ eos_token }}");
    });
    let tokenizer = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(tokenizer.bos_id(), Some(1));
    assert_eq!(tokenizer.eos_id(), Some(2));
    assert_eq!(tokenizer.apply_chat_template(&[Message::user("x")], false).unwrap(), "<|im_start|>x<|im_end|>");
}

#[test]
fn special_tokens_map_overrides_config() {
    let dir = tiny_dir();
    std::fs::write(dir.path().join("special_tokens_map.json"), r#"{"eos_token": "<|im_end|>"}"#).unwrap();
    let tokenizer = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(tokenizer.eos_id(), Some(2));
    assert_eq!(tokenizer.pad_id(), Some(0));
}

#[test]
fn bad_tokenizer_json_names_file_and_parse_error() {
    let dir = tiny_dir();
    std::fs::write(dir.path().join("tokenizer.json"), "{\"model\": {\"type\": \"BPE\",").unwrap();
    let error = Tokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(error.contains("tokenizer.json is not a valid tokenizer.json"), "{error}");
    assert!(error.contains("EOF while parsing"), "{error}");
    assert!(error.contains(&dir.path().display().to_string()), "{error}");
}

#[test]
fn missing_tokenizer_json_names_file() {
    let dir = tempfile::tempdir().unwrap();
    let error = Tokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(error.starts_with(&format!("cannot read {}", dir.path().join("tokenizer.json").display())), "{error}");
}

#[test]
fn unknown_special_token_is_reported() {
    let dir = tiny_dir();
    edit_config(dir.path(), |config| config["bos_token"] = serde_json::json!("<s>"));
    let error = Tokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(error.contains("tokenizer_config.json: special token bos_token = \"<s>\" is not in the vocabulary"), "{error}");
}

#[test]
fn no_chat_template_is_a_clear_error() {
    let dir = tiny_dir();
    edit_config(dir.path(), |config| config.as_object_mut().unwrap().remove("chat_template").map(|_| ()).unwrap());
    let tokenizer = Tokenizer::load(dir.path()).unwrap();
    let error = tokenizer.apply_chat_template(&[Message::user("x")], true).unwrap_err().to_string();
    assert!(error.contains("tokenizer_config.json has no `chat_template`"), "{error}");
}

#[test]
fn template_error_at_load_reports_line() {
    let dir = tiny_dir();
    edit_config(dir.path(), |config| config["chat_template"] = serde_json::json!("ok\n{% if %}"));
    let error = Tokenizer::load(dir.path()).unwrap_err().to_string();
    assert!(error.starts_with("chat template error at line 2"), "{error}");
}

#[test]
fn model_eos_ids_prefer_generation_config() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(model_eos_ids(dir.path()).unwrap(), Vec::<u32>::new());
    std::fs::write(dir.path().join("config.json"), r#"{"eos_token_id": 151643}"#).unwrap();
    assert_eq!(model_eos_ids(dir.path()).unwrap(), vec![151643]);
    std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": [151645, 151643]}"#).unwrap();
    assert_eq!(model_eos_ids(dir.path()).unwrap(), vec![151645, 151643]);
    std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": "x"}"#).unwrap();
    let error = model_eos_ids(dir.path()).unwrap_err().to_string();
    assert!(error.contains("generation_config.json: key `eos_token_id` must be an integer"), "{error}");
}

/// A Python with transformers, when this machine has one: `RETORT_PYTHON`,
/// else .venv/bin/python (what .ci/run installs), else python3.
fn python_with_transformers() -> Option<String> {
    let candidates = [std::env::var("RETORT_PYTHON").ok(), Some(".venv/bin/python".into()), Some("python3".into())];
    candidates.into_iter().flatten().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import transformers"])
            .output()
            .map(|out| out.status.success())
            .unwrap_or(false)
    })
}

const TRANSFORMERS_PROBE: &str = r#"
import json, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
text, messages = sys.argv[2], json.loads(sys.argv[3])
ids = tok.encode(text, add_special_tokens=True)
print(json.dumps({
    "ids": ids,
    "decoded": tok.decode(ids),
    "eos": tok.eos_token_id, "pad": tok.pad_token_id, "bos": tok.bos_token_id,
    "size": len(tok),
    "chat": tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
}))
"#;

/// The tiny directory, a tool-free Qwen2.5-style template and a Llama 3
/// template give the same ids and prompts in transformers (skipped when no
/// Python with transformers is installed).
#[test]
fn transformers_agrees_when_available() {
    let Some(python) = python_with_transformers() else {
        eprintln!("skipped: no Python with transformers (set RETORT_PYTHON)");
        return;
    };
    let text = "<|im_start|>user\nHello, {world}! 1+1=2 ~`|\\<|im_end|>\n";
    let messages = [Message::system("Be terse."), Message::user("  What is 2+2? "), Message::assistant("4")];
    let templates = [None, Some(QWEN25_STYLE), Some(LLAMA3_STYLE)];
    for template in templates {
        let dir = tiny_dir();
        if let Some(source) = template {
            edit_config(dir.path(), |config| {
                config["chat_template"] = serde_json::json!(source);
                config["bos_token"] = serde_json::json!("<|im_start|>");
            });
        }
        let tokenizer = Tokenizer::load(dir.path()).unwrap();
        let output = std::process::Command::new(&python)
            .args(["-c", TRANSFORMERS_PROBE])
            .arg(dir.path())
            .arg(text)
            .arg(serde_json::to_string(&messages).unwrap())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let reference: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let ids = tokenizer.encode(text, true).unwrap();
        assert_eq!(serde_json::json!(ids), reference["ids"]);
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), reference["decoded"].as_str().unwrap());
        assert_eq!(serde_json::json!(tokenizer.eos_id()), reference["eos"]);
        assert_eq!(serde_json::json!(tokenizer.pad_id()), reference["pad"]);
        assert_eq!(serde_json::json!(tokenizer.bos_id()), reference["bos"]);
        assert_eq!(serde_json::json!(tokenizer.vocab_size()), reference["size"]);
        let prompt = tokenizer.apply_chat_template(&messages, true).unwrap();
        assert_eq!(prompt, reference["chat"].as_str().unwrap(), "template {template:?}");
    }
}
