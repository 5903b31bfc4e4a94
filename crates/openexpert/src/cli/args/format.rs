//! `--format chat|plain|raw`: how an example becomes the model's input text, the same in every
//! command (train, eval, rank-bank, select evolve), through the one [`PromptFormat`].

use clap::ValueEnum;
use lm_core::prompt::PromptFormat;

/// How prompts (and training examples) become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FormatArg {
    /// The model's chat template (question = user turn, answer = assistant turn).
    #[default]
    Chat,
    /// lm-eval's plain text: `Question: {question}\nAnswer:` then ` {answer}`.
    Plain,
    /// The prompt followed directly by the answer (models without a chat template).
    Raw,
}

impl FormatArg {
    /// The one prompt format, for training and evaluation alike.
    pub fn prompt_format(self) -> PromptFormat {
        match self {
            FormatArg::Chat => PromptFormat::default(),
            FormatArg::Plain => PromptFormat::plain(),
            FormatArg::Raw => PromptFormat::raw(),
        }
    }
}
