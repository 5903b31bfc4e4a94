//! `--adapter DIR` / `--adapter-weight W`: PEFT adapters combined into one expert, in every
//! command that takes them; `--moe DIR`: a saved mixture of LoRA experts (`openexpert moe
//! build|train|arrow`) routed per token instead. `generate`, `score` and `eval` apply them unmerged as
//! `W + Σ wᵢ·ΔWᵢ` ([`ExpertMix::Static`]); `lora combine` / `lora merge` combine them with
//! `--method` (linear by default, the same sum). Evaluating adapters *separately* is a different
//! flag: `eval --each-adapter`, `rank-bank --bank`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use lm_core::model::{ExpertMix, LanguageModel};
use lora_zoo::LoraAdapter;
use lora_zoo::apply::attach_adapters;

/// Adapters combined into one expert.
#[derive(Debug, Clone, Default, Args)]
pub struct AdapterArgs {
    /// A PEFT adapter directory; repeat (or separate with commas) to combine several.
    #[arg(
        long = "adapter",
        alias = "adapters",
        value_name = "DIR",
        value_delimiter = ','
    )]
    pub adapters: Vec<PathBuf>,
    /// Weight of each --adapter, in the same order; repeat or separate with commas (default: 1
    /// each; negative weights subtract).
    #[arg(
        long = "adapter-weight",
        alias = "weights",
        value_name = "W",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    pub weights: Vec<f32>,
    /// A mixture-of-experts directory (`moe_config.json`, `router.safetensors`, `experts/`),
    /// routed per token; instead of --adapter.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["adapters", "weights"])]
    pub moe: Option<PathBuf>,
}

impl AdapterArgs {
    /// Whether no adapter and no mixture was given.
    pub fn is_empty(&self) -> bool {
        self.adapters.is_empty() && self.moe.is_none()
    }

    /// One weight per adapter: the given ones, or 1 each.
    pub fn weights(&self) -> anyhow::Result<Vec<f32>> {
        match self.weights.len() {
            0 => Ok(vec![1.0; self.adapters.len()]),
            _ if self.adapters.is_empty() => bail!("--adapter-weight given without --adapter"),
            n if n == self.adapters.len() => Ok(self.weights.clone()),
            n => bail!(
                "expected one --adapter-weight per --adapter ({}), found {n}",
                self.adapters.len()
            ),
        }
    }

    /// Loads the adapters, failing with the directory that could not be read.
    pub fn load(&self) -> anyhow::Result<Vec<LoraAdapter>> {
        self.adapters
            .iter()
            .map(|dir| {
                LoraAdapter::load(dir).with_context(|| format!("loading adapter {}", dir.display()))
            })
            .collect()
    }

    /// Attaches the adapters to the model and returns the mix that applies them
    /// ([`ExpertMix::Base`] when none is given).
    pub fn apply(&self, model: &mut LanguageModel) -> anyhow::Result<ExpertMix> {
        if let Some(dir) = &self.moe {
            let moe = moe_router::Moe::load(&mut model.decoder, dir)
                .with_context(|| format!("loading the mixture {}", dir.display()))?;
            return Ok(moe.mix());
        }
        let weights = self.weights()?;
        if self.is_empty() {
            return Ok(ExpertMix::Base);
        }
        let loaded = self.load()?;
        let refs: Vec<&LoraAdapter> = loaded.iter().collect();
        attach_adapters(&mut model.decoder, &refs)?;
        Ok(ExpertMix::Static(weights))
    }

    /// A name for the combination in reports: `base`, `a`, `a+b`, or `0.5*a+-1*b` with weights.
    pub fn label(&self) -> anyhow::Result<String> {
        if let Some(dir) = &self.moe {
            return Ok(format!("moe:{}", dir_name(dir)));
        }
        if self.is_empty() {
            return Ok("base".into());
        }
        let weighted = !self.weights.is_empty();
        Ok(self
            .adapters
            .iter()
            .zip(self.weights()?)
            .map(|(dir, w)| {
                if weighted {
                    format!("{w}*{}", dir_name(dir))
                } else {
                    dir_name(dir)
                }
            })
            .collect::<Vec<_>>()
            .join("+"))
    }
}

/// The last component of an adapter directory (the whole path when it has none).
pub fn dir_name(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
