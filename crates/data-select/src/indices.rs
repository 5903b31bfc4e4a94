//! Row-index files: the labelled, excluded or selected rows of a pool, as written by the
//! selections (`[3, 0, 7]`, in pick order) and read back by the next step.
//!
//! [`read_indices`] accepts a JSON array of integers, an object with an `indices`, `labeled` or
//! `picks` array (a selection report), or a boolean mask as long as the pool.

use std::path::Path;

use crate::error::{Result, SelectError};

/// Reads row indices of a pool of `n` rows from a JSON file: an array of integers,
/// `{"indices": [...]}` / `{"labeled": [...]}` / `{"picks": [...]}`, or a boolean mask of length
/// `n` (the rows marked `true`, ascending). Every index must be `< n`.
pub fn read_indices(path: &Path, n: usize) -> Result<Vec<usize>> {
    let bad = |reason: String| SelectError::InvalidJson {
        what: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| SelectError::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let arr = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => o
            .get("indices")
            .or_else(|| o.get("labeled"))
            .or_else(|| o.get("picks"))
            .and_then(|x| x.as_array())
            .ok_or_else(|| bad("object without an 'indices', 'labeled' or 'picks' array".into()))?,
        _ => return Err(bad("expected a JSON array of indices".into())),
    };
    if !arr.is_empty() && arr.iter().all(|x| x.is_boolean()) {
        if arr.len() != n {
            return Err(bad(format!(
                "boolean mask has {} entries, pool has {n}",
                arr.len()
            )));
        }
        return Ok(arr
            .iter()
            .enumerate()
            .filter(|(_, b)| b.as_bool() == Some(true))
            .map(|(i, _)| i)
            .collect());
    }
    arr.iter()
        .enumerate()
        .map(|(pos, x)| {
            let i = x.as_u64().ok_or_else(|| {
                bad(format!(
                    "entry {pos} is {x}, expected a non-negative integer"
                ))
            })? as usize;
            if i >= n {
                return Err(SelectError::IndexOutOfRange {
                    what: path.display().to_string(),
                    index: i,
                    len: n,
                });
            }
            Ok(i)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_objects_and_masks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.json");
        std::fs::write(&p, "[3, 0]").unwrap();
        assert_eq!(read_indices(&p, 5).unwrap(), vec![3, 0]);
        std::fs::write(&p, r#"{"picks": [4]}"#).unwrap();
        assert_eq!(read_indices(&p, 5).unwrap(), vec![4]);
        // mask form of the labelled file
        std::fs::write(&p, "[true, false, false, false, false]").unwrap();
        assert_eq!(read_indices(&p, 5).unwrap(), vec![0]);
        assert!(read_indices(&p, 4).is_err());
        std::fs::write(&p, "[7]").unwrap();
        let err = read_indices(&p, 5).unwrap_err();
        assert!(
            matches!(&err, SelectError::IndexOutOfRange { what, index: 7, len: 5 } if what.ends_with("l.json")),
            "{err}"
        );
        std::fs::write(&p, "[-1]").unwrap();
        let err = read_indices(&p, 5).unwrap_err().to_string();
        assert!(
            err.contains("l.json") && err.contains("non-negative"),
            "{err}"
        );
    }
}
