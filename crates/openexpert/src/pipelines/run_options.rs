//! How a resumable pipeline runs, apart from what it computes: the run directory, whether a
//! directory of another config may be reused, progress, the device and the command line the
//! report prints. One type for [`rocket`](super::rocket) and [`tapir`](super::tapir); none of
//! it enters a result's fingerprint.

use std::path::PathBuf;

/// How to run (not part of the results' fingerprints).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory.
    pub output: PathBuf,
    /// Use a run directory that holds another config. Rocket re-runs the stages the
    /// differences touch; TAPIR deletes its round files and keeps the call cache, so unchanged
    /// calls replay.
    pub force: bool,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Device name (`cpu`, `wgpu`, `cuda`).
    pub device: String,
    /// The command line to print in the report (re-running it resumes the run).
    pub command: String,
}

impl RunOptions {
    /// Defaults for a run of `pipeline` (the subcommand: `rocket`, `tapir`) into `output`: CPU,
    /// progress bars, no force, and `openexpert PIPELINE --output OUTPUT --resume` as the
    /// command.
    pub fn new(pipeline: &str, output: impl Into<PathBuf>) -> Self {
        let output = output.into();
        Self {
            command: format!(
                "openexpert {pipeline} --output {} --resume",
                output.display()
            ),
            output,
            force: false,
            progress: true,
            device: "cpu".into(),
        }
    }
}
