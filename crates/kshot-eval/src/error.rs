//! The crate's error type: each variant says what was expected, what was found and what to do.

use std::path::PathBuf;

/// Result alias for everything in `kshot-eval`.
pub type Result<T> = std::result::Result<T, KshotError>;

/// Everything that can go wrong while loading K-shot sets, building prompts, evaluating or ranking.
#[derive(Debug, thiserror::Error)]
pub enum KshotError {
    /// A file could not be read or written.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a K-shot JSONL file is not a valid item.
    #[error(
        "{path}:{line}: {message}; expected a JSON object {{\"question\": str, \"answer\": str, \"rationale\"?: str, \"choices\"?: [str], \"id\"?: str, \"task\"?: str}}"
    )]
    InvalidItem {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A K-shot set (or the part of it a metric needs) has no items.
    #[error("{what} has no items; give at least one K-shot example")]
    EmptySet {
        /// Which set.
        what: String,
    },
    /// A split asks for more shots than there are items.
    #[error(
        "asked for {shots} in-context shots from {available} items, leaving no test item; use --shots < {available}"
    )]
    TooManyShots {
        /// Shots asked for.
        shots: usize,
        /// Items available.
        available: usize,
    },
    /// Reasoning perplexity needs a rationale on every item.
    #[error(
        "reasoning perplexity needs a \"rationale\" on every item; {missing} of {total} items have none (first: {first_id}); add rationales or drop the reasoning-perplexity metric"
    )]
    MissingRationale {
        /// Items without a rationale.
        missing: usize,
        /// Items in the set.
        total: usize,
        /// The first offending item.
        first_id: String,
    },
    /// A multiple-choice metric needs choices on every item.
    #[error(
        "multiple-choice scoring needs \"choices\" (at least 2) on every item; item {id} has {found}; add choices or use the generative exact-match metric"
    )]
    MissingChoices {
        /// The offending item.
        id: String,
        /// How many choices it has.
        found: usize,
    },
    /// A multiple-choice item's answer is none of its choices.
    #[error(
        "item {id}: answer {answer:?} is neither one of the choices {choices:?} nor an option letter (A, B, ...) or 0-based index"
    )]
    AnswerNotAChoice {
        /// The offending item.
        id: String,
        /// Its answer.
        answer: String,
        /// Its choices.
        choices: Vec<String>,
    },
    /// An invalid setting (regex, counts, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The model runtime failed.
    #[error(transparent)]
    Model(#[from] lm_core::LmError),
    /// Loading or attaching adapters failed.
    #[error(transparent)]
    Adapter(#[from] lora_zoo::LoraError),
    /// Serialising a report failed.
    #[error("could not serialise the report: {0}")]
    Json(#[from] serde_json::Error),

    /// An output file or directory could not be written atomically, or was refused (it exists
    /// and `--force` was not given, it is a file, ...).
    #[error(transparent)]
    Output(#[from] atomic_fs::Error),
}

impl KshotError {
    /// An [`KshotError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
