//! DiverseEvol on lm-core: the [`EvolveModel`] that data-select's loop
//! ([`data_select::evolve::run_evolve`]) drives.
//!
//! - **Embedding**: every pool item's full training sequence (the tokens the trainer sees: chat
//!   template, prompt and response, truncated at `max_len`) through the current model (base +
//!   the current round's LoRA), mean-pooled over all tokens of the last hidden layer, as the
//!   reference does.
//! - **Training**: a LoRA on the labelled items with [`LoraTrainer`], from a fresh adapter
//!   (the reference retrains from the base each round) or, after
//!   [`EvolveModel::reset_to_base`] was skipped (warm start), from the previous round's factors.
//!   A round's training checkpoints under `rd_{t}/checkpoints/` and resumes from them, so a
//!   crash mid-round loses at most `checkpoint_every` steps.
//! - **Artifacts** of round `t` under `rd_{t}/`: `adapter/` (PEFT `adapter_config.json` +
//!   `adapter_model.safetensors`), `train_report.json`, `train_config.json`.

use std::path::Path;

use atomic_fs::write_json;
use data_select::evolve::EvolveModel;
use data_select::{Result, SelectError};
use lm_core::embed::decoder_embeddings;
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::train::data::tokenize_examples;
use lm_core::train::{
    LoraTrainer, LoraWeights, OverflowPolicy, PromptFormat, TrainConfig, TrainExample,
};
use ndarray::Array2;
use sha2::{Digest, Sha256};

/// Pool items embedded per progress-bar tick (and per call of the embedder).
const EMBED_BLOCK: usize = 32;

/// The real model side of DiverseEvol: a base [`LanguageModel`], the pool as training examples,
/// and the LoRA of the latest round.
pub struct LoraEvolveModel {
    model: LanguageModel,
    name: String,
    examples: Vec<TrainExample>,
    sequences: Vec<Vec<u32>>,
    eval: Vec<TrainExample>,
    config: TrainConfig,
    format: PromptFormat,
    current: Option<LoraWeights>,
    embed_batch: usize,
    progress: bool,
}

impl std::fmt::Debug for LoraEvolveModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraEvolveModel")
            .field("name", &self.name)
            .field("pool", &self.examples.len())
            .field("trained", &self.current.is_some())
            .finish_non_exhaustive()
    }
}

fn model_err(stage: impl Into<String>) -> impl FnOnce(lm_core::LmError) -> SelectError {
    let stage = stage.into();
    move |e| SelectError::model(stage, e)
}

impl LoraEvolveModel {
    /// Wraps a loaded base model; `name` (the model spec) goes into the adapters'
    /// `base_model_name_or_path` and the run fingerprint. Tokenises the pool once.
    ///
    /// # Errors
    /// A pool item that has no response tokens (nothing to train on) or that the format
    /// cannot render.
    pub fn new(
        model: LanguageModel,
        name: &str,
        examples: Vec<TrainExample>,
        config: TrainConfig,
        format: PromptFormat,
    ) -> Result<Self> {
        // Tokenise at full length first: an item whose response lies beyond `max_len` is still
        // embedded, from its first `max_len` tokens, as the reference does (training skips it).
        let max_len = config.max_len.min(model.max_context());
        let (tokenized, stats) = tokenize_examples(
            &model,
            &examples,
            &format,
            model.max_context(),
            OverflowPolicy::Truncate,
        )
        .map_err(model_err("tokenising the pool"))?;
        if let Some(&bad) = stats.skipped_no_response.first() {
            return Err(SelectError::param(
                "pool",
                format!(
                    "pool item {bad} (0-based) has no response tokens to train on ({} such items); every item needs an answer",
                    stats.skipped_no_response.len()
                ),
            ));
        }
        let sequences = tokenized
            .into_iter()
            .map(|mut t| {
                t.ids.truncate(max_len);
                t.ids
            })
            .collect();
        Ok(Self {
            model,
            name: name.to_string(),
            examples,
            sequences,
            eval: Vec::new(),
            config,
            format,
            current: None,
            embed_batch: 8,
            progress: false,
        })
    }

    /// A held-out set whose loss every round reports (before and after training).
    pub fn with_eval(mut self, eval: Vec<TrainExample>) -> Self {
        self.eval = eval;
        self
    }

    /// Show progress bars (embedding and training) on stderr.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The token ids each pool item is embedded from: its training sequence, cut at `max_len`.
    pub fn sequences(&self) -> &[Vec<u32>] {
        &self.sequences
    }

    /// The LoRA of the latest trained (or loaded) round, if any.
    pub fn current(&self) -> Option<&LoraWeights> {
        self.current.as_ref()
    }

    /// The pool as training examples, in pool order.
    pub fn examples(&self) -> &[TrainExample] {
        &self.examples
    }

    /// Runs `f` on the model with the latest round's LoRA attached (`ExpertMix::Static([1.0])`),
    /// or on the base model (`ExpertMix::Base`) when no round was trained or loaded since the
    /// last [`EvolveModel::reset_to_base`]. The base decoder is put back afterwards, so the
    /// adapter never leaks into the next round's training.
    pub fn with_current<R>(&mut self, f: impl FnOnce(&LanguageModel, &ExpertMix) -> R) -> R {
        let base = self.model.decoder.clone();
        let mix = match &self.current {
            Some(w) => {
                w.attach(&mut self.model.decoder, &self.model.device);
                ExpertMix::Static(vec![1.0])
            }
            None => ExpertMix::Base,
        };
        let out = f(&self.model, &mix);
        self.model.decoder = base;
        out
    }

    /// A hex SHA-256 of everything that determines a run: the model name and precision, the
    /// pool's token ids, the held-out set's size, the training config and the format. Pass it to
    /// [`run_evolve`](data_select::evolve::run_evolve) so a resume with other inputs is refused.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        // f32 keeps the hash it had before `--dtype`, so older runs still resume.
        let precision = self.model.decoder.precision();
        if precision != lm_core::model::Precision::F32 {
            h.update(format!("+dtype:{precision}").as_bytes());
        }
        h.update(format!("{:?}", self.format).as_bytes());
        h.update(serde_json::to_vec(&self.config).expect("the config serialises"));
        h.update((self.eval.len() as u64).to_le_bytes());
        for s in &self.sequences {
            h.update((s.len() as u64).to_le_bytes());
            for id in s {
                h.update(id.to_le_bytes());
            }
        }
        format!("{:x}", h.finalize())
    }
}

impl EvolveModel for LoraEvolveModel {
    fn pool_len(&self) -> usize {
        self.examples.len()
    }

    fn embed(&mut self) -> Result<Array2<f32>> {
        let n = self.sequences.len();
        let d = self.model.config().hidden_size;
        let base = self.model.decoder.clone();
        let mix = match &self.current {
            Some(w) => {
                w.attach(&mut self.model.decoder, &self.model.device);
                ExpertMix::Static(vec![1.0])
            }
            None => ExpertMix::Base,
        };
        // Longest first, so each block pads little; rows go back to pool order below.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(self.sequences[i].len()));
        let bar = lm_core::progress::bar_if(self.progress, n as u64, "embed pool", "items");
        let mut out = Array2::<f32>::zeros((n, d));
        let mut result = Ok(());
        for block in order.chunks(EMBED_BLOCK) {
            let seqs: Vec<Vec<u32>> = block.iter().map(|&i| self.sequences[i].clone()).collect();
            match decoder_embeddings(&self.model, &seqs, self.embed_batch, &mix) {
                Ok(rows) => {
                    for (&i, row) in block.iter().zip(rows) {
                        out.row_mut(i)
                            .assign(&ndarray::ArrayView1::from(row.as_slice()));
                    }
                }
                Err(e) => {
                    result = Err(SelectError::embedder(
                        format!("decoder-mean:{}", self.name),
                        e,
                    ));
                    break;
                }
            }
            bar.inc(block.len() as u64);
        }
        bar.finish_and_clear();
        self.model.decoder = base;
        result.map(|()| out)
    }

    fn reset_to_base(&mut self) {
        self.current = None;
    }

    fn train(
        &mut self,
        round: usize,
        labeled: &[usize],
        round_dir: &Path,
    ) -> Result<serde_json::Value> {
        let subset: Vec<TrainExample> = labeled
            .iter()
            .map(|&i| {
                self.examples
                    .get(i)
                    .cloned()
                    .ok_or(SelectError::IndexOutOfRange {
                        what: format!("round {round} labelled items"),
                        index: i,
                        len: self.examples.len(),
                    })
            })
            .collect::<Result<_>>()?;
        let stage = format!("training round {round}");
        let mut trainer = LoraTrainer::new(&self.model, self.config.clone())
            .with_format(self.format.clone())
            .with_checkpoints(round_dir.join("checkpoints"), true)
            .with_progress(self.progress);
        if let Some(w) = &self.current {
            trainer = trainer.with_initial_weights(w.clone());
        }
        let outcome = trainer
            .fit(&subset, &self.eval)
            .map_err(model_err(stage.clone()))?;
        let adapter = lora_zoo::adapter_from_trained(&outcome.weights, Some(&self.name))
            .map_err(|e| SelectError::model(stage.clone(), e))?;
        let adapter_dir = round_dir.join("adapter");
        adapter.save(&adapter_dir).map_err(|e| {
            SelectError::model(
                format!("writing the adapter to {}", adapter_dir.display()),
                e,
            )
        })?;
        let report = &outcome.report;
        write_json(&round_dir.join("train_report.json"), report)?;
        write_json(&round_dir.join("train_config.json"), &self.config)?;
        let summary = serde_json::json!({
            "adapter": "adapter",
            "examples": report.train_data.examples,
            "kept": report.train_data.kept,
            "steps": report.steps,
            "resumed_from_step": report.resumed_from,
            "first_loss": report.losses.first(),
            "final_train_loss": report.final_train_loss,
            "mean_train_loss": report.mean_train_loss,
            "base_eval_loss": report.base_eval_loss,
            "eval_loss": report.eval_losses.last().map(|(_, l)| *l),
            "tokens_per_second": report.tokens_per_second,
            "train_seconds": report.seconds,
        });
        self.current = Some(outcome.weights);
        Ok(summary)
    }

    fn load_round(&mut self, round: usize, round_dir: &Path) -> Result<()> {
        let dir = round_dir.join("adapter");
        let adapter = lora_zoo::LoraAdapter::load(&dir).map_err(|e| {
            SelectError::model(
                format!("loading round {round}'s adapter from {}", dir.display()),
                e,
            )
        })?;
        let weights =
            lora_zoo::trained_from_adapter(&adapter, &self.model.decoder, &self.config.lora)
                .map_err(|e| SelectError::model(format!("reading round {round}'s adapter"), e))?;
        self.current = Some(weights);
        Ok(())
    }
}

/// A tiny random model with a pool of short prompt/response pairs, for the tests of the
/// DiverseEvol pipelines (this module's and [`super::evolve_test`]'s).
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use lm_core::testing::tiny_language_model;
    use lm_core::train::LoraTrainConfig;

    /// `n` examples `q{i}:` -> ` ab…` (1 to 5 repeats).
    pub(crate) fn pool(n: usize) -> Vec<TrainExample> {
        (0..n)
            .map(|i| TrainExample::PromptResponse {
                prompt: format!("q{i}:"),
                response: format!(" {}", "ab".repeat(i % 5 + 1)),
            })
            .collect()
    }

    /// A LoRA model on the tiny decoder over [`pool`]`(n)`, trained `steps` steps a round.
    pub(crate) fn evolve_model(n: usize, steps: usize) -> LoraEvolveModel {
        let device = lm_core::device::device_from_name("cpu").unwrap();
        let config = TrainConfig::new(LoraTrainConfig::new().with_r(4).with_dropout(0.0))
            .with_max_steps(Some(steps))
            .with_batch_size(4)
            .with_lr(5e-2)
            .with_max_len(64);
        LoraEvolveModel::new(
            tiny_language_model(3, &device),
            "tiny",
            pool(n),
            config,
            PromptFormat::raw(),
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use data_select::evolve::{EvolveConfig, RoundPicks, picks_path, run_evolve};
    use test_support::pool;

    fn evolve_model(n: usize) -> LoraEvolveModel {
        test_support::evolve_model(n, 3)
    }

    #[test]
    fn embeddings_follow_the_current_adapter_and_reset_goes_back_to_base() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = evolve_model(12);
        let base = m.embed().unwrap();
        assert_eq!(base.dim(), (12, m.model.config().hidden_size));
        // rows are per item, in pool order: distinct items give distinct rows
        assert_ne!(base.row(0), base.row(1));
        // each row is the mean-pooled state of the item's training sequence (what the trainer sees)
        let (tokenized, _) = tokenize_examples(
            &m.model,
            &pool(12),
            &PromptFormat::raw(),
            64,
            OverflowPolicy::Truncate,
        )
        .unwrap();
        assert_eq!(m.sequences()[5], tokenized[5].ids);
        let direct =
            decoder_embeddings(&m.model, &[tokenized[5].ids.clone()], 1, &ExpertMix::Base).unwrap();
        let diff = base
            .row(5)
            .iter()
            .zip(&direct[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-4,
            "row 5 differs from a direct embedding by {diff}"
        );
        m.train(0, &[0, 1, 2, 3], dir.path()).unwrap();
        assert!(
            dir.path()
                .join("adapter/adapter_model.safetensors")
                .exists()
        );
        assert!(dir.path().join("train_report.json").exists());
        let trained = m.embed().unwrap();
        let moved = (&trained - &base).mapv(f32::abs).sum();
        assert!(moved > 1e-3, "the adapter changes the embeddings ({moved})");
        // the base decoder is untouched by embedding with the adapter
        m.reset_to_base();
        assert_eq!(m.embed().unwrap(), base);
        // loading the saved round gives back the same model, bit for bit
        let weights = m.current.clone();
        assert!(weights.is_none());
        m.load_round(0, dir.path()).unwrap();
        assert_eq!(m.embed().unwrap(), trained);
    }

    #[test]
    fn warm_start_resumed_from_saved_adapters_ends_with_the_same_adapter() {
        let cfg = EvolveConfig {
            init: 4,
            per_round: 3,
            rounds: 2,
            warm_start: true,
            ..EvolveConfig::default()
        };
        let adapter =
            |dir: &Path| std::fs::read(dir.join("rd_2/adapter/adapter_model.safetensors")).unwrap();
        let full_dir = tempfile::tempdir().unwrap();
        let mut full = evolve_model(16);
        let fp = full.fingerprint();
        let a = run_evolve(&mut full, &cfg, full_dir.path(), &fp, false).unwrap();
        assert!(a.rounds[2].warm_started);

        // a process that stopped after round 1; the next one must warm-start round 2 from
        // rd_1/adapter (PEFT on disk), not from a fresh LoRA
        let dir = tempfile::tempdir().unwrap();
        let one = EvolveConfig {
            rounds: 1,
            ..cfg.clone()
        };
        run_evolve(&mut evolve_model(16), &one, dir.path(), &fp, false).unwrap();
        std::fs::copy(
            full_dir.path().join("evolve.json"),
            dir.path().join("evolve.json"),
        )
        .unwrap();
        let b = run_evolve(&mut evolve_model(16), &cfg, dir.path(), &fp, true).unwrap();
        assert_eq!(b.trained_rounds, vec![2]);
        assert_eq!(b.labeled, a.labeled);
        assert_eq!(adapter(dir.path()), adapter(full_dir.path()));

        let cold_dir = tempfile::tempdir().unwrap();
        let cold = EvolveConfig {
            warm_start: false,
            ..cfg
        };
        run_evolve(&mut evolve_model(16), &cold, cold_dir.path(), &fp, false).unwrap();
        assert_ne!(adapter(cold_dir.path()), adapter(full_dir.path()));
    }

    #[test]
    fn a_loop_on_a_tiny_model_resumes_to_the_same_picks() {
        let cfg = EvolveConfig {
            init: 4,
            per_round: 3,
            rounds: 2,
            ..EvolveConfig::default()
        };
        let full_dir = tempfile::tempdir().unwrap();
        let mut full = evolve_model(16);
        let fp = full.fingerprint();
        let a = run_evolve(&mut full, &cfg, full_dir.path(), &fp, false).unwrap();
        assert_eq!(a.labeled.len(), 10);

        // crash: keep rounds 0 and 1, lose round 1's completion, then resume
        let dir = tempfile::tempdir().unwrap();
        let mut first = evolve_model(16);
        let two = EvolveConfig {
            rounds: 1,
            ..cfg.clone()
        };
        run_evolve(&mut first, &two, dir.path(), &fp, false).unwrap();
        std::fs::remove_file(dir.path().join("rd_1/round.json")).unwrap();
        // same manifest as the full run
        std::fs::copy(
            full_dir.path().join("evolve.json"),
            dir.path().join("evolve.json"),
        )
        .unwrap();
        let mut resumed = evolve_model(16);
        let b = run_evolve(&mut resumed, &cfg, dir.path(), &fp, true).unwrap();
        assert_eq!(b.skipped_rounds, vec![0]);
        assert_eq!(b.trained_rounds, vec![1, 2]);
        assert_eq!(b.labeled, a.labeled);
        let p2a: RoundPicks =
            serde_json::from_slice(&std::fs::read(picks_path(full_dir.path(), 2)).unwrap())
                .unwrap();
        let p2b: RoundPicks =
            serde_json::from_slice(&std::fs::read(picks_path(dir.path(), 2)).unwrap()).unwrap();
        assert_eq!(p2a.pick_distances, p2b.pick_distances);
        // another pool refuses to resume this directory
        let other = evolve_model(15).fingerprint();
        assert!(run_evolve(&mut evolve_model(16), &cfg, dir.path(), &other, true).is_err());
    }
}
