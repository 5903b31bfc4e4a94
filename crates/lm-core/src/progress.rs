//! The one progress-bar look of openexpert (`indicatif` on stderr), for every crate: a counted
//! [`bar`], a [`spinner`], and a [`bytes`] bar. Each is hidden when stderr is not a terminal, so
//! logs and pipes get no control characters.
//!
//! ```
//! let bar = lm_core::progress::bar(10, "embed pool", "items");
//! bar.inc(10);
//! bar.finish_and_clear();
//! ```

use std::io::IsTerminal;
use std::time::Duration;

pub use indicatif::ProgressBar;
use indicatif::{ProgressDrawTarget, ProgressStyle};

/// Where bars draw: stderr when it is a terminal, nowhere otherwise.
fn target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// A bar counting `len` `unit`s (`"steps"`, `"rows"`, `"tensors"`) of the work `what`:
/// `⠁ what [=====>    ] 3/10 rows 12.5/s, eta 2s  message`. The message (`set_message`) is free
/// for the caller's status (a loss, a name).
pub fn bar(len: u64, what: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), target());
    bar.set_style(bar_style(unit));
    bar.set_prefix(what.to_string());
    bar
}

/// A spinner for work of unknown length, `what` as its label; it ticks by itself.
pub fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, target());
    bar.set_style(spinner_style());
    bar.set_prefix(what.to_string());
    if !bar.is_hidden() {
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    bar
}

/// A bar counting `len` bytes of the work `what`.
pub fn bytes(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), target());
    bar.set_style(bytes_style());
    bar.set_prefix(what.to_string());
    bar
}

/// [`bar`] when `show`, else a hidden bar (for callers with a `progress` switch).
pub fn bar_if(show: bool, len: u64, what: &str, unit: &str) -> ProgressBar {
    if show {
        bar(len, what, unit)
    } else {
        ProgressBar::hidden()
    }
}

/// The style of [`bar`].
pub fn bar_style(unit: &str) -> ProgressStyle {
    let unit = unit.replace('{', "{{").replace('}', "}}");
    ProgressStyle::with_template(&format!(
        "{{spinner}} {{prefix:.bold}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}}, eta {{eta}} {{wide_msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// The style of [`spinner`].
pub fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

/// The style of [`bytes`].
pub fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix:.bold} {msg} [{bar:24}] {bytes}/{total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_count_and_are_hidden_off_a_terminal() {
        let b = bar(5, "work", "rows {odd}");
        b.inc(3);
        assert_eq!(b.position(), 3);
        assert_eq!(b.length(), Some(5));
        if !std::io::stderr().is_terminal() {
            assert!(b.is_hidden());
        }
        assert!(bar_if(false, 5, "work", "rows").is_hidden());
        let s = spinner("wait");
        s.finish_and_clear();
        assert_eq!(bytes(10, "x").length(), Some(10));
    }
}
