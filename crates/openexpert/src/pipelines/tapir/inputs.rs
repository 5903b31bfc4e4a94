//! Instructions from JSONL files: the seed pool and the held-out set of a TAPIR run, and the
//! inputs of the single-stage commands.
//!
//! A line's instruction is, in this order: `instruction` (with `input` appended after a blank
//! line when non-empty, Alpaca), `question` (reasoning-gym and K-shot files), `prompt`, the
//! first `user` turn of `messages`, the first `human` turn of `conversations` (ShareGPT). Its id
//! is the line's `id` field, else `{file stem}:{line}`.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::Value;
use tapir_curriculum::Instruction;

use super::error::{Result, TapirRunError};

/// The instruction text of one JSON record (see the module docs); `None` when it has none.
pub fn instruction_of(v: &Value) -> Option<String> {
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
    };
    if let Some(i) = s("instruction") {
        return Some(match s("input") {
            Some(input) => format!("{i}\n\n{input}"),
            None => i.to_string(),
        });
    }
    if let Some(q) = s("question").or_else(|| s("prompt")) {
        return Some(q.to_string());
    }
    let first = |key: &str, role_key: &str, text_key: &str, roles: &[&str]| {
        v.get(key)?.as_array()?.iter().find_map(|t| {
            let role = t.get(role_key)?.as_str()?;
            roles
                .contains(&role)
                .then(|| t.get(text_key)?.as_str().map(|x| x.trim().to_string()))
                .flatten()
                .filter(|x| !x.is_empty())
        })
    };
    first("messages", "role", "content", &["user"])
        .or_else(|| first("conversations", "from", "value", &["human", "user"]))
}

/// Expands patterns (files or globs) to files, sorted, each pattern matching at least one.
///
/// # Errors
/// [`TapirRunError::Input`] for a pattern that matches nothing or is malformed.
pub fn files(patterns: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in patterns {
        let paths: Vec<PathBuf> = glob::glob(p)
            .map_err(|e| TapirRunError::Input {
                path: p.into(),
                detail: format!("not a valid glob pattern: {e}"),
            })?
            .flatten()
            .filter(|p| p.is_file())
            .collect();
        if paths.is_empty() {
            return Err(TapirRunError::Input {
                path: p.into(),
                detail: "matches no file; give JSONL files or glob patterns relative to the working directory".into(),
            });
        }
        out.extend(paths);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Every instruction of one JSONL file, in file order.
///
/// # Errors
/// [`TapirRunError::Input`] naming the file and line of a malformed line or a record with no
/// instruction.
pub fn read_file(path: &Path) -> Result<Vec<Instruction>> {
    let lines = data_select::jsonl::read_jsonl_values(path).map_err(|e| TapirRunError::Input {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let parent = path
        .parent()
        .and_then(|p| p.file_name())
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    lines
        .into_iter()
        .map(|(line, v)| {
            let text = instruction_of(&v).ok_or_else(|| TapirRunError::Input {
                path: path.to_path_buf(),
                detail: format!(
                    "line {line}: expected an instruction (`instruction`, `question`, `prompt`, a user turn of `messages` or a human turn of `conversations`), found keys {:?}",
                    v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()
                ),
            })?;
            let id = v
                .get("id")
                .and_then(|x| x.as_str().map(str::to_string).or_else(|| x.as_u64().map(|n| n.to_string())))
                .unwrap_or_else(|| format!("{parent}/{stem}:{line}"));
            Ok(Instruction { id, text })
        })
        .collect()
}

/// The instructions of every file matched by `patterns`: `per_file` of each (0 = all) after a
/// shuffle seeded by `seed` and the file's position, files in sorted order. Duplicate texts
/// keep their first occurrence.
///
/// # Errors
/// As [`files`] and [`read_file`].
pub fn read_instructions(
    patterns: &[String],
    per_file: usize,
    seed: u64,
) -> Result<Vec<Instruction>> {
    let mut out: Vec<Instruction> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (k, f) in files(patterns)?.iter().enumerate() {
        let mut items = read_file(f)?;
        if per_file > 0 && per_file < items.len() {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(k as u64));
            items.shuffle(&mut rng);
            items.truncate(per_file);
        }
        for it in items {
            if seen.insert(it.text.clone()) {
                out.push(it);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_shape_gives_its_instruction() {
        assert_eq!(
            instruction_of(&json!({"instruction": "Do X", "input": "on Y", "output": "z"}))
                .unwrap(),
            "Do X\n\non Y"
        );
        assert_eq!(
            instruction_of(&json!({"instruction": "Do X", "input": ""})).unwrap(),
            "Do X"
        );
        assert_eq!(
            instruction_of(&json!({"question": "2+2?", "answer": "4"})).unwrap(),
            "2+2?"
        );
        assert_eq!(
            instruction_of(&json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]})).unwrap(),
            "hi"
        );
        assert_eq!(
            instruction_of(&json!({"conversations": [{"from": "human", "value": "yo"}]})).unwrap(),
            "yo"
        );
        assert_eq!(instruction_of(&json!({"answer": "4"})), None);
    }

    #[test]
    fn files_are_sampled_per_file_deterministically_and_bad_lines_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        for f in ["a", "b"] {
            let lines: Vec<String> = (0..10)
                .map(|i| json!({"question": format!("{f}{i}")}).to_string())
                .collect();
            std::fs::write(tmp.path().join(format!("{f}.jsonl")), lines.join("\n")).unwrap();
        }
        let pat = vec![format!("{}/*.jsonl", tmp.path().display())];
        let a = read_instructions(&pat, 3, 7).unwrap();
        assert_eq!(a.len(), 6);
        assert_eq!(a, read_instructions(&pat, 3, 7).unwrap());
        assert!(a[..3].iter().all(|i| i.text.starts_with('a')));
        assert!(
            a[0].id.ends_with("/a:") || a[0].id.contains("/a:"),
            "{}",
            a[0].id
        );
        assert_eq!(read_instructions(&pat, 0, 7).unwrap().len(), 20);
        std::fs::write(
            tmp.path().join("c.jsonl"),
            "{\"question\": \"ok\"}\n{\"answer\": 1}\n",
        )
        .unwrap();
        let e = read_instructions(&pat, 0, 7).unwrap_err().to_string();
        assert!(e.contains("c.jsonl") && e.contains("line 2"), "{e}");
        let e = files(&["/nonexistent/*.jsonl".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("matches no file"), "{e}");
    }
}
