//! Where a command writes its results.

use std::path::PathBuf;

use clap::Args;

/// A JSON report plus a Markdown table of it (`eval`, `rank-bank`).
#[derive(Debug, Clone, Args)]
pub struct ReportOutput {
    /// Report JSON.
    #[arg(long)]
    pub output: PathBuf,
    /// Markdown table path (default: the --output path with a .md extension).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

impl ReportOutput {
    /// Where the Markdown table goes.
    pub fn markdown_path(&self) -> PathBuf {
        self.markdown
            .clone()
            .unwrap_or_else(|| self.output.with_extension("md"))
    }
}

/// Picked row indices plus an optional report of the selection (`select kcenter`, `kmeans`).
#[derive(Debug, Clone, Args)]
pub struct PicksOutput {
    /// Output: JSON array of the picked row indices, in pick order.
    #[arg(long)]
    pub output: PathBuf,
    /// Optional JSON report of the selection.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

impl PicksOutput {
    /// Writes the picks and, when asked for, the report.
    pub fn write(&self, picks: &[usize], report: &impl serde::Serialize) -> anyhow::Result<()> {
        atomic_fs::write_json(&self.output, &picks)?;
        if let Some(p) = &self.report {
            atomic_fs::write_json(p, report)?;
        }
        Ok(())
    }
}
