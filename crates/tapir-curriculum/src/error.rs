//! The crate's one error type.
//!
//! Every variant says what was expected, what was found and, where there is one, what to do
//! about it. Causes from other crates (a model runtime, an HTTP client) are kept whole in
//! [`TapirError::Role`] so their chain prints.

use std::path::PathBuf;

/// A cause from another crate (lm-core, llm-client, ...), kept whole so its chain prints.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the TAPIR algorithms and their run directory.
#[derive(Debug, thiserror::Error)]
pub enum TapirError {
    /// A role (teacher, judge, classifier, student, embedder) failed as a whole: its endpoint is
    /// unreachable, refuses the credentials, or its model could not run. Per-item failures are
    /// not errors (they are counted); this one stops the run.
    #[error("the {role} ({at}) failed while {doing}: {source}")]
    Role {
        /// `teacher`, `judge`, `classifier`, `student` or `embedder`.
        role: String,
        /// Where it runs: a base URL and model, or a local model spec.
        at: String,
        /// What it was asked to do (`answering 24 instructions`, ...).
        doing: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A chat backend (a model runtime, an HTTP client) failed as a whole; the prompted roles
    /// wrap it into [`TapirError::Role`] with the role and what it was doing.
    #[error(transparent)]
    Backend(BoxError),

    /// A role answered a batch with the wrong number of replies (a bug in its implementation).
    #[error(
        "the {role} returned {found} replies for {expected} requests; every request needs exactly one reply"
    )]
    ReplyCount {
        /// Which role.
        role: String,
        /// Requests sent.
        expected: usize,
        /// Replies received.
        found: usize,
    },

    /// A setting is out of its valid range or inconsistent with another.
    #[error("invalid setting {key}: {detail}")]
    Config {
        /// The config key (`curriculum.alpha`, `mfd.delta`, ...).
        key: String,
        /// Expected versus found, and what to change.
        detail: String,
    },

    /// A category name that is not in the taxonomy (in a config or an input file).
    #[error(transparent)]
    UnknownCategory(#[from] named_enum::UnknownName),

    /// An input is empty or malformed.
    #[error("{what}: {detail}")]
    Input {
        /// Which input (a file and line, or a role's output).
        what: String,
        /// Expected versus found, and what to do.
        detail: String,
    },

    /// The judge produced no usable score for any item of a step, so nothing can be ranked.
    #[error(
        "the judge returned no parsable score for any of the {items} items of {step} ({attempts} attempts per presentation order); its raw outputs are in {}. Use a judge model that follows the format (it must end with `Score of the Assistant 1: [[x]]` and `Score of the Assistant 2: [[y]]`), raise `judge.max_new_tokens`, or turn the MFD filter off (`ablation.mfd_filter = false`)",
        outputs.display()
    )]
    NothingScored {
        /// The step (`round 1 MFD`, ...).
        step: String,
        /// Items sent to the judge.
        items: usize,
        /// Attempts per order.
        attempts: usize,
        /// The file holding the judge's outputs.
        outputs: PathBuf,
    },

    /// A file could not be read or written.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// An atomic write failed.
    #[error(transparent)]
    Write(#[from] atomic_fs::Error),

    /// A run file exists but is not what this version writes.
    #[error(
        "malformed run file {} ({detail}); delete it to recompute that step, or start a new run directory",
        path.display()
    )]
    RunFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

impl TapirError {
    /// An [`TapirError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`TapirError::Config`] on `key`.
    pub fn config(key: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            detail: detail.into(),
        }
    }

    /// A [`TapirError::Role`] failure.
    pub fn role(
        role: impl Into<String>,
        at: impl Into<String>,
        doing: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Role {
            role: role.into(),
            at: at.into(),
            doing: doing.into(),
            source: source.into(),
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, TapirError>;
