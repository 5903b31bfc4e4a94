//! The workspace's one JSONL reader: one JSON value per line, blank lines skipped, every line
//! numbered (1-based) so that errors point at `file:line`.
//!
//! [`jsonl_lines`] is the lenient iterator (each line's parse result, for readers that skip bad
//! lines and report them, like [`pool`](crate::pool)); [`read_jsonl_values`] is the strict
//! reader (the first malformed line is an error naming it). Record shapes are decided by the
//! callers (pools, K-shot sets, training data), not here.

use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One non-blank line of a JSONL stream.
#[derive(Debug)]
pub struct JsonlLine {
    /// 1-based line number in the stream.
    pub number: usize,
    /// The line parsed as JSON, or why it is not JSON.
    pub parsed: Result<Value, serde_json::Error>,
}

/// Iterator over the non-blank lines of a JSONL stream (see [`jsonl_lines`]).
#[derive(Debug)]
pub struct JsonlLines<R> {
    lines: Lines<R>,
    number: usize,
    /// Blank (whitespace-only) lines skipped so far.
    pub blank_lines: usize,
}

impl<R: BufRead> Iterator for JsonlLines<R> {
    type Item = std::io::Result<JsonlLine>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let line = match self.lines.next()? {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            self.number += 1;
            if line.trim().is_empty() {
                self.blank_lines += 1;
                continue;
            }
            return Some(Ok(JsonlLine {
                number: self.number,
                parsed: serde_json::from_str(&line),
            }));
        }
    }
}

/// The non-blank lines of `reader`, each with its number and parse.
pub fn jsonl_lines<R: BufRead>(reader: R) -> JsonlLines<R> {
    JsonlLines {
        lines: reader.lines(),
        number: 0,
        blank_lines: 0,
    }
}

/// Opens a JSONL file for [`jsonl_lines`].
///
/// # Errors
/// [`JsonlError::Io`] when the file cannot be opened.
pub fn open_jsonl(path: &Path) -> Result<JsonlLines<BufReader<File>>, JsonlError> {
    let file = File::open(path).map_err(|source| JsonlError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(jsonl_lines(BufReader::new(file)))
}

/// Reads every non-blank line of a JSONL file as `(line number, value)`.
///
/// # Errors
/// [`JsonlError::Io`] on a read failure, [`JsonlError::Malformed`] naming the first line that is
/// not JSON, [`JsonlError::Empty`] when the file has no line at all.
pub fn read_jsonl_values(path: &Path) -> Result<Vec<(usize, Value)>, JsonlError> {
    let mut out = Vec::new();
    for line in open_jsonl(path)? {
        let line = line.map_err(|source| JsonlError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value = line.parsed.map_err(|source| JsonlError::Malformed {
            path: path.to_path_buf(),
            line: line.number,
            source,
        })?;
        out.push((line.number, value));
    }
    if out.is_empty() {
        return Err(JsonlError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Why a JSONL file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// The file cannot be opened or read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not JSON.
    #[error("{path}:{line}: malformed JSON ({source}); expected one JSON object per line")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The file has no non-blank line.
    #[error("{path}: expected at least one JSON line, found none")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lines_are_numbered_and_blank_lines_skipped() {
        let text = "{\"a\":1}\n\n  \n{oops\n[2]\n";
        let mut it = jsonl_lines(text.as_bytes());
        let got: Vec<JsonlLine> = it.by_ref().map(Result::unwrap).collect();
        assert_eq!(
            got.iter().map(|l| l.number).collect::<Vec<_>>(),
            vec![1, 4, 5]
        );
        assert!(got[0].parsed.is_ok() && got[1].parsed.is_err() && got[2].parsed.is_ok());
        assert_eq!(it.blank_lines, 2);
    }

    #[test]
    fn strict_reader_names_the_bad_line_and_refuses_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"q\":1}\n\n{\"q\":\n").unwrap();
        let err = read_jsonl_values(&p).unwrap_err();
        assert!(
            matches!(err, JsonlError::Malformed { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("x.jsonl:3"), "{err}");
        std::fs::write(&p, "\n \n").unwrap();
        assert!(matches!(
            read_jsonl_values(&p),
            Err(JsonlError::Empty { .. })
        ));
        assert!(matches!(
            read_jsonl_values(&dir.path().join("missing.jsonl")),
            Err(JsonlError::Io { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for line in jsonl_lines(bytes.as_slice()) {
                let _ = line;
            }
        }
    }
}
