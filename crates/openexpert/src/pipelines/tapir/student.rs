//! [`LoraStudent`]: the TAPIR student, an lm-core model plus one LoRA adapter that grows round
//! by round.
//!
//! - **Answers**: the model's chat template, greedy, `max_new_tokens`, with the current adapter
//!   attached (the base model before round 1), in batches.
//! - **Training** of round `r`: [`LoraTrainer`] on the round's `(instruction, response)` pairs
//!   as one-turn chats (loss on the response only), **starting from round `r-1`'s factors**
//!   (θ_r initialised from θ_{r-1}; the optimiser state starts fresh each round), checkpointing
//!   under `train/checkpoints/` and resuming from there after a crash. The adapter is written
//!   as a PEFT directory `train/adapter/` (loadable by `openexpert generate --adapter`), with
//!   `train_report.json` and `train_config.json`.
//! - **Resume**: [`Student::load_round`] reads `train/adapter/` back into trainable factors.
//!   Adapters are stored as f32, so a resumed round starts from exactly the factors an
//!   uninterrupted run would.

use std::path::Path;

use atomic_fs::write_json;
use lm_core::chat_template::ChatMessage;
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::train::{LoraTrainer, LoraWeights, PromptFormat, TrainConfig, TrainExample};
use tapir_curriculum::TapirError;
use tapir_curriculum::roles::{Student, TrainPair};

/// The LoRA student (see the module docs).
pub struct LoraStudent {
    model: LanguageModel,
    name: String,
    train: TrainConfig,
    max_new_tokens: usize,
    batch_size: usize,
    current: Option<LoraWeights>,
    progress: bool,
}

impl std::fmt::Debug for LoraStudent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraStudent")
            .field("model", &self.name)
            .field("trained", &self.current.is_some())
            .finish_non_exhaustive()
    }
}

impl LoraStudent {
    /// A student over a loaded model; `name` (its spec) goes into the adapters'
    /// `base_model_name_or_path`.
    pub fn new(
        model: LanguageModel,
        name: &str,
        train: TrainConfig,
        max_new_tokens: usize,
        batch_size: usize,
    ) -> Self {
        Self {
            model,
            name: name.to_string(),
            train,
            max_new_tokens,
            batch_size: batch_size.max(1),
            current: None,
            progress: false,
        }
    }

    /// Show progress bars on stderr.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The current adapter's factors (`None` before any round).
    pub fn current(&self) -> Option<&LoraWeights> {
        self.current.as_ref()
    }

    fn err(
        &self,
        doing: &str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> TapirError {
        TapirError::role("student", format!("local {}", self.name), doing, e)
    }
}

impl Student for LoraStudent {
    fn respond(&mut self, instructions: &[String]) -> tapir_curriculum::Result<Vec<String>> {
        if instructions.is_empty() {
            return Ok(Vec::new());
        }
        let prompts: Vec<Vec<u32>> = instructions
            .iter()
            .map(|i| {
                let text = self
                    .model
                    .render_chat(&[ChatMessage::user(i.clone())], true)?;
                let mut ids = self.model.encode_chat(&text)?;
                // Keep room for the answer: a prompt too long for the context loses its start.
                let room = self
                    .model
                    .max_context()
                    .saturating_sub(self.max_new_tokens)
                    .max(1);
                if ids.len() > room {
                    ids.drain(..ids.len() - room);
                }
                Ok(ids)
            })
            .collect::<lm_core::Result<_>>()
            .map_err(|e| self.err("rendering prompts", e))?;
        let base = self.model.decoder.clone();
        let mix = match &self.current {
            Some(w) => {
                w.attach(&mut self.model.decoder, &self.model.device);
                ExpertMix::Static(vec![1.0])
            }
            None => ExpertMix::Base,
        };
        let config = GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            ..GenerationConfig::default()
        };
        // Longest first so each batch pads little; answers go back to input order.
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(prompts[i].len()), i));
        let bar = lm_core::progress::bar_if(
            self.progress,
            prompts.len() as u64,
            "student answers",
            "answers",
        );
        let mut out = vec![String::new(); prompts.len()];
        let mut result = Ok(());
        for block in order.chunks(self.batch_size) {
            let batch: Vec<Vec<u32>> = block.iter().map(|&i| prompts[i].clone()).collect();
            match generate(&self.model, &batch, &config, &mix) {
                Ok(gens) => {
                    for (&i, g) in block.iter().zip(gens) {
                        out[i] = g.text.trim().to_string();
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            bar.inc(block.len() as u64);
        }
        bar.finish_and_clear();
        self.model.decoder = base;
        result.map_err(|e| self.err("answering", e))?;
        Ok(out)
    }

    fn train_round(
        &mut self,
        round: usize,
        data: &[TrainPair],
        dir: &Path,
    ) -> tapir_curriculum::Result<serde_json::Value> {
        let examples: Vec<TrainExample> = data
            .iter()
            .map(|p| TrainExample::PromptResponse {
                prompt: p.instruction.clone(),
                response: p.response.clone(),
            })
            .collect();
        std::fs::create_dir_all(dir).map_err(|e| TapirError::io(dir, e))?;
        let doing = format!("training round {round}");
        let mut trainer = LoraTrainer::new(&self.model, self.train.clone())
            .with_format(PromptFormat::default())
            .with_checkpoints(dir.join("checkpoints"), true)
            .with_progress(self.progress);
        if let Some(w) = &self.current {
            trainer = trainer.with_initial_weights(w.clone());
        }
        let outcome = trainer
            .fit(&examples, &[])
            .map_err(|e| self.err(&doing, e))?;
        let adapter = lora_zoo::adapter_from_trained(&outcome.weights, Some(&self.name))
            .map_err(|e| self.err(&doing, e))?;
        let adapter_dir = dir.join("adapter");
        adapter
            .save(&adapter_dir)
            .map_err(|e| self.err(&doing, e))?;
        let r = &outcome.report;
        write_json(&dir.join("train_report.json"), r)?;
        write_json(&dir.join("train_config.json"), &self.train)?;
        let summary = serde_json::json!({
            "adapter": adapter_dir.display().to_string(),
            "examples": r.train_data.examples,
            "kept": r.train_data.kept,
            "steps": r.steps,
            "resumed_from_step": r.resumed_from,
            "warm_start": self.current.is_some(),
            "first_loss": r.losses.first(),
            "final_train_loss": r.final_train_loss,
            "mean_train_loss": r.mean_train_loss,
            "tokens_per_second": r.tokens_per_second,
            "train_seconds": r.seconds,
        });
        self.current = Some(outcome.weights);
        Ok(summary)
    }

    fn load_round(&mut self, round: usize, dir: &Path) -> tapir_curriculum::Result<()> {
        let adapter_dir = dir.join("adapter");
        let doing = format!(
            "loading round {round}'s adapter from {}",
            adapter_dir.display()
        );
        let adapter = lora_zoo::LoraAdapter::load(&adapter_dir).map_err(|e| self.err(&doing, e))?;
        let weights =
            lora_zoo::trained_from_adapter(&adapter, &self.model.decoder, &self.train.lora)
                .map_err(|e| self.err(&doing, e))?;
        self.current = Some(weights);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lm_core::testing::tiny_language_model;
    use lm_core::train::LoraTrainConfig;

    fn student() -> LoraStudent {
        let device = lm_core::device::device_from_name("cpu").unwrap();
        let train = TrainConfig::new(LoraTrainConfig::new().with_r(4).with_dropout(0.0))
            .with_max_steps(Some(2))
            .with_batch_size(2)
            .with_lr(5e-2)
            .with_max_len(64)
            .with_checkpoint_every(1);
        LoraStudent::new(tiny_chat_model(&device), "tiny", train, 4, 2)
    }

    /// The tiny random model with a minimal chat template.
    pub(crate) fn tiny_chat_model(device: &lm_core::burn::tensor::Device) -> LanguageModel {
        let mut m = tiny_language_model(3, device);
        m.chat_template = Some(
            lm_core::chat_template::ChatTemplate::new(
                "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
                "",
                "",
            )
            .unwrap(),
        );
        m
    }

    #[test]
    fn rounds_continue_from_the_last_adapter_and_reload_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = student();
        let base = s
            .respond(&["hi".into(), "there".into(), "you".into()])
            .unwrap();
        assert_eq!(base.len(), 3);
        let mut no_template = student();
        no_template.model.chat_template = None;
        let e = no_template.respond(&["hi".into()]).unwrap_err().to_string();
        assert!(e.contains("student") && e.contains("chat template"), "{e}");
        let data: Vec<TrainPair> = (0..4)
            .map(|i| TrainPair {
                instruction: format!("q{i}"),
                response: format!("a{i}"),
            })
            .collect();
        let r1 = s.train_round(1, &data, &tmp.path().join("r1")).unwrap();
        assert_eq!(r1["warm_start"], false);
        let after1 = s.current().unwrap().clone();
        let r2 = s.train_round(2, &data, &tmp.path().join("r2")).unwrap();
        assert_eq!(r2["warm_start"], true);
        let after2 = s.current().unwrap().values.clone();
        assert_ne!(after1.values, after2);
        // a fresh student loading round 1 has exactly round 1's factors ...
        let mut fresh = student();
        fresh.load_round(1, &tmp.path().join("r1")).unwrap();
        assert_eq!(fresh.current().unwrap().values, after1.values);
        // ... and training round 2 from them (as a resumed run does) gives round 2's factors
        let tmp2 = tempfile::tempdir().unwrap();
        fresh
            .train_round(2, &data, &tmp2.path().join("r2"))
            .unwrap();
        assert_eq!(fresh.current().unwrap().values, after2);
        assert!(tmp.path().join("r2/adapter/adapter_config.json").is_file());
        // answers follow the current adapter and are deterministic
        let a = fresh.respond(&["hi".into()]).unwrap();
        assert_eq!(a, fresh.respond(&["hi".into()]).unwrap());
    }
}
