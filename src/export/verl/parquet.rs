//! verl's RL data schema as Parquet, written with the `parquet` crate's column writers (no
//! arrow: the crate is already a dependency for reading corpora, and the schema is small
//! enough to write its repetition and definition levels by hand).
//!
//! ```text
//! data_source   string                         "retort/countdown", "retort/math", ...
//! prompt        list<struct<role, content>>    the chat messages verl renders
//! ability       string
//! reward_model  struct<style, ground_truth>    style = "rule"
//! extra_info    struct<split, index, id>
//! ```
//! Every field is `required`, so a value's definition level is 0 except inside the list,
//! whose one repeated level gives def 1 / rep 0 for a row's first message and rep 1 after.

use anyhow::{bail, Context, Result};
use parquet::basic::Compression;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::Path;
use std::sync::Arc;

/// One chat message of a prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// One row of verl's RL data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerlRow {
    pub data_source: String,
    pub prompt: Vec<Message>,
    pub ability: String,
    pub style: String,
    pub ground_truth: String,
    pub split: String,
    pub index: i64,
    pub id: String,
}

const SCHEMA: &str = "
message verl_rl_row {
  required binary data_source (UTF8);
  required group prompt (LIST) {
    repeated group list {
      required group element {
        required binary role (UTF8);
        required binary content (UTF8);
      }
    }
  }
  required binary ability (UTF8);
  required group reward_model {
    required binary style (UTF8);
    required binary ground_truth (UTF8);
  }
  required group extra_info {
    required binary split (UTF8);
    required int64 index;
    required binary id (UTF8);
  }
}
";

/// The leaf columns in schema order.
const COLUMNS: [&str; 9] = [
    "data_source",
    "prompt.list.element.role",
    "prompt.list.element.content",
    "ability",
    "reward_model.style",
    "reward_model.ground_truth",
    "extra_info.split",
    "extra_info.index",
    "extra_info.id",
];

fn bytes(s: &str) -> ByteArray {
    ByteArray::from(s.as_bytes().to_vec())
}

/// Writes `rows` to `path` (one row group, zstd), through a temporary file renamed into
/// place. Every prompt needs at least one message (verl renders an empty list as nothing).
pub fn write_rows(path: &Path, rows: &[VerlRow]) -> Result<()> {
    if let Some(r) = rows.iter().find(|r| r.prompt.is_empty()) {
        bail!("row {} ({}) has no prompt message", r.index, r.id);
    }
    let schema = Arc::new(parse_message_type(SCHEMA).context("the verl row schema")?);
    let props = Arc::new(WriterProperties::builder().set_compression(Compression::ZSTD(Default::default())).build());
    crate::fsutil::write_atomic_with(path, |tmp| -> Result<()> {
        let file = std::fs::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut writer = SerializedFileWriter::new(file, schema, props)?;
        let mut group = writer.next_row_group()?;
        for column in COLUMNS {
            let mut col = group.next_column()?.with_context(|| format!("column {column} missing from the schema"))?;
            match col.untyped() {
                ColumnWriter::ByteArrayColumnWriter(w) => match column {
                    "prompt.list.element.role" | "prompt.list.element.content" => {
                        let (mut values, mut defs, mut reps) = (Vec::new(), Vec::new(), Vec::new());
                        for r in rows {
                            for (i, m) in r.prompt.iter().enumerate() {
                                values.push(bytes(if column.ends_with("role") { &m.role } else { &m.content }));
                                defs.push(1);
                                reps.push(i16::from(i > 0));
                            }
                        }
                        w.write_batch(&values, Some(&defs), Some(&reps))?;
                    }
                    _ => {
                        let values: Vec<ByteArray> = rows
                            .iter()
                            .map(|r| {
                                bytes(match column {
                                    "data_source" => &r.data_source,
                                    "ability" => &r.ability,
                                    "reward_model.style" => &r.style,
                                    "reward_model.ground_truth" => &r.ground_truth,
                                    "extra_info.split" => &r.split,
                                    _ => &r.id,
                                })
                            })
                            .collect();
                        w.write_batch(&values, None, None)?;
                    }
                },
                ColumnWriter::Int64ColumnWriter(w) => {
                    let values: Vec<i64> = rows.iter().map(|r| r.index).collect();
                    w.write_batch(&values, None, None)?;
                }
                _ => bail!("unexpected column type for {column}"),
            }
            col.close()?;
        }
        group.close()?;
        writer.close()?;
        Ok(())
    })
}

/// Reads rows written by [`write_rows`] back with the crate's record reader (for tests and
/// `retort export`'s own check of what it wrote).
pub fn read_rows(path: &Path) -> Result<Vec<VerlRow>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::{Field, Row};
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = SerializedFileReader::new(file).with_context(|| format!("{} is not a Parquet file", path.display()))?;
    fn field<'a>(row: &'a Row, name: &str) -> Result<&'a Field> {
        row.get_column_iter().find(|(n, _)| n.as_str() == name).map(|(_, f)| f).with_context(|| format!("no field `{name}`"))
    }
    fn text(row: &Row, name: &str) -> Result<String> {
        match field(row, name)? {
            Field::Str(s) => Ok(s.clone()),
            other => bail!("field `{name}` is {other:?}, not a string"),
        }
    }
    fn group<'a>(row: &'a Row, name: &str) -> Result<&'a Row> {
        match field(row, name)? {
            Field::Group(g) => Ok(g),
            other => bail!("field `{name}` is {other:?}, not a group"),
        }
    }
    let mut out = Vec::new();
    for row in reader.get_row_iter(None)? {
        let row = row?;
        let prompt = match field(&row, "prompt")? {
            Field::ListInternal(list) => list
                .elements()
                .iter()
                .map(|m| match m {
                    Field::Group(g) => Ok(Message { role: text(g, "role")?, content: text(g, "content")? }),
                    other => bail!("a prompt message is {other:?}"),
                })
                .collect::<Result<Vec<_>>>()?,
            other => bail!("field `prompt` is {other:?}, not a list"),
        };
        let reward = group(&row, "reward_model")?;
        let extra = group(&row, "extra_info")?;
        let index = match field(extra, "index")? {
            Field::Long(i) => *i,
            other => bail!("extra_info.index is {other:?}"),
        };
        out.push(VerlRow {
            data_source: text(&row, "data_source")?,
            prompt,
            ability: text(&row, "ability")?,
            style: text(reward, "style")?,
            ground_truth: text(reward, "ground_truth")?,
            split: text(extra, "split")?,
            index,
            id: text(extra, "id")?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: i64, messages: &[(&str, &str)]) -> VerlRow {
        VerlRow {
            data_source: "retort/countdown".into(),
            prompt: messages.iter().map(|(r, c)| Message { role: r.to_string(), content: c.to_string() }).collect(),
            ability: "countdown".into(),
            style: "rule".into(),
            ground_truth: format!("{{\"target\":{i}}}"),
            split: "train".into(),
            index: i,
            id: format!("countdown-{i:06}"),
        }
    }

    #[test]
    fn rows_round_trip_with_one_and_several_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.parquet");
        let rows = vec![
            row(0, &[("user", "countdown 1 2 -> 3\n")]),
            row(1, &[("system", "be brief"), ("user", "ünïcode ✓\n"), ("assistant", "")]),
            row(2, &[("user", "")]),
        ];
        write_rows(&path, &rows).unwrap();
        assert_eq!(read_rows(&path).unwrap(), rows);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["train.parquet"], "no temporary file is left behind");
    }

    #[test]
    fn a_row_without_messages_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_rows(&dir.path().join("x.parquet"), &[row(0, &[])]).unwrap_err().to_string();
        assert!(err.contains("no prompt message"), "{err}");
        assert!(!dir.path().join("x.parquet").exists());
    }
}
