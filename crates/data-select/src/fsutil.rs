//! Atomic file writes live in the [`atomic_fs`] crate. This module only adapts its error type for
//! the command line of this crate (`cli.rs`), and goes away once that file calls `atomic_fs`
//! directly.

use std::path::Path;

use crate::error::Result;

/// [`atomic_fs::write_atomic`] returning this crate's error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(atomic_fs::write_atomic(path, bytes)?)
}
