//! `--model` (the decoder a command runs) and the global `--device` / `--threads`.

use clap::Args;
use lm_core::assets::DEFAULT_MODEL;
use lm_core::model::{LanguageModel, Precision};
use lm_core::quant::WeightFormat;

/// The decoder a command loads.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A GGUF file, a Hugging Face model directory, or an asset name from assets/manifest.toml.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
}

/// `--decode-weights`: what decode steps multiply by (see `lm_core::quant`). Not `--weights`,
/// which is already the issue-syntax alias of `--adapter-weight`.
#[derive(Debug, Clone, Args)]
pub struct WeightsArgs {
    /// Weights the decode steps multiply by: f32 (dequantised at load), q8_0 (every projection
    /// and the head re-quantised to Q8_0) or native (the GGUF's own Q8_0 / Q4_1 / Q5_0 / Q4_K /
    /// Q6_K blocks, f32 for other types). Quantised weights are used on the CPU backend for
    /// decode steps of at most 4 rows; prompts and scoring stay f32.
    #[arg(
        long = "decode-weights",
        default_value = "f32",
        value_name = "f32|q8_0|native"
    )]
    pub decode_weights: WeightFormat,
}

impl WeightsArgs {
    /// Gives the model its decode weights (nothing for f32), saying what it did on stderr.
    pub fn apply(&self, model: &mut LanguageModel) -> anyhow::Result<()> {
        if self.decode_weights != WeightFormat::F32 {
            let report = model.set_decode_weights(self.decode_weights)?;
            eprintln!("{report}");
        }
        Ok(())
    }
}

/// `--dtype`: the precision the decoder computes in (`lm_core::model::precision`).
#[derive(Debug, Clone, Args)]
pub struct PrecisionArgs {
    /// Precision of the decoder's weights and activations: f32, or f16 / bf16 (matmuls
    /// accumulate in f32; norms, softmax, LoRA adapters and logits stay f32; Gemma 3 takes
    /// bf16, not f16). Meant for GPUs: on the CPU they mostly serve to test (docs/gpu.md).
    #[arg(
        long = "dtype",
        env = "OPENEXPERT_DTYPE",
        default_value = "f32",
        value_name = "f32|f16|bf16"
    )]
    pub precision: Precision,
}

impl PrecisionArgs {
    /// Loads the decoder `spec` ([`LanguageModel::load`]) on `device` in this precision.
    pub fn load(
        &self,
        spec: &str,
        device: &lm_core::burn::tensor::Device,
    ) -> anyhow::Result<LanguageModel> {
        let mut model = LanguageModel::load(spec, device)?;
        model.set_precision(self.precision)?;
        Ok(model)
    }
}

/// Where the work runs (global: accepted before or after the subcommand).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct DeviceArgs {
    /// Device to run on: cpu, flex, ndarray, wgpu, cuda (GPU ones need their cargo feature).
    #[arg(long, global = true, env = "OPENEXPERT_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Worker threads for CPU kernels (default: all cores).
    #[arg(long, global = true, env = "OPENEXPERT_THREADS")]
    pub threads: Option<usize>,
}
