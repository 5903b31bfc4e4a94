//! The output directory of a training command (`train`, `moe train`): refused when it holds an
//! earlier run's checkpoints without `--resume`, and at the end replaced as a whole by the
//! trained result plus its reports, with the checkpoints moved in before the swap, so a crash
//! leaves either the old directory or the new one, never new files beside old ones.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use lm_core::train::TrainExample;
use openexpert::training_data::read_training_jsonl;

/// What a training command reads before it loads the model.
pub struct TrainInputs {
    /// `OUTPUT/checkpoints`.
    pub checkpoints: PathBuf,
    /// The training examples.
    pub train: Vec<TrainExample>,
    /// The held-out examples (empty without `--eval`).
    pub eval: Vec<TrainExample>,
}

/// Checks `output` (earlier checkpoints need `resume`) and reads the training and held-out data.
pub fn prepare(
    output: &Path,
    resume: bool,
    data: &Path,
    eval: Option<&Path>,
) -> anyhow::Result<TrainInputs> {
    let checkpoints = output.join("checkpoints");
    if !resume && !lm_core::train::checkpoint::list(&checkpoints)?.is_empty() {
        bail!(
            "{} holds checkpoints of an earlier run: pass --resume to continue it, or choose another --output",
            checkpoints.display()
        );
    }
    let train = read_training_jsonl(data)?;
    let eval = match eval {
        Some(p) => read_training_jsonl(p)?,
        None => Vec::new(),
    };
    std::fs::create_dir_all(output).with_context(|| format!("creating {}", output.display()))?;
    Ok(TrainInputs {
        checkpoints,
        train,
        eval,
    })
}

/// Replaces `output` as a whole: `write` fills the new directory, then `output/checkpoints` (if
/// any) is moved into it and the new directory swapped in.
pub fn commit(
    output: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let staged = atomic_fs::StagedDir::replacing(output)?;
    write(staged.path())?;
    let checkpoints = output.join("checkpoints");
    if checkpoints.is_dir() {
        std::fs::rename(&checkpoints, staged.path().join("checkpoints"))
            .with_context(|| format!("moving {} into the new output", checkpoints.display()))?;
    }
    staged.commit()?;
    Ok(())
}
