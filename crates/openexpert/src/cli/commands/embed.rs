//! `openexpert embed`: one f32 row per input line (field `text`) into a `.npy` file.
//!
//! A BERT directory or `minilm-l6-v2` gives sentence-transformers embeddings (mean pool + L2);
//! a decoder gives the mean of its last hidden layer over the sequence (DiverseEvol).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use lm_core::assets::{DEFAULT_ENCODER, ModelSource, resolve_model};
use lm_core::device::device_from_name;
use lm_core::embed::decoder_embeddings;
use lm_core::model::hf_config::{HfModelConfig, read_hf_config};
use lm_core::model::{ExpertMix, LanguageModel, SentenceEncoder};

use crate::cli::jsonl::read_objects;
use atomic_fs::write_atomic;

/// Arguments of `embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// A BERT HF directory, a decoder (GGUF / HF directory), or a default asset name.
    #[arg(long, default_value = DEFAULT_ENCODER)]
    pub model: String,
    /// Input JSONL with a `text` field per line.
    #[arg(long)]
    pub input: PathBuf,
    /// Output `.npy` (f32, `[rows, dim]`).
    #[arg(long)]
    pub output: PathBuf,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

/// Runs `embed`.
pub fn run(args: EmbedArgs, device: &str) -> anyhow::Result<()> {
    let rows = read_objects(&args.input)?;
    let texts = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.get("text")
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .with_context(|| {
                    format!(
                        "{}: row {}: expected a string `text` field",
                        args.input.display(),
                        i + 1
                    )
                })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let device = device_from_name(device)?;
    let is_encoder = match resolve_model(&args.model)? {
        ModelSource::HfDir(dir) => matches!(
            read_hf_config(&dir.join("config.json"))?,
            HfModelConfig::Encoder(_)
        ),
        ModelSource::Gguf(_) => false,
    };
    let (embeddings, dim) = if is_encoder {
        let enc = SentenceEncoder::load(&args.model, &device)?;
        (enc.embed(&texts, args.batch_size)?, enc.dim())
    } else {
        let model = LanguageModel::load(&args.model, &device)?;
        let ids = texts
            .iter()
            .map(|t| model.encode(t))
            .collect::<lm_core::Result<Vec<_>>>()?;
        let dim = model.config().hidden_size;
        (
            decoder_embeddings(&model, &ids, args.batch_size, &ExpertMix::Base)?,
            dim,
        )
    };
    let n = embeddings.len();
    let matrix = ndarray::Array2::from_shape_vec((n, dim), embeddings.concat())?;
    let mut bytes = Vec::new();
    data_select::npy::encode_npy(&mut bytes, matrix.view());
    write_atomic(&args.output, &bytes)?;
    Ok(())
}
