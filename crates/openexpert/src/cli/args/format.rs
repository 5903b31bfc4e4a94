//! `--format chat|plain`: how an example becomes the model's input text, in every command.

use clap::ValueEnum;

/// How prompts (and training examples) become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum FormatArg {
    /// The model's chat template.
    #[default]
    Chat,
    /// Plain text: lm-eval few-shot text when evaluating; prompt, response and EOS when training.
    #[value(alias = "raw")]
    Plain,
}

impl FormatArg {
    /// The trainer's prompt format.
    pub fn train_format(self) -> lm_core::train::PromptFormat {
        match self {
            FormatArg::Chat => lm_core::train::PromptFormat::ChatTemplate,
            FormatArg::Plain => lm_core::train::PromptFormat::Raw,
        }
    }

    /// The evaluator's prompt format (the chat template without a system prompt, or
    /// [`kshot_eval::PromptFormat::plain`]).
    pub fn eval_format(self) -> kshot_eval::PromptFormat {
        match self {
            FormatArg::Chat => kshot_eval::PromptFormat::Chat { system: None },
            FormatArg::Plain => kshot_eval::PromptFormat::plain(),
        }
    }
}
