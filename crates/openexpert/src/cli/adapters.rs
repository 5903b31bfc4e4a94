//! `--adapter DIR` (repeatable) and `--adapter-weight W` (repeatable) for `score` and `generate`:
//! PEFT adapters applied unmerged, combined as `W + Σ w_i ΔW_i`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use lm_core::model::{ExpertMix, LanguageModel};
use lora_zoo::LoraAdapter;
use lora_zoo::apply::attach_adapters;

/// Adapter flags shared by the model-running subcommands.
#[derive(Debug, Args, Default)]
pub struct AdapterArgs {
    /// A PEFT adapter directory to apply (repeat for several).
    #[arg(long = "adapter")]
    pub adapters: Vec<PathBuf>,
    /// Weight of each adapter, in the same order (default 1 each).
    #[arg(long = "adapter-weight", allow_negative_numbers = true)]
    pub weights: Vec<f32>,
}

impl AdapterArgs {
    /// Attaches the adapters to the model and returns the mix that applies them.
    pub fn apply(&self, model: &mut LanguageModel) -> anyhow::Result<ExpertMix> {
        if self.adapters.is_empty() {
            if !self.weights.is_empty() {
                bail!("--adapter-weight given without --adapter");
            }
            return Ok(ExpertMix::Base);
        }
        let weights = match self.weights.len() {
            0 => vec![1.0; self.adapters.len()],
            n if n == self.adapters.len() => self.weights.clone(),
            n => bail!(
                "expected one --adapter-weight per --adapter ({}), found {n}",
                self.adapters.len()
            ),
        };
        let loaded = self
            .adapters
            .iter()
            .map(|dir| {
                LoraAdapter::load(dir).with_context(|| format!("loading adapter {}", dir.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let refs: Vec<&LoraAdapter> = loaded.iter().collect();
        attach_adapters(&mut model.decoder, &refs)?;
        Ok(ExpertMix::Static(weights))
    }
}
