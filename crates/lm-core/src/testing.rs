//! Shared test support, for this crate's tests and every crate that tests against lm-core: the
//! test device, the default model, float comparison, tiny random models and a GGUF writer.
//!
//! Compiled for lm-core's own unit tests and, elsewhere, behind the `test-util` feature:
//! `lm-core = { workspace = true, features = ["flex", "test-util"] }` as a dev-dependency.

use std::path::PathBuf;

use burn::tensor::{Device, TensorData};

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
/// When the variable names a device that is unknown or not compiled in, or a GPU device whose
/// backend cannot start here (no GPU or driver): the message names the variable, the device and
/// the backend's own error.
pub fn test_device() -> Device {
    let name = test_device_name();
    crate::device::device_from_name(&name)
        .unwrap_or_else(|e| panic!("{TEST_DEVICE_VAR}={name} names no usable device: {e}"))
}

/// The name of the test device (`OPENEXPERT_TEST_DEVICE`, lower-cased; `cpu` when unset).
pub fn test_device_name() -> String {
    std::env::var(TEST_DEVICE_VAR)
        .map(|n| n.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "cpu".into())
}

/// A CPU device (flex, else ndarray), the reference side of device parity tests.
///
/// # Panics
/// When the build has no CPU backend.
pub fn cpu_device() -> Device {
    crate::device::device_from_name("cpu").expect("a CPU backend is compiled in")
}

/// How closely results computed on a device must match an f32 reference (PyTorch's, or this
/// crate's CPU backend), by the precision the device's kernels actually compute in. Every model
/// of this crate stores and computes in f32; the GPU backends differ in how they multiply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// The device name (`cpu`, `cuda`, `wgpu`).
    pub device: &'static str,
    /// What the kernels compute in, for failure messages.
    pub precision: &'static str,
    /// Largest absolute difference allowed in logits and per-token log-probs of a real model
    /// (SmolLM2-135M: 30 layers, logits of order 10).
    pub logits: f32,
    /// Largest absolute difference allowed in the output of one layer or of a tiny model.
    pub layer: f32,
    /// Largest relative difference allowed in a loss or in LoRA factors after training steps.
    pub relative: f32,
}

impl Tolerance {
    /// f32 on the CPU backends (flex, ndarray): f32 accumulation, only the summation order differs
    /// from PyTorch's.
    pub const CPU_F32: Tolerance = Tolerance {
        device: "cpu",
        precision: "f32 (CPU)",
        logits: 1e-3,
        layer: 1e-5,
        relative: 1e-4,
    };
    /// f32 tensors on CUDA: burn-cuda autotunes f32 matrix products onto tensor cores in tf32
    /// (10-bit mantissa, relative error ~5e-4 per product) where the GPU has them (sm_80+), so
    /// differences grow with depth. Not yet measured on a GPU: `scripts/gpu-parity.sh` records the
    /// measured deviations to tighten this.
    pub const CUDA_F32_TF32: Tolerance = Tolerance {
        device: "cuda",
        precision: "f32 storage, tf32 tensor-core matmuls (CUDA)",
        logits: 5e-2,
        layer: 5e-3,
        relative: 1e-2,
    };
    /// f32 on wgpu (WGSL compute shaders): f32 arithmetic with the kernels' own reduction
    /// orders. Measured on Mesa's lavapipe (Vulkan on the CPU: llvmpipe, Mesa 22.3.6, LLVM 15;
    /// docs/gpu.md), with about 10x margin: SmolLM2's log-probs and logits within 1.2e-4 of
    /// PyTorch's, tiny models within 2.7e-6 of the CPU backend, training losses identical in f32.
    /// A real GPU's kernels (subgroup sizes, tile shapes picked by autotuning) may reduce in
    /// other orders: `scripts/gpu-parity.sh` records the deviations there.
    pub const WGPU_F32: Tolerance = Tolerance {
        device: "wgpu",
        precision: "f32 (wgpu compute shaders)",
        logits: 1e-3,
        layer: 3e-5,
        relative: 1e-5,
    };

    /// The tolerance of a device name (`cuda:N` counts as `cuda`; `flex` and `ndarray` as `cpu`).
    pub fn for_device(name: &str) -> Tolerance {
        match name.trim().to_ascii_lowercase().as_str() {
            n if n == "cuda" || n.starts_with("cuda:") => Tolerance::CUDA_F32_TF32,
            "wgpu" => Tolerance::WGPU_F32,
            _ => Tolerance::CPU_F32,
        }
    }
}

/// A fixed prompt → response mapping for training tests on tiny models (`"cat:"` → `" meow"`,
/// ...): the first `n` of 4 pairs.
pub fn animal_sounds(n: usize) -> Vec<crate::train::TrainExample> {
    [
        ("cat", "meow"),
        ("dog", "woof"),
        ("cow", "moo"),
        ("owl", "hoot"),
    ]
    .iter()
    .take(n)
    .map(|(p, r)| crate::train::TrainExample::PromptResponse {
        prompt: format!("{p}:"),
        response: format!(" {r}"),
    })
    .collect()
}

/// The [`Tolerance`] of the test device.
pub fn test_tolerance() -> Tolerance {
    Tolerance::for_device(&test_device_name())
}

/// Checks that `got` (computed on the test device) matches `want` within `tol`, and prints one
/// `parity: device=… max_abs=… tol=… n=… op=…` line with the measured deviation either way
/// (`scripts/gpu-parity.sh` collects them).
///
/// # Panics
/// When the lengths differ or a value is further than `tol` (or NaN), naming `op`, the device,
/// its precision, the largest deviation, where it is and both values there.
pub fn assert_close(op: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{op}: {} values on `{}` but {} in the reference",
        got.len(),
        test_device_name(),
        want.len()
    );
    let mut worst = (0usize, 0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d.is_nan() || d > worst.1 {
            worst = (i, if d.is_nan() { f32::INFINITY } else { d });
        }
    }
    let (at, d) = worst;
    let tolerance = test_tolerance();
    eprintln!(
        "parity: device={} max_abs={d:e} tol={tol:e} n={} op={op}",
        test_device_name(),
        got.len()
    );
    assert!(
        d <= tol,
        "{op} on `{}` ({}): max |got - want| = {d:e} > tolerance {tol:e}, at index {at} of {} (got {}, want {})",
        test_device_name(),
        tolerance.precision,
        got.len(),
        got.get(at).copied().unwrap_or(f32::NAN),
        want.get(at).copied().unwrap_or(f32::NAN)
    );
}

/// Checks that two tensors' values agree elementwise within `abs + rel · |want|` (the kernels'
/// proptests against their burn references).
///
/// # Panics
/// When the lengths differ, a tensor is not f32, or a value is further than its bound (or NaN),
/// naming the index and both values.
pub fn assert_data_close(got: TensorData, want: TensorData, abs: f32, rel: f32) {
    let got = got.try_to_vec::<f32>().expect("an f32 tensor");
    let want = want.try_to_vec::<f32>().expect("an f32 tensor");
    assert_eq!(
        got.len(),
        want.len(),
        "{} values, expected {}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= abs + rel * w.abs(),
            "value {i}: got {g}, want {w} (tolerance {abs:e} + {rel:e} · |want|)"
        );
    }
}

/// Checks that a scalar `got` is within `rel` relative difference of `want`, like
/// [`assert_close`].
///
/// # Panics
/// When it is not (or is NaN), naming `op`, the device and both values.
pub fn assert_close_rel(op: &str, got: f64, want: f64, rel: f64) {
    let d = (got - want).abs() / want.abs().max(1e-12);
    eprintln!(
        "parity: device={} max_rel={d:e} tol={rel:e} n=1 op={op}",
        test_device_name()
    );
    assert!(
        d <= rel,
        "{op} on `{}` ({}): got {got}, want {want}: relative difference {d:e} > tolerance {rel:e}",
        test_device_name(),
        test_tolerance().precision
    );
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
    fn assert_close_accepts_values_within_the_tolerance() {
        assert_close("unit", &[1.0, 2.0], &[1.0005, 2.0], 1e-3);
    }

    #[test]
    #[should_panic(expected = "matmul on `")]
    fn assert_close_names_the_op_when_it_fails() {
        assert_close("matmul", &[1.0, 2.5], &[1.0, 2.0], 1e-3);
    }

    #[test]
    #[should_panic(expected = "max |got - want| = inf")]
    fn assert_close_rejects_nan() {
        assert_close("softmax", &[f32::NAN], &[0.5], 1e-3);
    }

    #[test]
    #[should_panic(expected = "relative difference")]
    fn assert_close_rel_fails_beyond_the_tolerance() {
        assert_close_rel("loss", 1.1, 1.0, 1e-2);
    }

    #[test]
    fn tolerances_by_device_name() {
        assert_eq!(Tolerance::for_device("cuda:1"), Tolerance::CUDA_F32_TF32);
        assert_eq!(Tolerance::for_device("WGPU"), Tolerance::WGPU_F32);
        assert_eq!(Tolerance::for_device("flex"), Tolerance::CPU_F32);
        for t in [
            Tolerance::CPU_F32,
            Tolerance::CUDA_F32_TF32,
            Tolerance::WGPU_F32,
        ] {
            assert!(t.layer <= t.logits && t.logits < 0.1, "{t:?}");
        }
    }

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
