//! Stage 2: the training data, the K-shot plus open pool items chosen by [`DataMode`]
//! (ALGORITHMS.md 1(b) "Open-data selection" and "Near-duplicate removal"): the `budget - K`
//! items closest to the K-shot set under a frozen sentence encoder, near-duplicates removed;
//! or the controls (K-shot only, a random sample of the same size).
//!
//! Output: `train.jsonl` (the K-shot items, then the chosen pool records as they were read)
//! and `data.json` ([`DataOutcome`]).

use std::collections::BTreeMap;
use std::path::Path;

use data_select::embed::{DEFAULT_BATCH_SIZE, embed_records};
use data_select::retrieve::{DedupOptions, RetrieveOptions, retrieve};
use kshot_eval::KShotItem;
use serde::{Deserialize, Serialize};

use super::config::{DataMode, RocketConfig};
use super::error::{Result, RocketError};
use super::inputs::{Pool, kshot_records};
use crate::embedders::SentenceEmbedder;

/// What stage 2 chose (`data.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataOutcome {
    /// The mode.
    pub mode: String,
    /// K-shot items (first in `train.jsonl`).
    pub kshot: usize,
    /// Pool items chosen, in `train.jsonl` order (indices into the filtered pool).
    pub selected: Vec<usize>,
    /// Their distance to the K-shot set (retrieval modes).
    pub distances: Vec<f32>,
    /// Items removed as near-duplicates.
    pub dedup_dropped: usize,
    /// How far below `budget - K` the selection ended (pool too small, or dedup).
    pub short_by: usize,
    /// Chosen pool items per task label.
    pub task_mix: BTreeMap<String, usize>,
    /// Pool records available.
    pub pool_size: usize,
}

/// Records embedded per progress-bar tick.
const EMBED_CHUNK: usize = 256;

/// [`embed_records`] in chunks, with a progress bar (cached rows are read back, not re-embedded).
///
/// # Shapes
/// `records: [n]` -> `[n, encoder.dim()]`
fn embed_with_progress(
    encoder: &SentenceEmbedder,
    records: &[data_select::pool::Instruction],
    prefix: &str,
    cache: &Path,
    what: &str,
) -> Result<ndarray::Array2<f32>> {
    let bar = lm_core::progress::bar(records.len() as u64, what, "records");
    let mut parts = Vec::new();
    for chunk in records.chunks(EMBED_CHUNK) {
        parts.push(
            embed_records(encoder, chunk, prefix, Some(cache), DEFAULT_BATCH_SIZE)
                .map_err(|e| RocketError::stage("data", e))?,
        );
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(ndarray::Axis(0), &views).map_err(|e| RocketError::stage("data", e))
}

/// Runs stage 2 into `dir`.
///
/// # Errors
/// [`RocketError::Input`] on an empty pool when the mode needs one; the encoder's and the
/// retrieval's errors as [`RocketError::Stage`].
pub fn run(
    dir: &Path,
    kshot: &[KShotItem],
    kshot_path: &Path,
    pool: &Pool,
    config: &RocketConfig,
    device: &lm_core::burn::tensor::Device,
    cache: &Path,
) -> Result<DataOutcome> {
    let d = &config.data;
    let k = kshot.len();
    if d.budget < k {
        return Err(RocketError::Config(format!(
            "data.budget = {} is smaller than the K-shot set ({k}); the K-shot items count toward the budget",
            d.budget
        )));
    }
    let want = d.budget - k;
    if d.mode != DataMode::KshotOnly && pool.records.is_empty() {
        return Err(RocketError::Input {
            path: pool.files.first().cloned().unwrap_or_default(),
            detail: format!(
                "the pool has no usable record ({} files read, {} records equal to K-shot or test questions removed); data.mode = \"{}\" needs a pool. Give more pool files, or set data.mode = \"kshot-only\"",
                pool.files.len(),
                pool.removed_kshot + pool.removed_test,
                d.mode
            ),
        });
    }
    let (selected, distances, dedup_dropped, short_by) = match d.mode {
        DataMode::KshotOnly => (Vec::new(), Vec::new(), 0, 0),
        DataMode::Random => {
            let n = want.min(pool.records.len());
            let picks = data_select::baselines::random_select(pool.records.len(), n, d.seed, &[])
                .map_err(|e| RocketError::stage("data", e))?;
            (picks, Vec::new(), 0, want - n)
        }
        DataMode::Similar | DataMode::SimilarDedup => {
            eprintln!(
                "embedding {} pool records and {k} K-shot items with {}",
                pool.records.len(),
                d.embedder
            );
            let encoder = SentenceEmbedder::load(&d.embedder, device)
                .map_err(|e| RocketError::stage("data", e))?;
            let records: Vec<_> = pool.records.iter().map(|r| r.instruction.clone()).collect();
            let pe = embed_with_progress(&encoder, &records, &d.query_prefix, cache, "embed pool")?;
            let krec = kshot_records(kshot, kshot_path)?;
            let ke = embed_with_progress(&encoder, &krec, &d.query_prefix, cache, "embed K-shot")?;
            let options = RetrieveOptions {
                budget: d.budget,
                similarity: d.similarity,
                dedup: (d.mode == DataMode::SimilarDedup).then_some(DedupOptions {
                    threshold: d.dedup_threshold as f32,
                    mode: d.dedup_mode,
                    backfill: d.backfill,
                }),
            };
            let r = retrieve(pe.view(), ke.view(), &options)
                .map_err(|e| RocketError::stage("data", e))?;
            (r.selected, r.distances, r.dedup_dropped, r.short_by)
        }
    };
    if short_by > 0 {
        tracing::warn!(
            short_by,
            "the training data is below data.budget (a small pool, or near-duplicates removed; data.backfill refills)"
        );
    }
    let mut text = String::new();
    for item in kshot {
        text.push_str(&serde_json::to_string(item).expect("K-shot items serialise"));
        text.push('\n');
    }
    let mut task_mix = BTreeMap::new();
    for &i in &selected {
        let r = &pool.records[i];
        text.push_str(&serde_json::to_string(&r.raw).expect("JSON values serialise"));
        text.push('\n');
        *task_mix.entry(r.task.clone()).or_insert(0) += 1;
    }
    let path = dir.join("train.jsonl");
    atomic_fs::write_atomic(&path, text.as_bytes()).map_err(|e| RocketError::stage("data", e))?;
    let out = DataOutcome {
        mode: d.mode.to_string(),
        kshot: k,
        selected,
        distances,
        dedup_dropped,
        short_by,
        task_mix,
        pool_size: pool.records.len(),
    };
    atomic_fs::write_json(&dir.join("data.json"), &out)
        .map_err(|e| RocketError::stage("data", e))?;
    Ok(out)
}
