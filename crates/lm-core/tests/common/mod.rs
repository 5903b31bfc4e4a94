//! Shared helpers of the real-model integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Device;

/// The device the parity suite runs on: `OPENEXPERT_TEST_DEVICE` (default `cpu`), so the same
/// tests run on `cuda` and `wgpu` where a GPU exists.
pub fn test_device() -> Device {
    let name = std::env::var("OPENEXPERT_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    lm_core::device::device_from_name(&name).expect("OPENEXPERT_TEST_DEVICE names a usable device")
}

/// `$OPENEXPERT_HOME/models/<name>`, or a clear failure telling how to fetch it.
pub fn asset_dir(name: &str) -> PathBuf {
    let dir = lm_core::assets::openexpert_home().join("models").join(name);
    assert!(
        dir.is_dir(),
        "real-model test needs the default asset `{name}` at {}: run `cargo run --release -p openexpert -- fetch` first",
        dir.display()
    );
    dir
}

/// Path of a committed fixture file.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Largest absolute difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
