//! Reports of experiments: SVG plots ([`plots`]) and markdown tables ([`table`]).
//!
//! Plot functions return the SVG document as a `String`; callers write it (atomically) where
//! they want. Nothing here touches the file system or a model, so every function is plain data in,
//! plain text out.

pub mod plots;
pub mod table;

/// What can go wrong while building a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The plotting backend failed while drawing.
    #[error("drawing the plot {plot:?}: {detail}")]
    Plot {
        /// The plot's title.
        plot: String,
        /// The backend's message.
        detail: String,
    },
    /// The data cannot be plotted: no points, only non-finite values, a ragged heatmap, ...
    #[error("plot {plot:?}: {detail}")]
    BadData {
        /// The plot's title.
        plot: String,
        /// What is wrong with the data.
        detail: String,
    },
}

/// The result of the report functions.
pub type Result<T> = std::result::Result<T, ReportError>;
