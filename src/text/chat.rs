//! Chat templates rendered like `transformers.apply_chat_template`.
//!
//! transformers compiles `tokenizer_config.json`'s `chat_template` in
//! `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
//! extensions=[loopcontrols])`, adds the globals `raise_exception` and
//! `strftime_now`, replaces `tojson` with Python's `json.dumps` and renders
//! with `messages`, `add_generation_prompt`, `tools` and the special tokens
//! (`bos_token`, `eos_token`, ...). jinja2's `keep_trailing_newline` stays at
//! its default (off: one newline at the very end of the template source is
//! dropped), and so it does here. Python string methods (`strip`,
//! `startswith`, `split`, ...) come from minijinja-contrib's pycompat.
//! A model was trained on exactly that text, so any difference is a bug.

use super::pyjson::tojson_filter;
use super::{Result, TextError};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

const TEMPLATE_NAME: &str = "chat_template";

/// One turn of a conversation. Field order matches the dicts transformers
/// users pass (`{"role": ..., "content": ...}`), which `tojson` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: content.into() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template plus the special-token strings it may print.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Special tokens exposed to the template by name (`bos_token`, ...).
    special_tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("special_tokens", &self.special_tokens).finish()
    }
}

impl ChatTemplate {
    /// Compile `source`; a syntax error is reported with its line.
    /// `special_tokens` are (name, text) pairs such as ("bos_token", "<s>").
    pub fn new(source: &str, special_tokens: Vec<(String, String)>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson_filter);
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(template_error)?;
        Ok(ChatTemplate { env, special_tokens })
    }

    /// Render the conversation; `add_generation_prompt` appends the header
    /// that opens the assistant's turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, &[])
    }

    /// Like [`render`](Self::render) with extra template variables
    /// (e.g. `("enable_thinking", Value::from(false))`).
    pub fn render_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        extra: &[(&str, Value)],
    ) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(template_error)?;
        let mut context: Vec<(String, Value)> = vec![
            ("messages".to_string(), Value::from_serialize(messages)),
            ("add_generation_prompt".to_string(), Value::from(add_generation_prompt)),
            ("tools".to_string(), Value::from(())),
        ];
        for (name, text) in &self.special_tokens {
            context.push((name.clone(), Value::from(text.as_str())));
        }
        for (name, value) in extra {
            context.push((name.to_string(), value.clone()));
        }
        let context: Value = context.into_iter().collect();
        template.render(context).map_err(template_error)
    }
}

/// `raise_exception(message)`: templates call it to reject a conversation
/// (e.g. "Conversation roles must alternate user/assistant/...").
fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the local time, as transformers' global does
/// (Llama 3.1 templates print today's date with it).
fn strftime_now(format: String) -> String {
    chrono::Local::now().format(&format).to_string()
}

/// Keep the template's own message and line; drop minijinja's internals.
fn template_error(error: Error) -> TextError {
    let message = match error.detail() {
        Some(detail) => format!("{detail} ({})", error.kind()),
        None => error.kind().to_string(),
    };
    TextError::Template { line: error.line(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(source: &str, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        ChatTemplate::new(source, vec![("bos_token".into(), "<s>".into()), ("eos_token".into(), "</s>".into())])?
            .render(messages, add_generation_prompt)
    }

    #[test]
    fn raise_exception_reports_message_and_line() {
        let source = "{% for m in messages %}\n{% if m.role == 'tool' %}\n{{ raise_exception('tools are not supported') }}\n{% endif %}\n{% endfor %}";
        let error = render(source, &[Message::new("tool", "x")], false).unwrap_err().to_string();
        assert!(error.contains("tools are not supported"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn syntax_error_reports_line() {
        let source = "{% for m in messages %}\n{{ m.content }\n{% endfor %}";
        let error = ChatTemplate::new(source, vec![]).unwrap_err().to_string();
        assert!(error.starts_with("chat template error at line 2"), "{error}");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_jinja2() {
        // jinja2 with trim_blocks+lstrip_blocks: block lines vanish entirely,
        // and the one newline that ends the source is dropped.
        let source = "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content }}\n    {% endif %}\n{% endfor %}\n";
        let text = render(source, &[Message::user("a"), Message::assistant("b"), Message::user("c")], false).unwrap();
        assert_eq!(text, "U:a\nU:c\n");
    }

    #[test]
    fn drops_one_trailing_newline_like_jinja2_default() {
        // jinja2's keep_trailing_newline=False, which transformers keeps.
        assert_eq!(render("{{ bos_token }}x\n\n", &[], false).unwrap(), "<s>x\n");
    }

    #[test]
    fn python_string_methods_and_tojson() {
        let source = "{{ messages[0].content.strip().split(',') | tojson }}|{{ messages[0].role.startswith('us') }}|{{ messages[0] | tojson }}|{{ tools | tojson }}";
        let text = render(source, &[Message::user("  a,b <c> ")], false).unwrap();
        assert_eq!(text, r#"["a", "b <c>"]|True|{"role": "user", "content": "  a,b <c> "}|null"#);
    }

    #[test]
    fn loop_controls_and_namespace() {
        let source = "{% set ns = namespace(n=0) %}{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}{% if ns.n > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}{{ ns.n }}";
        let messages = [Message::system("s"), Message::user("u1"), Message::assistant("a1")];
        assert_eq!(render(source, &messages, false).unwrap(), "u12");
    }
}
