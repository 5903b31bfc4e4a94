//! The K-shot evaluation flags shared by `eval` and `rank-bank`; defaults from
//! [`EvalConfig::default`].

use std::sync::LazyLock;

use clap::Args;
use kshot_eval::{AnswerExtractor, EvalConfig};

use super::format::FormatArg;
use super::model::{ModelArgs, PrecisionArgs};

static DEFAULTS: LazyLock<EvalConfig> = LazyLock::new(EvalConfig::default);

/// Model, shots and generation settings of a K-shot evaluation.
#[derive(Debug, Clone, Args)]
pub struct EvalFlags {
    /// The model evaluated.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// In-context shots drawn (seeded) from the set; the rest is evaluated.
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// Seed of the shot draw and of the bootstrap.
    #[arg(long, default_value_t = DEFAULTS.seed)]
    pub seed: u64,
    /// Evaluate only the first N items (after the shots are drawn).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Prompt format: the chat template (shots as turns), lm-eval plain few-shot text, or raw
    /// (the prompt followed directly by the answer); the same as in `train`.
    #[arg(long, value_enum, default_value_t = FormatArg::default())]
    pub format: FormatArg,
    /// Answer extractor steps, comma separated: answer-is, final-number, last-line, auto,
    /// letter:N, regex:PATTERN (last) [default: answer-is,auto].
    #[arg(long)]
    pub extractor: Option<String>,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = DEFAULTS.max_new_tokens)]
    pub max_new_tokens: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = DEFAULTS.batch_size)]
    pub batch_size: usize,
    /// Bootstrap resamples for standard errors.
    #[arg(long, default_value_t = DEFAULTS.bootstrap_resamples)]
    pub bootstrap: usize,
}

impl EvalFlags {
    /// The evaluation config these flags describe (progress bars on).
    pub fn config(&self) -> anyhow::Result<EvalConfig> {
        Ok(EvalConfig {
            format: self.format.prompt_format(),
            extractor: match &self.extractor {
                Some(spec) => AnswerExtractor::parse(spec)?,
                None => AnswerExtractor::default(),
            },
            max_new_tokens: self.max_new_tokens,
            batch_size: self.batch_size,
            bootstrap_resamples: self.bootstrap,
            seed: self.seed,
            show_progress: true,
            ..EvalConfig::default()
        })
    }

    /// Drops `--limit`-exceeding items.
    pub fn limit(&self, items: &mut Vec<kshot_eval::KShotItem>) {
        if let Some(n) = self.limit {
            items.truncate(n);
        }
    }
}
