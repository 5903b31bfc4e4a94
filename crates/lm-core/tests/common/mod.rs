//! Helpers of lm-core's integration tests; the ones other crates share live in `lm_core::testing`.

use std::path::PathBuf;

/// Path of a committed fixture file.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}
