//! Instruction pools: JSONL files of Alpaca, ShareGPT or chat-messages records.
//!
//! Shapes accepted per line (detected by key, or forced with [`PoolOptions::format`]):
//! - Alpaca: `{"instruction": str, "input": str?, "output": str}`
//! - ShareGPT: `{"conversations": [{"from": "human"|"gpt"|"system"|..., "value": str}, ...]}`
//! - chat: `{"messages": [{"role": "user"|"assistant"|"system"|..., "content": str}, ...]}`
//!
//! Every record becomes an [`Instruction`] with a **content hash** (SHA-256 of a canonical form: the system text and
//! the `(role, content)` turns, format-independent, so the same conversation hashes the same in any shape) and a
//! **stable id**: the record's own `id` field when present, otherwise the first 16 hex digits of the content hash,
//! with `#2`, `#3`… appended to repeats in file order. Ids therefore survive reordering and edits of other lines.
//!
//! Strict mode fails on the first malformed line with its line number; lenient mode skips it and lists it in the
//! [`PoolReport`].

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Result, SelectError};

/// Who speaks a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The human / user side.
    User,
    /// The model side.
    Assistant,
    /// A tool or function result.
    Tool,
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
}

/// The shape a record was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolFormat {
    /// `instruction` / `input` / `output`.
    Alpaca,
    /// `conversations: [{from, value}]`.
    ShareGpt,
    /// `messages: [{role, content}]`.
    Chat,
}

crate::named_enum!(PoolFormat, "pool format", { Alpaca => "alpaca", ShareGpt => "share-gpt", Chat => "chat" });

/// Alpaca's three fields, kept when the record came in that shape (Rocket's retrieval text uses them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlpacaFields {
    /// The task.
    pub instruction: String,
    /// Optional context ("" when absent).
    pub input: String,
    /// The answer.
    pub output: String,
}

/// One instruction record, normalised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instruction {
    /// Stable id (see the module docs).
    pub id: String,
    /// Hex SHA-256 of the canonical form.
    pub content_hash: String,
    /// 1-based line (JSONL) or starting line (JSON array) of the record.
    pub line: usize,
    /// Shape it was read from.
    pub format: PoolFormat,
    /// System prompt, if any.
    pub system: Option<String>,
    /// Turns in order; at least one.
    pub turns: Vec<Turn>,
    /// Alpaca's fields when read from that shape.
    pub alpaca: Option<AlpacaFields>,
    /// The original JSON object, for writing selected records back out unchanged.
    pub raw: Value,
}

impl Instruction {
    /// The first user turn (Alpaca: instruction, then a blank line and the input when non-empty).
    pub fn prompt(&self) -> &str {
        self.turns
            .iter()
            .find(|t| t.role == Role::User)
            .map(|t| t.content.as_str())
            .unwrap_or("")
    }

    /// The first assistant turn after the first user turn ("" when there is none).
    pub fn response(&self) -> &str {
        let start = self
            .turns
            .iter()
            .position(|t| t.role == Role::User)
            .unwrap_or(0);
        self.turns[start..]
            .iter()
            .find(|t| t.role == Role::Assistant)
            .map(|t| t.content.as_str())
            .unwrap_or("")
    }

    /// Rocket's retrieval text `prefix + "instruction:" + instruction + "\ninput:" + input + "\noutput:" + output`;
    /// non-Alpaca records use the first user turn as instruction and an empty input.
    pub fn retrieval_text(&self, prefix: &str) -> String {
        let (ins, inp, out) = match &self.alpaca {
            Some(a) => (a.instruction.as_str(), a.input.as_str(), a.output.as_str()),
            None => (self.prompt(), "", self.response()),
        };
        format!("{prefix}instruction:{ins}\ninput:{inp}\noutput:{out}")
    }
}

/// How to read a pool.
#[derive(Clone, Debug, Default)]
pub struct PoolOptions {
    /// Skip malformed lines (and report them) instead of failing.
    pub lenient: bool,
    /// Force one shape instead of detecting per line.
    pub format: Option<PoolFormat>,
}

/// A skipped line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolIssue {
    /// 1-based line.
    pub line: usize,
    /// Why it was skipped.
    pub reason: String,
}

/// Records plus what happened while reading them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PoolReport {
    /// The records, in file order.
    pub records: Vec<Instruction>,
    /// Malformed lines skipped (lenient mode).
    pub skipped: Vec<PoolIssue>,
    /// Blank lines ignored.
    pub blank_lines: usize,
    /// Records whose content hash repeats an earlier one.
    pub duplicate_contents: usize,
}

/// Reads a JSONL pool from a file.
pub fn read_jsonl(path: &Path, opts: &PoolOptions) -> Result<PoolReport> {
    let f = std::fs::File::open(path).map_err(|e| SelectError::io(path, e))?;
    read_jsonl_from(std::io::BufReader::new(f), opts).map_err(|e| match e {
        SelectError::Io { source, .. } => SelectError::io(path, source),
        other => other,
    })
}

/// Reads a pool file of either shape: a JSON array when the file starts with `[` (a truncated
/// array is salvaged: its complete records are kept, with a warning), JSONL otherwise.
///
/// Skipped malformed records (lenient mode) are logged as warnings; the records are returned in
/// file order.
pub fn read_pool(path: &Path, opts: &PoolOptions) -> Result<Vec<Instruction>> {
    let mut head = [0u8; 64];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| SelectError::io(path, e))?;
        f.read(&mut head).map_err(|e| SelectError::io(path, e))?
    };
    // Skip whitespace and a UTF-8 byte-order mark.
    let first = head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace() && **b != 0xEF && **b != 0xBB && **b != 0xBF);
    let report = if first == Some(&b'[') {
        let s = crate::salvage::salvage_json_array(path, opts)?;
        if !s.closed {
            tracing::warn!(
                file = %path.display(),
                records = s.pool.records.len(),
                cut_line = ?s.cut_element_start_line,
                "JSON array is truncated; using its complete records"
            );
        }
        s.pool
    } else {
        read_jsonl(path, opts)?
    };
    for issue in &report.skipped {
        tracing::warn!(file = %path.display(), line = issue.line, reason = %issue.reason, "skipped malformed record");
    }
    Ok(report.records)
}

/// Reads a JSONL pool from any buffered reader.
pub fn read_jsonl_from(reader: impl BufRead, opts: &PoolOptions) -> Result<PoolReport> {
    let mut builder = PoolBuilder::new(opts.clone());
    let mut lines = crate::jsonl::jsonl_lines(reader);
    for line in lines.by_ref() {
        let line = line.map_err(|e| SelectError::io("<pool>", e))?;
        match line.parsed {
            Ok(v) => builder.push_value(v, line.number)?,
            Err(e) => builder.reject(line.number, format!("not valid JSON: {e}"))?,
        }
    }
    builder.report.blank_lines += lines.blank_lines;
    Ok(builder.finish())
}

/// Accumulates records, assigning ids and counting duplicates; shared by the JSONL and JSON-array readers.
#[derive(Debug)]
pub struct PoolBuilder {
    opts: PoolOptions,
    report: PoolReport,
    seen_ids: HashMap<String, usize>,
    seen_hashes: HashMap<String, usize>,
}

impl PoolBuilder {
    /// A builder with the given options.
    pub fn new(opts: PoolOptions) -> Self {
        PoolBuilder {
            opts,
            report: PoolReport::default(),
            seen_ids: HashMap::new(),
            seen_hashes: HashMap::new(),
        }
    }

    /// Parses one JSON value that started at `line`; malformed values fail (strict) or are recorded (lenient).
    pub fn push_value(&mut self, v: Value, line: usize) -> Result<()> {
        match parse_record(&v, self.opts.format) {
            Ok((format, system, turns, alpaca, own_id)) => {
                let content_hash = content_hash(system.as_deref(), &turns);
                let dup = self.seen_hashes.entry(content_hash.clone()).or_insert(0);
                *dup += 1;
                if *dup > 1 {
                    self.report.duplicate_contents += 1;
                }
                let base = own_id.unwrap_or_else(|| content_hash[..16].to_string());
                let n = self.seen_ids.entry(base.clone()).or_insert(0);
                *n += 1;
                let id = if *n == 1 { base } else { format!("{base}#{n}") };
                self.report.records.push(Instruction {
                    id,
                    content_hash,
                    line,
                    format,
                    system,
                    turns,
                    alpaca,
                    raw: v,
                });
                Ok(())
            }
            Err(reason) => self.reject(line, reason),
        }
    }

    /// Records (lenient) or returns (strict) a malformed line.
    pub fn reject(&mut self, line: usize, reason: String) -> Result<()> {
        if self.opts.lenient {
            self.report.skipped.push(PoolIssue { line, reason });
            Ok(())
        } else {
            Err(SelectError::MalformedRecord { line, reason })
        }
    }

    /// The finished report.
    pub fn finish(self) -> PoolReport {
        self.report
    }
}

type Parsed = (
    PoolFormat,
    Option<String>,
    Vec<Turn>,
    Option<AlpacaFields>,
    Option<String>,
);

fn parse_record(v: &Value, forced: Option<PoolFormat>) -> std::result::Result<Parsed, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", kind(v)))?;
    let format = match forced {
        Some(f) => f,
        None if obj.contains_key("conversations") => PoolFormat::ShareGpt,
        None if obj.contains_key("messages") => PoolFormat::Chat,
        None if obj.contains_key("instruction") => PoolFormat::Alpaca,
        None => {
            let keys: Vec<&str> = obj.keys().map(String::as_str).take(8).collect();
            return Err(format!(
                "no 'instruction', 'conversations' or 'messages' key (keys: {keys:?})"
            ));
        }
    };
    let own_id = match obj.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut system = None;
    let mut turns = Vec::new();
    let mut alpaca = None;
    match format {
        PoolFormat::Alpaca => {
            let field = |k: &str, required: bool| -> std::result::Result<String, String> {
                match obj.get(k) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    None | Some(Value::Null) if !required => Ok(String::new()),
                    None => Err(format!("Alpaca record without '{k}'")),
                    Some(other) => Err(format!("'{k}' must be a string, found {}", kind(other))),
                }
            };
            let a = AlpacaFields {
                instruction: field("instruction", true)?,
                input: field("input", false)?,
                output: field("output", true)?,
            };
            if a.instruction.trim().is_empty() {
                return Err("empty 'instruction'".into());
            }
            let user = if a.input.is_empty() {
                a.instruction.clone()
            } else {
                format!("{}\n\n{}", a.instruction, a.input)
            };
            turns.push(Turn {
                role: Role::User,
                content: user,
            });
            turns.push(Turn {
                role: Role::Assistant,
                content: a.output.clone(),
            });
            alpaca = Some(a);
        }
        PoolFormat::ShareGpt | PoolFormat::Chat => {
            let (list_key, role_key, text_key) = if format == PoolFormat::ShareGpt {
                ("conversations", "from", "value")
            } else {
                ("messages", "role", "content")
            };
            let list = obj
                .get(list_key)
                .and_then(Value::as_array)
                .ok_or_else(|| format!("'{list_key}' must be an array"))?;
            for (i, t) in list.iter().enumerate() {
                let role = t
                    .get(role_key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{list_key}[{i}] has no string '{role_key}'"))?;
                let text = t
                    .get(text_key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{list_key}[{i}] has no string '{text_key}'"))?;
                match role.to_ascii_lowercase().as_str() {
                    "system" => match &mut system {
                        None => system = Some(text.to_string()),
                        Some(s) => {
                            s.push('\n');
                            s.push_str(text);
                        }
                    },
                    "human" | "user" => turns.push(Turn {
                        role: Role::User,
                        content: text.to_string(),
                    }),
                    "gpt" | "assistant" | "chatgpt" | "bard" | "bing" | "model" => {
                        turns.push(Turn {
                            role: Role::Assistant,
                            content: text.to_string(),
                        })
                    }
                    "tool" | "function" | "observation" => turns.push(Turn {
                        role: Role::Tool,
                        content: text.to_string(),
                    }),
                    other => {
                        return Err(format!("{list_key}[{i}] has unknown {role_key} '{other}'"));
                    }
                }
            }
            if !turns.iter().any(|t| t.role == Role::User) {
                return Err(format!("'{list_key}' has no user turn"));
            }
        }
    }
    Ok((format, system, turns, alpaca, own_id))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// SHA-256 (hex) of the canonical form `{"system": ..., "turns": [[role, content], ...]}` (compact JSON).
pub fn content_hash(system: Option<&str>, turns: &[Turn]) -> String {
    #[derive(Serialize)]
    struct Canon<'a> {
        system: Option<&'a str>,
        turns: Vec<(Role, &'a str)>,
    }
    let canon = Canon {
        system,
        turns: turns.iter().map(|t| (t.role, t.content.as_str())).collect(),
    };
    let bytes = serde_json::to_vec(&canon).expect("plain data serializes");
    hex(&Sha256::digest(&bytes))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIXED: &str = r#"{"instruction": "Add 2 and 3.", "input": "", "output": "5"}
{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}], "id": "sg-1"}

{"messages": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]}
{"instruction": "Translate", "input": "chat", "output": "cat"}
"#;

    #[test]
    fn reads_three_shapes() {
        let r = read_jsonl_from(MIXED.as_bytes(), &PoolOptions::default()).unwrap();
        assert_eq!(r.records.len(), 4);
        assert_eq!(r.blank_lines, 1);
        let [a, s, c, t] = [&r.records[0], &r.records[1], &r.records[2], &r.records[3]];
        assert_eq!(a.format, PoolFormat::Alpaca);
        assert_eq!(
            (s.format, s.id.as_str(), s.system.as_deref()),
            (PoolFormat::ShareGpt, "sg-1", Some("Be brief."))
        );
        assert_eq!((s.prompt(), s.response()), ("Hi", "Hello"));
        assert_eq!(c.format, PoolFormat::Chat);
        assert_eq!(c.line, 4);
        // same conversation in two shapes: same content hash, and the id of the repeat gets a suffix
        assert_eq!(a.content_hash, c.content_hash);
        assert_eq!(c.id, format!("{}#2", a.id));
        assert_eq!(r.duplicate_contents, 1);
        assert_eq!(t.prompt(), "Translate\n\nchat");
        assert_eq!(
            t.retrieval_text("P:"),
            "P:instruction:Translate\ninput:chat\noutput:cat"
        );
    }

    #[test]
    fn ids_are_stable_under_reordering() {
        let lines: Vec<&str> = MIXED.lines().filter(|l| !l.is_empty()).collect();
        let rev: String = lines.iter().rev().map(|l| format!("{l}\n")).collect();
        let a = read_jsonl_from(MIXED.as_bytes(), &PoolOptions::default()).unwrap();
        let b = read_jsonl_from(rev.as_bytes(), &PoolOptions::default()).unwrap();
        let id_of = |r: &PoolReport, h: &str| -> Vec<String> {
            r.records
                .iter()
                .filter(|x| x.content_hash == h)
                .map(|x| x.id.clone())
                .collect()
        };
        // distinct records keep their ids; only the duplicate pair's suffixes depend on order
        for rec in &a.records[1..2] {
            assert_eq!(id_of(&a, &rec.content_hash), id_of(&b, &rec.content_hash));
        }
        assert_eq!(a.records[3].id, b.records[0].id);
    }

    #[test]
    fn strict_fails_with_line_lenient_skips() {
        let text = "{\"instruction\": \"a\", \"output\": \"b\"}\n{oops\n[1,2]\n{\"instruction\": \"\", \"output\": \"b\"}\n{\"conversations\": [{\"from\": \"gpt\", \"value\": \"x\"}]}\n{\"foo\": 1}\n";
        let err = read_jsonl_from(text.as_bytes(), &PoolOptions::default()).unwrap_err();
        assert!(
            matches!(err, SelectError::MalformedRecord { line: 2, .. }),
            "{err}"
        );
        let r = read_jsonl_from(
            text.as_bytes(),
            &PoolOptions {
                lenient: true,
                format: None,
            },
        )
        .unwrap();
        assert_eq!(r.records.len(), 1);
        let lines: Vec<usize> = r.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6]);
        assert!(
            r.skipped[3].reason.contains("no user turn"),
            "{:?}",
            r.skipped[3]
        );
    }

    #[test]
    fn forced_format_rejects_other_shapes() {
        let opts = PoolOptions {
            lenient: false,
            format: Some(PoolFormat::Chat),
        };
        let err = read_jsonl_from(MIXED.as_bytes(), &opts).unwrap_err();
        assert!(matches!(err, SelectError::MalformedRecord { line: 1, .. }));
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,80}") {
            let _ = read_jsonl_from(s.as_bytes(), &PoolOptions { lenient: true, format: None });
        }

        #[test]
        fn hash_depends_on_every_field(a in "[a-z]{0,6}", b in "[a-z]{0,6}", c in "[a-z]{1,6}") {
            let t = |u: &str, v: &str| vec![Turn { role: Role::User, content: u.into() }, Turn { role: Role::Assistant, content: v.into() }];
            let h = content_hash(None, &t(&a, &b));
            prop_assert_eq!(&h, &content_hash(None, &t(&a, &b)));
            prop_assert_ne!(&h, &content_hash(Some(&c), &t(&a, &b)));
            let b2 = format!("{b}{c}");
            prop_assert_ne!(&h, &content_hash(None, &t(&a, &b2)));
            // moving text between turns changes the hash
            let a2 = format!("{a}{c}");
            prop_assert_ne!(content_hash(None, &t(&a2, &b)), content_hash(None, &t(&a, &format!("{c}{b}"))));
        }
    }

    #[test]
    fn pool_reader_detects_json_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sg.json");
        std::fs::write(&p, "[{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}, {\"conversations\": [{\"from\": \"hu").unwrap();
        let recs = read_pool(&p, &PoolOptions::default()).unwrap();
        assert_eq!(recs.len(), 1);
        // the same record as JSONL
        std::fs::write(
            &p,
            "\n{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}\n",
        )
        .unwrap();
        let jsonl = read_pool(&p, &PoolOptions::default()).unwrap();
        assert_eq!(jsonl.len(), 1);
        assert_eq!(jsonl[0].content_hash, recs[0].content_hash);
    }
}
