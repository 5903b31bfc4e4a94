//! One progress line per asset on stderr: a spinner while verifying or downloading, a byte bar
//! while extracting, in the styles of [`crate::progress`]. Hidden when asked to be quiet or when
//! stderr is not a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget};

use crate::progress::{bytes_style, spinner_style};

/// The progress line of one asset.
pub(crate) struct AssetProgress {
    bar: ProgressBar,
    total: Option<u64>,
}

impl AssetProgress {
    /// A spinner line for `name`; hidden when `quiet` or when stderr is not a terminal.
    pub(crate) fn new(name: &str, quiet: bool) -> Self {
        let target = if quiet || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(spinner_style());
        bar.set_prefix(name.to_string());
        if !bar.is_hidden() {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        AssetProgress { bar, total: None }
    }

    /// Sets the bytes expected for the whole extraction (when every size is pinned).
    pub(crate) fn expect_bytes(&mut self, total: Option<u64>) {
        self.total = total;
    }

    /// Shows a status message (verifying, downloading, ...) on the spinner.
    pub(crate) fn status(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Switches to the byte bar for extraction, with `message`.
    pub(crate) fn extracting(&self, message: String) {
        if let Some(total) = self.total {
            self.bar.set_length(total);
            self.bar.set_style(bytes_style());
        }
        self.bar.set_message(message);
    }

    /// Counts `n` more bytes extracted.
    pub(crate) fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Ends the line with a final message and a newline.
    pub(crate) fn finish(&self, message: String) {
        self.bar.set_style(spinner_style());
        self.bar.finish_with_message(message);
        if !self.bar.is_hidden() {
            eprintln!();
        }
    }
}

impl Drop for AssetProgress {
    fn drop(&mut self) {
        // On an early error return the line is cleared, leaving room for the error message.
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}
