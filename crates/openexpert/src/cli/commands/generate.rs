//! `openexpert generate`: text from a prompt (with adapters combined by `--adapter`, or a
//! mixture routed by `--moe`), laid out by `--format` like in `train` and `eval`.

use std::sync::LazyLock;

use anyhow::bail;
use clap::Args;
use lm_core::device::device_from_name;
use lm_core::generate::{GenerationConfig, generate};

use crate::cli::args::adapters::AdapterArgs;
use crate::cli::args::format::FormatArg;
use crate::cli::args::model::{ModelArgs, PrecisionArgs, WeightsArgs};

static DEFAULTS: LazyLock<GenerationConfig> = LazyLock::new(GenerationConfig::default);

/// Arguments of `generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The decoder.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// PEFT adapters to apply, or a mixture.
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Weights decoding multiplies by.
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// The prompt (repeat for a batch).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// How each prompt becomes the model's input, the same as in `train` and `eval` (raw: the
    /// prompt as given).
    #[arg(long, value_enum, default_value_t = FormatArg::default())]
    pub format: FormatArg,
    /// Same as --format chat (kept for older command lines).
    #[arg(long, hide = true, conflicts_with = "format")]
    pub chat: bool,
    /// Most new tokens.
    #[arg(long, default_value_t = DEFAULTS.max_new_tokens)]
    pub max_new_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = DEFAULTS.temperature)]
    pub temperature: f32,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = DEFAULTS.top_p)]
    pub top_p: f32,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Sampler seed.
    #[arg(long, default_value_t = DEFAULTS.seed)]
    pub seed: u64,
    /// Print one JSON object per prompt instead of plain text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `generate`.
pub fn run(args: GenerateArgs, device: &str) -> anyhow::Result<()> {
    let device = device_from_name(device)?;
    let mut model = args.precision.load(&args.model.model, &device)?;
    args.weights.apply(&mut model)?;
    let mix = args.adapter.apply(&mut model)?;
    let format = if args.chat {
        FormatArg::Chat
    } else {
        args.format
    }
    .prompt_format();
    if format.is_chat() && model.chat_template.is_none() {
        bail!(
            "{} has no chat template, which --format chat needs; use --format raw or plain",
            model.source.display()
        );
    }
    let prompts = args
        .prompt
        .iter()
        .map(|p| model.encode_question(&format, p))
        .collect::<lm_core::Result<Vec<_>>>()?;
    let mut stop = args.stop.clone();
    stop.extend(format.default_stops());
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        stop,
        seed: args.seed,
        ..Default::default()
    };
    let outputs = generate(&model, &prompts, &config, &mix)?;
    for (prompt, out) in args.prompt.iter().zip(outputs) {
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "prompt": prompt,
                    "text": out.text,
                    "token_ids": out.token_ids,
                    "finish_reason": format!("{:?}", out.finish_reason).to_lowercase(),
                })
            );
        } else {
            println!("{}", out.text);
        }
    }
    Ok(())
}
