//! Training checkpoints: the LoRA factors, the AdamW moments and the step, written atomically
//! (staged in a hidden sibling directory, then swapped in, [`StagedDir`]) so a crash never leaves a half-written one.
//!
//! Layout: `DIR/step-000120/{state.safetensors, state.json}`. Everything else of the run (data
//! order, dropout masks, learning rate) is a pure function of the config, the data and the
//! step, so restoring these files resumes to the same result as an uninterrupted run.

use std::path::{Path, PathBuf};

use atomic_fs::StagedDir;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde::{Deserialize, Serialize};

use super::lora::LoraSlot;
use super::optim::AdamW;
use crate::error::{LmError, Result};

const TENSORS: &str = "state.safetensors";
const META: &str = "state.json";

/// What a checkpoint records besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimiser steps completed.
    pub step: usize,
    /// Fingerprint of the config and the tokenised data; resuming with other ones is refused.
    pub fingerprint: String,
    /// Module layout of the flat vectors.
    pub slots: Vec<LoraSlot>,
    /// Per-step training losses so far.
    pub losses: Vec<f64>,
    /// `(step, loss)` of the held-out evaluations so far.
    pub eval_losses: Vec<(usize, f64)>,
}

/// A restored checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Its metadata.
    pub meta: CheckpointMeta,
    /// LoRA factors, flat.
    pub values: Vec<f32>,
    /// Optimiser state.
    pub optimizer: AdamW,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn view(bytes: &[u8], n: usize) -> TensorView<'_> {
    TensorView::new(Dtype::F32, vec![n], bytes).expect("sizes agree")
}

fn step_dir(dir: &Path, step: usize) -> PathBuf {
    dir.join(format!("step-{step:06}"))
}

/// Writes a checkpoint for `meta.step` under `dir`, then deletes all but the newest `keep`.
pub fn save(
    dir: &Path,
    meta: &CheckpointMeta,
    values: &[f32],
    optimizer: &AdamW,
    keep: usize,
) -> Result<PathBuf> {
    let final_dir = step_dir(dir, meta.step);
    let staged = StagedDir::replacing(&final_dir)?;
    let tmp = staged.path();
    let steps = [optimizer.steps as f32];
    let (vb, mb, vvb, sb) = (
        f32_bytes(values),
        f32_bytes(&optimizer.m),
        f32_bytes(&optimizer.v),
        f32_bytes(&steps),
    );
    let tensors = vec![
        ("values", view(&vb, values.len())),
        ("adam_m", view(&mb, optimizer.m.len())),
        ("adam_v", view(&vvb, optimizer.v.len())),
        ("adam_steps", view(&sb, 1)),
    ];
    let path = tmp.join(TENSORS);
    safetensors::serialize_to_file(tensors, None, &path).map_err(|e| LmError::Corrupt {
        path: path.clone(),
        format: "safetensors",
        expected: "a writable checkpoint".into(),
        found: e.to_string(),
    })?;
    let meta_path = tmp.join(META);
    let json = serde_json::to_string_pretty(meta).expect("metadata serialises");
    std::fs::write(&meta_path, json).map_err(|e| LmError::io(&meta_path, e))?;
    staged.commit()?;
    let mut all = list(dir)?;
    while all.len() > keep.max(1) {
        let (_, old) = all.remove(0);
        std::fs::remove_dir_all(&old).map_err(|e| LmError::io(&old, e))?;
    }
    Ok(final_dir)
}

/// Complete checkpoints under `dir`, oldest first.
pub fn list(dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| LmError::io(dir, e))? {
        let entry = entry.map_err(|e| LmError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok())
            && entry.path().join(META).is_file()
            && entry.path().join(TENSORS).is_file()
        {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Loads the newest checkpoint under `dir`, if there is one.
pub fn load_latest(dir: &Path) -> Result<Option<Checkpoint>> {
    match list(dir)?.pop() {
        None => Ok(None),
        Some((_, path)) => load(&path).map(Some),
    }
}

/// Loads one checkpoint directory.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let meta_path = path.join(META);
    let text = std::fs::read_to_string(&meta_path).map_err(|e| LmError::io(&meta_path, e))?;
    let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| LmError::Corrupt {
        path: meta_path.clone(),
        format: "checkpoint metadata",
        expected: "the JSON written by the trainer".into(),
        found: e.to_string(),
    })?;
    let tpath = path.join(TENSORS);
    let bytes = std::fs::read(&tpath).map_err(|e| LmError::io(&tpath, e))?;
    let corrupt = |found: String| LmError::Corrupt {
        path: tpath.clone(),
        format: "safetensors",
        expected: "tensors values, adam_m, adam_v, adam_steps (f32)".into(),
        found,
    };
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let get = |name: &str| -> Result<Vec<f32>> {
        let view = st
            .tensor(name)
            .map_err(|e| corrupt(format!("{name}: {e}")))?;
        crate::io::safetensors::decode_f32(view.dtype(), view.data())
            .ok_or_else(|| corrupt(format!("{name} has dtype {:?}", view.dtype())))
    };
    let values = get("values")?;
    let m = get("adam_m")?;
    let v = get("adam_v")?;
    let steps = get("adam_steps")?;
    if m.len() != values.len() || v.len() != values.len() || steps.len() != 1 {
        return Err(corrupt(format!(
            "lengths values {}, adam_m {}, adam_v {}, adam_steps {}",
            values.len(),
            m.len(),
            v.len(),
            steps.len()
        )));
    }
    Ok(Checkpoint {
        meta,
        values,
        optimizer: AdamW {
            m,
            v,
            steps: steps[0] as u64,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trips_and_prunes_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut opt = AdamW::new(3);
        opt.m = vec![0.1, 0.2, 0.3];
        opt.steps = 7;
        for step in [2, 4, 6] {
            let meta = CheckpointMeta {
                step,
                fingerprint: "f".into(),
                slots: vec![],
                losses: vec![1.0; step],
                eval_losses: vec![(step, 0.5)],
            };
            save(dir.path(), &meta, &[1.0, 2.0, step as f32], &opt, 2).unwrap();
        }
        let steps: Vec<usize> = list(dir.path()).unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, vec![4, 6]);
        let ck = load_latest(dir.path()).unwrap().unwrap();
        assert_eq!(ck.meta.step, 6);
        assert_eq!(ck.values, vec![1.0, 2.0, 6.0]);
        assert_eq!(ck.optimizer, opt);
    }

    #[test]
    fn a_damaged_checkpoint_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let meta = CheckpointMeta {
            step: 1,
            fingerprint: "f".into(),
            slots: vec![],
            losses: vec![],
            eval_losses: vec![],
        };
        let path = save(dir.path(), &meta, &[1.0], &AdamW::new(1), 2).unwrap();
        std::fs::write(path.join(TENSORS), b"garbage").unwrap();
        let err = load_latest(dir.path()).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
