//! Reading a run's inputs: the K-shot set, the test set and the open pool, with the checks that
//! keep a comparison honest (test items equal to K-shot items are reported; pool items equal to
//! a K-shot or test question are removed, so retrieval can neither copy the K-shot nor leak the
//! test set into training).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use data_select::pool::{Instruction, PoolBuilder, PoolOptions};
use kshot_eval::{KShotItem, KShotSet};
use serde::Serialize;
use serde_json::{Value, json};

use super::error::{Result, RocketError};
use super::stage::file_hash;

/// One pool record: how it is embedded, trained on and reported.
#[derive(Debug, Clone)]
pub struct PoolRecord {
    /// The record as read (retrieval text, content hash).
    pub instruction: Instruction,
    /// The original JSON line (written back out unchanged).
    pub raw: Value,
    /// Its task label (`task`, `source` or `category` field; else the file stem).
    pub task: String,
}

/// The open pool after reading and filtering.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The usable records.
    pub records: Vec<PoolRecord>,
    /// The files read (globs expanded), sorted.
    pub files: Vec<PathBuf>,
    /// Records removed because their question is a K-shot question.
    pub removed_kshot: usize,
    /// Records removed because their question is a test question.
    pub removed_test: usize,
}

/// What the report says about the inputs.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct InputSummary {
    /// K-shot file and items used.
    pub kshot: PathBuf,
    /// The K-shot items' task label, when they all share one.
    #[serde(default)]
    pub task: Option<String>,
    /// Items used.
    pub k: usize,
    /// Whether every K-shot item has a rationale (reasoning perplexity needs them).
    pub kshot_rationales: bool,
    /// Test file and items used.
    pub test: PathBuf,
    /// Test items used.
    pub test_items: usize,
    /// Test items whose question is also a K-shot question (a leak: reported, kept).
    pub test_kshot_overlap: usize,
    /// Pool files.
    pub pool_files: Vec<PathBuf>,
    /// Pool records kept.
    pub pool_records: usize,
    /// Pool records removed as copies of K-shot questions.
    pub pool_removed_kshot: usize,
    /// Pool records removed as copies of test questions.
    pub pool_removed_test: usize,
    /// Pool records per task label.
    pub pool_tasks: BTreeMap<String, usize>,
}

/// Reads the K-shot set (first `k` items when given).
///
/// # Errors
/// [`RocketError::Input`] when the file is unreadable, malformed or empty.
pub fn read_kshot(path: &Path, k: Option<usize>) -> Result<Vec<KShotItem>> {
    let set = read_set(path, "K-shot")?;
    let mut items = set.items;
    if let Some(k) = k {
        if k > items.len() {
            tracing::warn!(
                asked = k,
                found = items.len(),
                "the K-shot file has fewer items than inputs.k; using all of them"
            );
        }
        items.truncate(k);
    }
    Ok(items)
}

/// Reads the test set (first `limit` items when given).
///
/// # Errors
/// As [`read_kshot`].
pub fn read_test(path: &Path, limit: Option<usize>) -> Result<Vec<KShotItem>> {
    let mut items = read_set(path, "test")?.items;
    if let Some(l) = limit {
        items.truncate(l);
    }
    Ok(items)
}

fn read_set(path: &Path, what: &str) -> Result<KShotSet> {
    let text = std::fs::read(path).map_err(|e| RocketError::Input {
        path: path.to_path_buf(),
        detail: format!("reading the {what} set: {e}"),
    })?;
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(RocketError::Input {
            path: path.to_path_buf(),
            detail: format!(
                "the {what} set is empty; expected JSONL lines with \"question\" and \"answer\""
            ),
        });
    }
    let set = KShotSet::from_jsonl(path).map_err(|e| RocketError::Input {
        path: path.to_path_buf(),
        detail: format!(
            "reading the {what} set: {e}. Expected JSONL lines with \"question\" and \"answer\" (and \"rationale\" for reasoning perplexity)"
        ),
    })?;
    if set.items.is_empty() {
        return Err(RocketError::Input {
            path: path.to_path_buf(),
            detail: format!("the {what} set is empty; expected at least one item"),
        });
    }
    Ok(set)
}

/// Normalised question text for overlap checks (whitespace collapsed, case folded).
pub fn question_key(q: &str) -> String {
    q.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Test items whose question is a K-shot question.
pub fn overlap(kshot: &[KShotItem], test: &[KShotItem]) -> usize {
    let k: HashSet<String> = kshot.iter().map(|i| question_key(&i.question)).collect();
    test.iter()
        .filter(|t| k.contains(&question_key(&t.question)))
        .count()
}

/// Expands the pool specs (files or glob patterns) into sorted files.
///
/// # Errors
/// [`RocketError::Input`] on a bad pattern or a spec that matches nothing.
pub fn pool_files(specs: &[String]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for spec in specs {
        let is_glob = spec.contains(['*', '?', '[']);
        if !is_glob {
            let p = PathBuf::from(spec);
            if !p.is_file() {
                return Err(RocketError::Input {
                    path: p,
                    detail: "pool file not found; give a JSONL file or a glob pattern such as assets/datasets/*/train.jsonl".into(),
                });
            }
            files.push(p);
            continue;
        }
        let matches = glob::glob(spec).map_err(|e| RocketError::Input {
            path: spec.into(),
            detail: format!("bad glob pattern: {e}"),
        })?;
        let before = files.len();
        for m in matches {
            let p = m.map_err(|e| RocketError::Input {
                path: spec.into(),
                detail: format!("while expanding the pattern: {e}"),
            })?;
            if p.is_file() {
                files.push(p);
            }
        }
        if files.len() == before {
            return Err(RocketError::Input {
                path: spec.into(),
                detail: "the pool pattern matches no file".into(),
            });
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Reads one pool row: question-shaped rows (`question`/`answer`/`rationale`) become Alpaca
/// records whose output is what training learns ([`KShotItem::prompt_response`]); every other
/// shape is read by data-select.
fn pool_row(
    builder: &mut PoolBuilder,
    raw: &Value,
    line: usize,
) -> std::result::Result<(), String> {
    let value = if raw.get("question").is_some() {
        let item = KShotItem::from_value(raw.clone())?;
        let (prompt, response) = item.prompt_response();
        json!({"instruction": prompt, "input": "", "output": response})
    } else {
        raw.clone()
    };
    builder.push_value(value, line).map_err(|e| e.to_string())
}

fn task_label(raw: &Value, file: &Path) -> String {
    ["task", "source", "category"]
        .iter()
        .find_map(|k| raw.get(*k).and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| {
            file.file_stem()
                .map_or_else(|| "pool".into(), |s| s.to_string_lossy().into_owned())
        })
}

/// Reads the pool files and removes records whose question is a K-shot or test question.
///
/// # Errors
/// [`RocketError::Input`] naming the file and line of a malformed record, or when no record
/// is left.
pub fn read_pool(files: &[PathBuf], kshot: &[KShotItem], test: &[KShotItem]) -> Result<Pool> {
    let k: HashSet<String> = kshot.iter().map(|i| question_key(&i.question)).collect();
    let t: HashSet<String> = test.iter().map(|i| question_key(&i.question)).collect();
    let mut pool = Pool {
        records: Vec::new(),
        files: files.to_vec(),
        removed_kshot: 0,
        removed_test: 0,
    };
    for file in files {
        let rows = data_select::jsonl::read_jsonl_values(file).map_err(|e| RocketError::Input {
            path: file.clone(),
            detail: format!("reading the pool: {e}"),
        })?;
        let mut builder = PoolBuilder::new(PoolOptions::default());
        let mut raws = Vec::with_capacity(rows.len());
        for (line, raw) in rows {
            pool_row(&mut builder, &raw, line).map_err(|detail| RocketError::Input {
                path: file.clone(),
                detail: format!("line {line}: {detail}"),
            })?;
            raws.push(raw);
        }
        let report = builder.finish();
        for (instruction, raw) in report.records.into_iter().zip(raws) {
            let key = question_key(instruction.prompt());
            if k.contains(&key) {
                pool.removed_kshot += 1;
                continue;
            }
            if t.contains(&key) {
                pool.removed_test += 1;
                continue;
            }
            let task = task_label(&raw, file);
            pool.records.push(PoolRecord {
                instruction,
                raw,
                task,
            });
        }
    }
    Ok(pool)
}

/// The K-shot items as pool records (embedded the same way as the pool).
///
/// # Errors
/// [`RocketError::Input`] if an item cannot be read as a record (not expected).
pub fn kshot_records(kshot: &[KShotItem], path: &Path) -> Result<Vec<Instruction>> {
    let mut builder = PoolBuilder::new(PoolOptions::default());
    for (i, item) in kshot.iter().enumerate() {
        let raw = serde_json::to_value(item).expect("a K-shot item serialises");
        pool_row(&mut builder, &raw, i + 1).map_err(|detail| RocketError::Input {
            path: path.to_path_buf(),
            detail,
        })?;
    }
    Ok(builder.finish().records)
}

/// Hashes of the input files (fingerprints of the stages that read them).
#[derive(Debug, Clone, Serialize)]
pub struct InputHashes {
    /// The K-shot file.
    pub kshot: String,
    /// The test file.
    pub test: String,
    /// Every pool file, in order.
    pub pool: Vec<String>,
    /// The model file (or the config + weights of an HF directory).
    pub model: String,
}

impl InputHashes {
    /// Hashes the files.
    ///
    /// # Errors
    /// [`RocketError::Io`] when one cannot be read.
    pub fn compute(kshot: &Path, test: &Path, pool: &[PathBuf], model: &[PathBuf]) -> Result<Self> {
        Ok(Self {
            kshot: file_hash(kshot)?,
            test: file_hash(test)?,
            pool: pool.iter().map(|p| file_hash(p)).collect::<Result<_>>()?,
            model: model
                .iter()
                .map(|p| file_hash(p))
                .collect::<Result<Vec<_>>>()?
                .join(","),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(q: &str) -> KShotItem {
        KShotItem::new(q, "1")
    }

    #[test]
    fn overlaps_ignore_case_and_spacing() {
        let k = vec![item("What is 2+2?"), item("b")];
        let t = vec![item("what  is 2+2?"), item("c")];
        assert_eq!(overlap(&k, &t), 1);
    }

    #[test]
    fn pool_rows_of_every_shape_and_the_leak_filter() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("mix.jsonl");
        std::fs::write(
            &f,
            concat!(
                "{\"question\": \"q1\", \"answer\": 3, \"rationale\": \"r\", \"task\": \"t1\"}\n",
                "{\"instruction\": \"Add\", \"input\": \"1 2\", \"output\": \"3\"}\n",
                "{\"question\": \"the kshot one\", \"answer\": \"x\"}\n",
                "{\"question\": \"the test one\", \"answer\": \"y\"}\n",
            ),
        )
        .unwrap();
        let pool = read_pool(
            std::slice::from_ref(&f),
            &[item("The Kshot one")],
            &[item("the test one")],
        )
        .unwrap();
        assert_eq!(pool.records.len(), 2);
        assert_eq!((pool.removed_kshot, pool.removed_test), (1, 1));
        assert_eq!(pool.records[0].task, "t1");
        assert_eq!(pool.records[1].task, "mix");
        assert!(
            pool.records[0]
                .instruction
                .retrieval_text("")
                .contains("The answer is 3.")
        );
        std::fs::write(&f, "{\"question\": \"q\"}\n").unwrap();
        let e = read_pool(&[f], &[], &[]).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn pool_specs_expand_globs_and_refuse_empty_matches() {
        let tmp = tempfile::tempdir().unwrap();
        for t in ["a", "b"] {
            std::fs::create_dir(tmp.path().join(t)).unwrap();
            std::fs::write(tmp.path().join(t).join("train.jsonl"), "").unwrap();
        }
        let pat = format!("{}/*/train.jsonl", tmp.path().display());
        assert_eq!(pool_files(&[pat]).unwrap().len(), 2);
        let none = format!("{}/*/nothing.jsonl", tmp.path().display());
        assert!(pool_files(&[none]).is_err());
        assert!(pool_files(&["/no/such/file.jsonl".into()]).is_err());
    }
}
