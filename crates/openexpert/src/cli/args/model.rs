//! `--model` (the decoder a command runs) and the global `--device` / `--threads`.

use clap::Args;
use lm_core::assets::DEFAULT_MODEL;

/// The decoder a command loads.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A GGUF file, a Hugging Face model directory, or an asset name from assets/manifest.toml.
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
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
