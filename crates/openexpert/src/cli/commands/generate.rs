//! `openexpert generate`: text from a prompt (with adapters combined by `--adapter`).

use std::sync::LazyLock;

use clap::Args;
use lm_core::chat_template::ChatMessage;
use lm_core::device::device_from_name;
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::LanguageModel;

use crate::cli::args::adapters::AdapterArgs;
use crate::cli::args::model::ModelArgs;

static DEFAULTS: LazyLock<GenerationConfig> = LazyLock::new(GenerationConfig::default);

/// Arguments of `generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The decoder.
    #[command(flatten)]
    pub model: ModelArgs,
    /// PEFT adapters to apply.
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// The prompt (repeat for a batch).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// Wrap each prompt as a user turn in the model's chat template.
    #[arg(long)]
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
    let mut model = LanguageModel::load(&args.model.model, &device)?;
    let mix = args.adapter.apply(&mut model)?;
    let prompts = args
        .prompt
        .iter()
        .map(|p| {
            let text = if args.chat {
                model.render_chat(&[ChatMessage::user(p.clone())], true)?
            } else {
                p.clone()
            };
            model.encode(&text)
        })
        .collect::<lm_core::Result<Vec<_>>>()?;
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        stop: args.stop.clone(),
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
