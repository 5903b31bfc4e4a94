//! Streaming reader for a top-level JSON array of records that may be cut off mid-record (the ShareGPT package in
//! ASSETS.md is one): returns every complete element plus a report of where the text stopped.
//!
//! The reader scans bytes once, tracking string/escape state and nesting depth, and hands each complete top-level
//! element to `serde_json` and then to the [`PoolBuilder`], so memory holds one element at a time (plus the records).

use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::error::{Result, SelectError};
use crate::pool::{PoolBuilder, PoolOptions, PoolReport};

/// What the salvage reader found.
#[derive(Clone, Debug, Serialize)]
pub struct SalvageReport {
    /// The complete records (and skipped elements in lenient mode).
    pub pool: PoolReport,
    /// Complete top-level elements seen (valid or not).
    pub complete_elements: usize,
    /// True when the array's closing `]` was reached.
    pub closed: bool,
    /// Byte offset where an unfinished element started (`None` when the array is complete or was cut between
    /// elements).
    pub cut_element_start_byte: Option<u64>,
    /// Line where that unfinished element started.
    pub cut_element_start_line: Option<usize>,
    /// Bytes of the unfinished element that were dropped.
    pub dropped_bytes: u64,
    /// Total bytes read.
    pub total_bytes: u64,
}

/// Reads a (possibly truncated) JSON array file.
pub fn salvage_json_array(path: &Path, opts: &PoolOptions) -> Result<SalvageReport> {
    let f = std::fs::File::open(path).map_err(|e| SelectError::io(path, e))?;
    salvage_from(std::io::BufReader::with_capacity(1 << 16, f), opts).map_err(|e| match e {
        SelectError::Io { source, .. } => SelectError::io(path, source),
        other => other,
    })
}

#[derive(PartialEq)]
enum State {
    BeforeArray,
    BetweenElements,
    InElement,
    Closed,
}

/// Reads a (possibly truncated) JSON array from any reader.
pub fn salvage_from(mut reader: impl Read, opts: &PoolOptions) -> Result<SalvageReport> {
    let mut builder = PoolBuilder::new(opts.clone());
    let mut buf = vec![0u8; 1 << 16];
    let mut state = State::BeforeArray;
    let mut elem: Vec<u8> = Vec::new();
    let (mut depth, mut in_str, mut esc) = (0usize, false, false);
    let (mut line, mut offset) = (1usize, 0u64);
    let (mut elem_line, mut elem_start) = (0usize, 0u64);
    let mut complete = 0usize;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SelectError::io("<json array>", e)),
        };
        for &b in &buf[..n] {
            match state {
                State::BeforeArray => {
                    if b == b'[' {
                        state = State::BetweenElements;
                    } else if !b.is_ascii_whitespace()
                        && (offset >= 3 || ![0xEF, 0xBB, 0xBF].contains(&b))
                    {
                        return Err(SelectError::InvalidJson {
                            what: "JSON array".into(),
                            reason: format!(
                                "expected '[' at line {line}, found byte {:?}",
                                b as char
                            ),
                        });
                    }
                }
                State::BetweenElements => {
                    if b == b']' {
                        state = State::Closed;
                    } else if b == b',' || b.is_ascii_whitespace() {
                    } else {
                        state = State::InElement;
                        elem.clear();
                        elem.push(b);
                        elem_line = line;
                        elem_start = offset;
                        (depth, in_str, esc) = (0, b == b'"', false);
                        if b == b'{' || b == b'[' {
                            depth = 1;
                        }
                    }
                }
                State::InElement => {
                    let scalar_end = depth == 0 && !in_str && (b == b',' || b == b']');
                    if !scalar_end {
                        elem.push(b);
                    }
                    let mut done = scalar_end;
                    if in_str {
                        if esc {
                            esc = false;
                        } else if b == b'\\' {
                            esc = true;
                        } else if b == b'"' {
                            in_str = false;
                        }
                    } else if !scalar_end {
                        match b {
                            b'"' => in_str = true,
                            b'{' | b'[' => depth += 1,
                            b'}' | b']' if depth > 0 => {
                                depth -= 1;
                                done = depth == 0;
                            }
                            _ => {}
                        }
                    }
                    if done {
                        complete += 1;
                        match serde_json::from_slice(&elem) {
                            Ok(v) => builder.push_value(v, elem_line)?,
                            Err(e) => builder
                                .reject(elem_line, format!("element is not valid JSON: {e}"))?,
                        }
                        state = if scalar_end && b == b']' {
                            State::Closed
                        } else {
                            State::BetweenElements
                        };
                    }
                }
                State::Closed => {}
            }
            if b == b'\n' {
                line += 1;
            }
            offset += 1;
        }
    }
    if state == State::BeforeArray {
        return Err(SelectError::InvalidJson {
            what: "JSON array".into(),
            reason: "no '[' found (empty input?)".into(),
        });
    }
    let cut = state == State::InElement;
    if cut {
        tracing::warn!(
            line = elem_line,
            byte = elem_start,
            "JSON array cut mid-element; dropped the partial record"
        );
    }
    Ok(SalvageReport {
        pool: builder.finish(),
        complete_elements: complete,
        closed: state == State::Closed,
        cut_element_start_byte: cut.then_some(elem_start),
        cut_element_start_line: cut.then_some(elem_line),
        dropped_bytes: if cut { offset - elem_start } else { 0 },
        total_bytes: offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FULL: &str = r#"[
  {"id": "a", "conversations": [{"from": "human", "value": "brace } and \" quote ]"}, {"from": "gpt", "value": "ok"}]},
  {"id": "b", "conversations": [{"from": "human", "value": "second"}, {"from": "gpt", "value": "[nested {x}]"}]},
  {"id": "c", "conversations": [{"from": "human", "value": "third"}, {"from": "gpt", "value": "z"}]}
]"#;

    #[test]
    fn complete_array() {
        let r = salvage_from(FULL.as_bytes(), &PoolOptions::default()).unwrap();
        assert!(r.closed);
        assert_eq!(r.pool.records.len(), 3);
        assert_eq!(r.pool.records[0].prompt(), "brace } and \" quote ]");
        assert_eq!(r.pool.records[1].line, 3);
        assert_eq!(r.cut_element_start_byte, None);
    }

    #[test]
    fn truncated_mid_object() {
        let cut = FULL.find("\"third\"").unwrap();
        let r = salvage_from(&FULL.as_bytes()[..cut], &PoolOptions::default()).unwrap();
        assert!(!r.closed);
        let ids: Vec<&str> = r.pool.records.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(r.cut_element_start_line, Some(4));
        let start = FULL.find("{\"id\": \"c\"").unwrap() as u64;
        assert_eq!(r.cut_element_start_byte, Some(start));
        assert_eq!(r.dropped_bytes, cut as u64 - start);
    }

    #[test]
    fn not_an_array() {
        assert!(salvage_from(&b"{\"a\": 1}"[..], &PoolOptions::default()).is_err());
        assert!(salvage_from(&b"   "[..], &PoolOptions::default()).is_err());
    }

    #[test]
    fn lenient_skips_bad_elements() {
        let text = r#"[1, {"instruction": "q", "output": "a"}, "x"]"#;
        assert!(salvage_from(text.as_bytes(), &PoolOptions::default()).is_err());
        let r = salvage_from(
            text.as_bytes(),
            &PoolOptions {
                lenient: true,
                format: None,
            },
        )
        .unwrap();
        assert_eq!(
            (
                r.pool.records.len(),
                r.pool.skipped.len(),
                r.complete_elements
            ),
            (1, 2, 3)
        );
        assert!(r.closed);
    }

    proptest! {
        /// Cutting the text anywhere yields a prefix of the full record list, never an error or a partial record.
        #[test]
        fn any_cut_gives_a_prefix(cut in 1usize..FULL.len()) {
            let r = salvage_from(&FULL.as_bytes()[..cut], &PoolOptions::default()).unwrap();
            let full = salvage_from(FULL.as_bytes(), &PoolOptions::default()).unwrap();
            let n = r.pool.records.len();
            prop_assert!(n <= 3);
            prop_assert_eq!(&r.pool.records[..], &full.pool.records[..n]);
        }
    }
}
