//! Reading JSONL inputs with line-numbered errors, and atomic output writes (raw bytes or JSON).

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, bail};

/// Parses every non-empty line of a JSONL file as a JSON object.
pub fn read_objects(
    path: &Path,
) -> anyhow::Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: reading line {}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(o)) => rows.push(o),
            Ok(other) => bail!(
                "{}:{}: expected a JSON object, found {}",
                path.display(),
                n + 1,
                short(&other.to_string())
            ),
            Err(e) => bail!(
                "{}:{}: malformed JSON ({e}): {}",
                path.display(),
                n + 1,
                short(&line)
            ),
        }
    }
    if rows.is_empty() {
        bail!(
            "{}: expected at least one JSON line, found none",
            path.display()
        );
    }
    Ok(rows)
}

fn short(s: &str) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Writes a file atomically: to a temporary sibling, then renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Writes `value` as compact JSON, atomically ([`write_atomic`]).
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text =
        serde_json::to_string(value).with_context(|| format!("serialising {}", path.display()))?;
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"text\": \"a\"}\n{oops\n").unwrap();
        let err = read_objects(&p).unwrap_err().to_string();
        assert!(err.contains("x.jsonl:2"), "{err}");
    }
}
