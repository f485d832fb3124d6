//! Python's `json.dumps`, for the `tojson` filter of chat templates.
//!
//! transformers replaces jinja2's `tojson` (which HTML-escapes `<`, `>`, `&`,
//! `'`) with `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
//! sort_keys=False)`. Templates that embed tool schemas print that text into
//! the prompt, so the exact spacing matters: with no indent Python separates
//! items with ", " and keys with ": "; with an indent it uses "," and ": ".
//! Maps keep insertion order (minijinja's `preserve_order` feature).

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};

/// Options of `json.dumps` that chat templates pass.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub indent: Option<usize>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
    pub ensure_ascii: bool,
}

impl DumpOptions {
    /// Python's defaults for a given indent (see module doc).
    pub fn python_default(indent: Option<usize>) -> Self {
        let item_separator = if indent.is_some() { "," } else { ", " };
        DumpOptions {
            indent,
            item_separator: item_separator.to_string(),
            key_separator: ": ".to_string(),
            sort_keys: false,
            ensure_ascii: false,
        }
    }
}

/// The `tojson` filter: `value | tojson(indent=2, sort_keys=true, ...)`.
pub fn tojson_filter(value: Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let mut options = DumpOptions::python_default(indent);
    if let Some(separators) = kwargs.get::<Option<Value>>("separators")? {
        if !separators.is_none() {
            let item: String = separators.get_item_by_index(0)?.to_string();
            let key: String = separators.get_item_by_index(1)?.to_string();
            options.item_separator = item;
            options.key_separator = key;
        }
    }
    if let Some(sort_keys) = kwargs.get::<Option<bool>>("sort_keys")? {
        options.sort_keys = sort_keys;
    }
    if let Some(ensure_ascii) = kwargs.get::<Option<bool>>("ensure_ascii")? {
        options.ensure_ascii = ensure_ascii;
    }
    kwargs.assert_all_used()?;
    let mut out = String::new();
    dump(&value, &options, 0, &mut out)?;
    Ok(out)
}

/// Serialize `value` into `out` as Python's json module would.
pub fn dump(value: &Value, options: &DumpOptions, depth: usize, out: &mut String) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => dump_number(value, out)?,
        ValueKind::String | ValueKind::Plain => dump_string(value.as_str().unwrap_or(&value.to_string()), options.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            dump_sequence(&items, options, depth, out)?;
        }
        ValueKind::Map => dump_map(value, options, depth, out)?,
        ValueKind::Bytes | ValueKind::Invalid => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson cannot serialize a value of type {}", value.kind()),
            ))
        }
        // ValueKind is non-exhaustive; a new kind is not JSON we know how to write.
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson cannot serialize a value of type {}", value.kind()),
            ))
        }
    }
    Ok(())
}

fn newline_and_indent(options: &DumpOptions, depth: usize, out: &mut String) {
    if let Some(indent) = options.indent {
        out.push('\n');
        out.push_str(&" ".repeat(indent * depth));
    }
}

fn dump_sequence(items: &[Value], options: &DumpOptions, depth: usize, out: &mut String) -> Result<(), Error> {
    if items.is_empty() {
        out.push_str("[]");
        return Ok(());
    }
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push_str(&options.item_separator);
        }
        newline_and_indent(options, depth + 1, out);
        dump(item, options, depth + 1, out)?;
    }
    newline_and_indent(options, depth, out);
    out.push(']');
    Ok(())
}

fn dump_map(value: &Value, options: &DumpOptions, depth: usize, out: &mut String) -> Result<(), Error> {
    let mut keys: Vec<Value> = value.try_iter()?.collect();
    if options.sort_keys {
        keys.sort();
    }
    if keys.is_empty() {
        out.push_str("{}");
        return Ok(());
    }
    out.push('{');
    for (index, key) in keys.iter().enumerate() {
        if index > 0 {
            out.push_str(&options.item_separator);
        }
        newline_and_indent(options, depth + 1, out);
        // Python converts non-string keys with str(); numbers and bools are the usual ones.
        let key_text = match key.as_str() {
            Some(text) => text.to_string(),
            None => key.to_string(),
        };
        dump_string(&key_text, options.ensure_ascii, out);
        out.push_str(&options.key_separator);
        dump(&value.get_item(key)?, options, depth + 1, out)?;
    }
    newline_and_indent(options, depth, out);
    out.push('}');
    Ok(())
}

fn dump_number(value: &Value, out: &mut String) -> Result<(), Error> {
    if value.is_integer() {
        out.push_str(&value.to_string());
        return Ok(());
    }
    let float = f64::try_from(value.clone())?;
    out.push_str(&python_float_repr(float));
    Ok(())
}

/// Python's `repr(float)` as json writes it: shortest round-trip digits,
/// scientific notation below 1e-4 or from 1e16 on, `NaN`/`Infinity` spelled out.
pub fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..16).contains(&exponent) {
        let plain = format!("{value}");
        if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        }
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    }
}

/// A JSON string literal with Python's escapes: `"` `\` and control
/// characters always; everything above ASCII too when `ensure_ascii`.
fn dump_string(text: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dumps(value: serde_json::Value, indent: Option<usize>) -> String {
        let mut out = String::new();
        dump(&Value::from_serialize(&value), &DumpOptions::python_default(indent), 0, &mut out).unwrap();
        out
    }

    #[test]
    fn matches_python_default_spacing_and_order() {
        // json.dumps({"name": "f", "b": [1, 2.5, None, True], "a": {}}, ensure_ascii=False)
        #[derive(serde::Serialize)]
        struct Unsorted {
            name: &'static str,
            b: serde_json::Value,
            a: serde_json::Value,
        }
        let value = Unsorted { name: "f", b: serde_json::json!([1, 2.5, null, true]), a: serde_json::json!({}) };
        let mut out = String::new();
        dump(&Value::from_serialize(&value), &DumpOptions::python_default(None), 0, &mut out).unwrap();
        assert_eq!(out, r#"{"name": "f", "b": [1, 2.5, null, true], "a": {}}"#);
    }

    #[test]
    fn matches_python_indented_layout() {
        // json.dumps({"a": [1, "x"], "b": []}, indent=2)
        let value = serde_json::json!({"a": [1, "x"], "b": []});
        assert_eq!(dumps(value, Some(2)), "{\n  \"a\": [\n    1,\n    \"x\"\n  ],\n  \"b\": []\n}");
    }

    #[test]
    fn escapes_like_python_without_html_escaping() {
        let value = serde_json::json!("<tag> & 'q' \"d\" \\ \n\t\u{1} é");
        assert_eq!(dumps(value, None), "\"<tag> & 'q' \\\"d\\\" \\\\ \\n\\t\\u0001 é\"");
    }

    #[test]
    fn float_repr_follows_python() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(1e-5), "1e-05");
        assert_eq!(python_float_repr(1.5e16), "1.5e+16");
        assert_eq!(python_float_repr(123456.789), "123456.789");
        assert_eq!(python_float_repr(f64::NEG_INFINITY), "-Infinity");
    }
}
