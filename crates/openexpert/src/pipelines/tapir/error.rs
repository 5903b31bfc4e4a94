//! [`TapirRunError`]: what can stop a TAPIR run, with the cause kept.

use std::path::{Path, PathBuf};

/// Errors of the TAPIR pipeline.
#[derive(Debug, thiserror::Error)]
pub enum TapirRunError {
    /// The config (file or flags) is malformed or inconsistent.
    #[error("tapir config: {0}")]
    Config(String),
    /// An input file is unusable.
    #[error("{}: {detail}", path.display())]
    Input {
        /// The file (or pattern).
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// The run directory holds another run.
    #[error("{0}")]
    RunDir(String),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A model or endpoint could not be set up for a role.
    #[error("setting up the {role} ({at}): {source}")]
    Setup {
        /// `teacher`, `judge`, `classifier`, `student`, `embedder`.
        role: &'static str,
        /// The model or endpoint.
        at: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The curriculum failed (a role, a round file, a judge that scored nothing, ...).
    #[error(transparent)]
    Curriculum(#[from] tapir_curriculum::TapirError),
    /// Writing the report failed.
    #[error("tapir report: {0}")]
    Report(String),
}

impl TapirRunError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A role's model or endpoint failed to set up.
    pub fn setup(
        role: &'static str,
        at: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Setup {
            role,
            at: at.into(),
            source: source.into(),
        }
    }
}

impl From<atomic_fs::Error> for TapirRunError {
    fn from(e: atomic_fs::Error) -> Self {
        Self::Curriculum(e.into())
    }
}

impl From<crate::report::ReportError> for TapirRunError {
    fn from(e: crate::report::ReportError) -> Self {
        Self::Report(e.to_string())
    }
}

/// Results of the TAPIR pipeline.
pub type Result<T> = std::result::Result<T, TapirRunError>;
