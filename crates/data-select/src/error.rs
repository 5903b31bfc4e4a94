//! The crate's one error type.
//!
//! Every variant says what was expected, what was found and, where there is one, what to do about it.

use std::path::PathBuf;

/// A cause from another crate (lm-core, lora-zoo, an embedder), kept whole so its chain prints.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while reading pools, embeddings or selecting data.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// A file could not be opened, read or written.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A JSONL line (or JSON array element) is not a record this crate understands.
    #[error(
        "malformed record at line {line}: {reason} (expected an Alpaca {{instruction, input, output}}, a ShareGPT {{conversations: [{{from, value}}]}} or a chat {{messages: [{{role, content}}]}} object; use lenient mode to skip bad lines)"
    )]
    MalformedRecord {
        /// 1-based line number (for JSON arrays: the line where the element starts).
        line: usize,
        /// What was wrong.
        reason: String,
    },

    /// A JSON file is not the expected shape.
    #[error("invalid JSON in {what}: {reason}")]
    InvalidJson {
        /// Which input (file name or role).
        what: String,
        /// What was wrong.
        reason: String,
    },

    /// An `.npy` file has a header or data this crate cannot read.
    #[error(
        "bad .npy file {what}: {reason} (expected a v1/v2/v3 header, dtype '<f4' or '<f8', C order, 2-D shape)"
    )]
    BadNpy {
        /// File name or role.
        what: String,
        /// What was wrong.
        reason: String,
        /// The `.npy` reader's own error, where it found the problem.
        #[source]
        source: Option<BoxError>,
    },

    /// A matrix contains NaN or infinite values.
    #[error(
        "non-finite value in {what}: row {row}, column {col} is {value} (embeddings must be finite; check the embedder's dtype/overflow)"
    )]
    NonFinite {
        /// Which matrix.
        what: String,
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        col: usize,
        /// The value itself.
        value: f32,
    },

    /// Two inputs disagree on a dimension.
    #[error("dimension mismatch in {what}: expected {expected}, found {found}")]
    DimensionMismatch {
        /// Where the mismatch happened.
        what: String,
        /// Expected size.
        expected: usize,
        /// Size found.
        found: usize,
    },

    /// An input set that must not be empty is empty.
    #[error("{what} is empty: {hint}")]
    Empty {
        /// Which input.
        what: String,
        /// What to do.
        hint: String,
    },

    /// An index is out of range.
    #[error("index {index} in {what} is out of range for a pool of {len} items")]
    IndexOutOfRange {
        /// Which input.
        what: String,
        /// The bad index.
        index: usize,
        /// Pool size.
        len: usize,
    },

    /// A parameter has an invalid value.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },

    /// The embedder failed; the cause is kept as the error's [`source`](std::error::Error::source).
    #[error("embedder {model_id} failed")]
    Embedder {
        /// The embedder's model id.
        model_id: String,
        /// What went wrong inside the embedder.
        #[source]
        source: BoxError,
    },

    /// The embedding cache on disk is damaged.
    #[error(
        "embedding cache file {path} is damaged: {reason} (delete it; its rows will be recomputed)"
    )]
    CacheCorrupt {
        /// The bad file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// The model side of a selection loop (embedding with the current model, training a round)
    /// failed; the cause is kept as the error's [`source`](std::error::Error::source).
    #[error("{stage} failed")]
    Model {
        /// What the model was doing (e.g. `training round 3`).
        stage: String,
        /// What went wrong inside the model.
        #[source]
        source: BoxError,
    },

    /// A numerical routine did not converge.
    #[error("{what} did not converge after {iterations} iterations")]
    NoConvergence {
        /// The routine.
        what: String,
        /// Iterations run.
        iterations: usize,
    },

    /// An output file or directory could not be written atomically, or was refused (it exists
    /// and `--force` was not given, it is a file, ...).
    #[error(transparent)]
    Output(#[from] atomic_fs::Error),
}

impl SelectError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SelectError::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`SelectError::Model`]: `stage` failed because of `source`.
    pub fn model(stage: impl Into<String>, source: impl Into<BoxError>) -> Self {
        SelectError::Model {
            stage: stage.into(),
            source: source.into(),
        }
    }

    /// Shorthand for [`SelectError::Embedder`]: embedder `model_id` failed because of `source`.
    pub fn embedder(model_id: impl Into<String>, source: impl Into<BoxError>) -> Self {
        SelectError::Embedder {
            model_id: model_id.into(),
            source: source.into(),
        }
    }

    /// Shorthand for [`SelectError::InvalidParameter`].
    pub fn param(name: &str, reason: impl Into<String>) -> Self {
        SelectError::InvalidParameter {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}

/// The crate's result alias.
pub type Result<T, E = SelectError> = std::result::Result<T, E>;
