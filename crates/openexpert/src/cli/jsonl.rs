//! Reading JSONL inputs with line-numbered errors, and atomic output writes.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, bail};

/// Parses every non-empty line of a JSONL file as a JSON object.
pub fn read_objects(path: &Path) -> anyhow::Result<Vec<serde_json::Map<String, serde_json::Value>>> {
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
            Err(e) => bail!("{}:{}: malformed JSON ({e}): {}", path.display(), n + 1, short(&line)),
        }
    }
    if rows.is_empty() {
        bail!("{}: expected at least one JSON line, found none", path.display());
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
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Writes a 2-D f32 matrix as a NumPy `.npy` (format 1.0, little-endian, C order).
pub fn npy_bytes(rows: &[Vec<f32>], cols: usize) -> Vec<u8> {
    let header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
        rows.len(),
        cols
    );
    // Magic (6) + version (2) + header length (2) + header, padded with spaces to a multiple
    // of 64 and ending in a newline.
    let unpadded = 10 + header.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let header = format!("{header}{}\n", " ".repeat(padding));
    let mut out = Vec::with_capacity(10 + header.len() + rows.len() * cols * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for r in rows {
        for v in r {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() {
        let b = npy_bytes(&[vec![1.0, 2.0], vec![3.0, 4.0]], 2);
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(b.len(), 10 + hlen + 16);
        assert_eq!(f32::from_le_bytes(b[10 + hlen..14 + hlen].try_into().unwrap()), 1.0);
    }

    #[test]
    fn malformed_lines_are_numbered() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        std::fs::write(&p, "{\"text\": \"a\"}\n{oops\n").unwrap();
        let err = read_objects(&p).unwrap_err().to_string();
        assert!(err.contains("x.jsonl:2"), "{err}");
    }
}
