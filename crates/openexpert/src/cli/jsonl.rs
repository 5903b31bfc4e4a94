//! Reading the JSON-object rows of `score`, `embed` and `select evolve` inputs through the one
//! JSONL reader ([`data_select::jsonl`]), with `file:line` errors.

use std::path::Path;

use anyhow::bail;

/// Parses every non-empty line of a JSONL file as a JSON object.
pub fn read_objects(
    path: &Path,
) -> anyhow::Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut rows = Vec::new();
    for (line, value) in data_select::jsonl::read_jsonl_values(path)? {
        match value {
            serde_json::Value::Object(o) => rows.push(o),
            other => bail!(
                "{}:{line}: expected a JSON object, found {}",
                path.display(),
                short(&other.to_string())
            ),
        }
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
