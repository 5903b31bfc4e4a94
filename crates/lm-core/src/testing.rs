//! Shared test support, for this crate's tests and every crate that tests against lm-core: the
//! test device, the default model, float comparison, tiny random models and a GGUF writer.
//!
//! Compiled for lm-core's own unit tests and, elsewhere, behind the `test-util` feature:
//! `lm-core = { workspace = true, features = ["flex", "test-util"] }` as a dev-dependency.

use std::path::PathBuf;

use burn::tensor::Device;

pub use crate::io::gguf::GgufWriter;
pub use crate::model::random::{
    TINY_CHAT_TEMPLATE, TensorMap, byte_tokenizer, tiny_bert_config, tiny_file_config,
    tiny_gemma3_language_model, tiny_gguf, tiny_language_model, tiny_language_model_with,
    tiny_tokenizer_json, tiny_vocab, write_tiny_bert_dir, write_tiny_hf_dir,
};

use crate::assets::{Manifest, ModelSource, openexpert_home, resolve_model};

/// The environment variable naming the device tests run on (`cpu` when unset).
pub const TEST_DEVICE_VAR: &str = "OPENEXPERT_TEST_DEVICE";

/// The asset name of the default language model (`assets/manifest.toml`).
pub const DEFAULT_MODEL: &str = "smollm2-135m-instruct";

/// The device tests run on: `OPENEXPERT_TEST_DEVICE` (default `cpu`), so the same tests run on
/// `cuda` and `wgpu` where a GPU exists.
///
/// # Panics
/// When the variable names a device that is unknown or not compiled in.
pub fn test_device() -> Device {
    let name = std::env::var(TEST_DEVICE_VAR).unwrap_or_else(|_| "cpu".into());
    crate::device::device_from_name(&name)
        .unwrap_or_else(|e| panic!("{TEST_DEVICE_VAR}={name} names no usable device: {e}"))
}

/// The asset name of the optional Gemma 3 model (`openexpert fetch gemma3-270m`).
pub const GEMMA3_MODEL: &str = "gemma3-270m";

/// Set to `1` (CI does), a test that needs an asset that is not fetched fails instead of
/// skipping: nothing passes by not running.
pub const REQUIRE_ASSETS_VAR: &str = "OPENEXPERT_REQUIRE_ASSETS";

/// Whether [`REQUIRE_ASSETS_VAR`] asks for every asset a test needs (`1`, `true`, `yes`).
pub fn assets_required() -> bool {
    std::env::var(REQUIRE_ASSETS_VAR)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The GGUF file of a model asset when it is fetched; otherwise `None`, after printing a note
/// saying how to fetch it, for tests that skip without it.
///
/// # Panics
/// When the asset is not fetched and [`REQUIRE_ASSETS_VAR`] is set.
pub fn model_if_fetched(name: &str) -> Option<PathBuf> {
    match resolve_model(name) {
        Ok(ModelSource::Gguf(path)) => Some(path),
        _ => {
            let how = format!(
                "the model asset `{name}` is not fetched under {}; run `cargo run --release -p openexpert -- fetch {name}`",
                openexpert_home().display()
            );
            assert!(
                !assets_required(),
                "{how} ({REQUIRE_ASSETS_VAR} is set: no skipping)"
            );
            eprintln!("note: skipped: {how} to run this test");
            None
        }
    }
}

/// The GGUF file of the default language model, resolved through the asset registry, or `None`
/// when it is not fetched (for tests that skip without it).
///
/// # Panics
/// When it is not fetched and [`REQUIRE_ASSETS_VAR`] is set.
pub fn default_model_if_fetched() -> Option<PathBuf> {
    model_if_fetched(DEFAULT_MODEL)
}

/// The GGUF file of the default language model, resolved through the asset registry.
///
/// # Panics
/// When it is not fetched, telling how to fetch it.
pub fn default_model_path() -> PathBuf {
    default_model_if_fetched().unwrap_or_else(|| {
        panic!(
            "real-model test needs the default model `{DEFAULT_MODEL}` under {}: run `cargo run --release -p openexpert -- fetch` first",
            openexpert_home().display()
        )
    })
}

/// The folder of the fetched asset `name` (`$OPENEXPERT_HOME/models/<name>` for a model).
///
/// # Panics
/// When the asset is unknown or not fetched, telling how to fetch it.
pub fn asset_dir(name: &str) -> PathBuf {
    let home = openexpert_home();
    let manifest = Manifest::embedded().expect("the embedded manifest parses");
    let asset = manifest
        .get(name)
        .unwrap_or_else(|| panic!("`{name}` is not an asset of assets/manifest.toml"));
    let dir = asset.dir_in(&home);
    assert!(
        asset.is_present_in(&home),
        "real-model test needs the asset `{name}` at {}: run `cargo run --release -p openexpert -- fetch` first",
        dir.display()
    );
    dir
}

/// Largest absolute difference of two equally long slices.
///
/// # Panics
/// When the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_abs_diff_finds_the_largest_gap() {
        assert_eq!(max_abs_diff(&[1.0, -2.0, 3.0], &[1.5, -2.0, 0.0]), 3.0);
        assert_eq!(max_abs_diff(&[], &[]), 0.0);
    }

    #[test]
    fn the_default_model_is_a_gguf_asset() {
        let manifest = Manifest::embedded().unwrap();
        let asset = manifest.get(DEFAULT_MODEL).unwrap();
        assert_eq!(asset.kind, crate::assets::AssetKind::Gguf);
        if let Some(p) = default_model_if_fetched() {
            assert_eq!(p.extension().and_then(|e| e.to_str()), Some("gguf"));
        }
    }
}
