//! [`RocketError`]: what can stop a Rocket run, with the cause kept.

use std::path::{Path, PathBuf};

/// Errors of the Rocket pipeline.
#[derive(Debug, thiserror::Error)]
pub enum RocketError {
    /// The config (file or flags) is malformed or inconsistent.
    #[error("rocket config: {0}")]
    Config(String),
    /// A required input is missing from both the config and the flags.
    #[error("rocket: no {what} given; set inputs.{key} in the config or pass --{flag}")]
    MissingInput {
        /// What is missing.
        what: &'static str,
        /// Its config key.
        key: &'static str,
        /// Its flag.
        flag: &'static str,
    },
    /// An input file is unusable.
    #[error("{path}: {detail}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// The run directory holds another run.
    #[error("{0}")]
    RunDir(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stage failed.
    #[error("rocket stage `{stage}`: {source}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl RocketError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// `source` failed inside `stage`.
    pub fn stage(
        stage: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Stage {
            stage,
            source: source.into(),
        }
    }
}

/// Results of the Rocket pipeline.
pub type Result<T> = std::result::Result<T, RocketError>;
