//! Merging adapters (or a combination of them) into the base weights and exporting an HF checkpoint.
//!
//! [`merge_into_base`] opens the base (GGUF file, HF directory or asset name), checks every adapter
//! against its linear layers **before anything is written**, then streams the checkpoint through
//! lm-core's [`export_decoder`]: each base tensor is de-quantised to f32, the combined update
//! `ΔW` of its module ([`combined_delta`]: any [`CombineMethod`], weights, rank, density) is added
//! in f32, and the tensor is encoded (`f32` / `f16` / `bf16`), written and dropped. Peak memory is
//! the base file's mapping plus a window of tensors, not the model.
//!
//! Then, unless disabled, it verifies the export: the exported directory is loaded back with
//! lm-core ([`load_exported`]: `config.json`, `tokenizer.json` and the weights through lm-core's
//! decoder builder, read without a memory map so only one model is resident) and its logits for a fixed prompt are compared with the base model
//! running the adapters **unmerged** ([`attach_adapters`]):
//!
//! - `linear` / `cat` / `svd` / `task_arithmetic` without a rank: the source adapters side by side
//!   with coefficients `λ·w_i` (independent of the combine code);
//! - any method with `--rank`: the adapter [`combine`] returns;
//! - pruning methods without a rank (full TIES / DARE merges, not low rank): each module's dense
//!   `ΔW` added to the in-memory base weights one module at a time (so the check costs one model
//!   plus one `ΔW`, not every dense update at once), which checks the export path (names, layout,
//!   q/k permutation, tying, dtype) rather than the TIES arithmetic.
//!
//! The two models are held one after the other, never together. The result, per-module statistics
//! and timings go to `merge_report.json` in the output directory.
//!
//! [`export_decoder`]: lm_core::export::export_decoder
//! [`load_exported`]: lm_core::export::load_exported

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use atomic_fs::{StagedDir, write_json};
use lm_core::burn::tensor::{Int, Tensor, TensorData};
use lm_core::export::{ExportBase, ExportDtype, export_decoder, load_exported};
use lm_core::model::{ExpertMix, LanguageModel};
use serde::Serialize;

use crate::adapter::LoraAdapter;
use crate::apply::attach_adapters;
use crate::combine::{CombineMethod, CombineOptions, combine, combined_delta, validate_request};
use crate::error::{LoraError, Result};
use crate::spec::BaseModelSpec;

/// The report file written next to the weights.
pub const REPORT_FILE: &str = "merge_report.json";

/// The prompt the verification runs by default.
pub const DEFAULT_PROMPT: &str = "<|im_start|>user\nWhat is 17 times 23? Explain step by step.<|im_end|>\n<|im_start|>assistant\n";

/// An adapter with the name it is reported under (usually its directory).
#[derive(Debug, Clone)]
pub struct NamedAdapter {
    /// Name in the report.
    pub name: String,
    /// The adapter.
    pub adapter: LoraAdapter,
}

/// How to check the export.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Prompt whose logits are compared.
    pub prompt: String,
    /// lm-core device name (`cpu`, ...).
    pub device: String,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            prompt: DEFAULT_PROMPT.to_string(),
            device: "cpu".to_string(),
        }
    }
}

/// Options of [`merge_into_base`].
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// How the adapters are combined (one adapter with weight 1 and `linear` = plain merge).
    pub combine: CombineOptions,
    /// Element type of the exported weights.
    pub dtype: ExportDtype,
    /// Replace a non-empty output directory.
    pub force: bool,
    /// Compare merged and unmerged logits after writing (`None`: skip).
    pub verify: Option<VerifyOptions>,
    /// Show a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// Size of one module's update.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModuleStats {
    /// HF module name.
    pub module: String,
    /// `‖ΔW‖_F`.
    pub delta_fro: f64,
    /// `max |ΔW|`.
    pub delta_max_abs: f32,
    /// `‖ΔW‖_F / ‖W‖_F` of the base weight.
    pub relative: f64,
}

/// The merged-vs-unmerged comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verification {
    /// The prompt.
    pub prompt: String,
    /// Its token count.
    pub tokens: usize,
    /// What the unmerged reference was.
    pub reference: String,
    /// `max |logit_merged - logit_unmerged|` over every position and vocabulary entry.
    pub max_abs_logit_diff: f32,
    /// `max |logit_unmerged|`, for scale.
    pub max_abs_logit: f32,
    /// Whether the arg-max token agrees at every position.
    pub argmax_agree: bool,
    /// Whether the exported `tokenizer.json` gives the base tokenizer's ids for the prompt.
    pub tokenizer_ids_equal: bool,
    /// Device the forwards ran on.
    pub device: String,
}

/// Wall-clock seconds of each phase.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Timings {
    /// Opening the base and the adapters' validation.
    pub open_s: f64,
    /// Streaming merge and writing `model.safetensors`.
    pub merge_write_s: f64,
    /// Config and tokenizer files.
    pub sidecar_s: f64,
    /// Verification (two model loads and forwards).
    pub verify_s: f64,
    /// Everything.
    pub total_s: f64,
}

/// What [`merge_into_base`] did (also written as `merge_report.json`).
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// The base model.
    pub base: String,
    /// Adapter names, in order.
    pub adapters: Vec<String>,
    /// One weight per adapter.
    pub weights: Vec<f32>,
    /// Combination method.
    pub method: String,
    /// SVD rank, if any (`None`: the full update).
    pub rank: Option<usize>,
    /// Density of the pruning methods.
    pub density: f32,
    /// DARE seed.
    pub seed: u64,
    /// Global multiplier.
    pub lambda: f32,
    /// Exported dtype.
    pub dtype: String,
    /// Output directory.
    pub output: PathBuf,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of `model.safetensors`.
    pub weights_bytes: u64,
    /// Per merged module.
    pub modules: Vec<ModuleStats>,
    /// Merged vs unmerged, if verified.
    pub verification: Option<Verification>,
    /// Phase timings.
    pub timings: Timings,
}

/// The linear layers of `base`'s decoder, for validation.
pub fn base_spec(base: &ExportBase) -> BaseModelSpec {
    BaseModelSpec::from_config(base.origin().display().to_string(), base.config())
}

/// Merges `adapters` combined by `opts.combine` into `model` and writes an HF checkpoint to
/// `output` (see the module docs). Nothing is written when an adapter does not fit the base, the
/// options are invalid, or `output` is a non-empty directory without `force`; a failure while
/// writing leaves no partial output.
pub fn merge_into_base(
    model: &str,
    adapters: &[NamedAdapter],
    opts: &MergeOptions,
    output: &Path,
) -> Result<MergeReport> {
    let t0 = Instant::now();
    let refs: Vec<&LoraAdapter> = adapters.iter().map(|a| &a.adapter).collect();
    validate_request(&refs, &opts.combine)?;
    let c = &opts.combine;
    if c.lambda == 0.0 || c.weights.iter().all(|w| *w == 0.0) {
        return Err(LoraError::EmptyCombination {
            method: c.method.name().to_string(),
            detail: crate::combine::empty_reason(c),
        });
    }
    let base = ExportBase::open(model)?;
    let spec = base_spec(&base);
    for a in adapters {
        a.adapter.validate(&spec).map_err(|e| match e {
            LoraError::ShapeMismatch {
                what,
                expected,
                found,
            } => LoraError::ShapeMismatch {
                what: format!(
                    "adapter {}: {what} (an adapter for another base model?)",
                    a.name
                ),
                expected,
                found,
            },
            other => other,
        })?;
    }
    let staged = StagedDir::create(output, opts.force)?;
    let open_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let bar = lm_core::progress::bar_if(
        opts.progress,
        base.plan().len() as u64,
        "merging",
        "tensors",
    );
    let stats = Mutex::new(Vec::new());
    let summary = export_decoder::<LoraError, _>(
        &base,
        staged.path(),
        opts.dtype,
        |name, shape, values| {
            let Some(module) = name.strip_suffix(".weight") else {
                return Ok(());
            };
            if !spec.modules.contains_key(module) {
                return Ok(());
            }
            let Some(delta) = combined_delta(&refs, &opts.combine, module)? else {
                return Ok(());
            };
            if delta.dim() != (shape[0], shape[1]) {
                return Err(LoraError::ShapeMismatch {
                    what: format!("merged update of {module}"),
                    expected: format!("the base weight's {shape:?}"),
                    found: delta.shape().to_vec(),
                });
            }
            let d = delta.as_standard_layout();
            let d = d.as_slice().expect("standard layout");
            let (mut dd, mut ww, mut mx) = (0f64, 0f64, 0f32);
            for (w, x) in values.iter_mut().zip(d) {
                ww += f64::from(*w) * f64::from(*w);
                dd += f64::from(*x) * f64::from(*x);
                mx = mx.max(x.abs());
                *w += *x;
            }
            stats.lock().expect("stats lock").push(ModuleStats {
                module: module.to_string(),
                delta_fro: dd.sqrt(),
                delta_max_abs: mx,
                relative: dd.sqrt() / ww.sqrt().max(f64::MIN_POSITIVE),
            });
            Ok(())
        },
        &|name| {
            bar.set_message(name.to_string());
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    let merge_write_s = t1.elapsed().as_secs_f64();
    // A merge that changed no weight would export the base model under an adapter's name; the
    // staged directory is dropped (removed) without being committed.
    if stats
        .lock()
        .expect("stats lock")
        .iter()
        .all(|m| m.delta_fro == 0.0)
    {
        return Err(LoraError::EmptyCombination {
            method: opts.combine.method.name().to_string(),
            detail: crate::combine::empty_reason(&opts.combine),
        });
    }

    let t2 = Instant::now();
    lm_core::export::write_sidecar_files(&base, staged.path(), opts.dtype)?;
    let sidecar_s = t2.elapsed().as_secs_f64();
    drop(base);

    let t3 = Instant::now();
    let verification = match &opts.verify {
        Some(v) => Some(verify(model, &refs, &opts.combine, staged.path(), v)?),
        None => None,
    };
    let verify_s = t3.elapsed().as_secs_f64();

    let mut modules = stats.into_inner().expect("stats lock");
    modules.sort_by(|a, b| a.module.cmp(&b.module));
    let c = &opts.combine;
    let mut report = MergeReport {
        base: model.to_string(),
        adapters: adapters.iter().map(|a| a.name.clone()).collect(),
        weights: c.weights.clone(),
        method: c.method.name().to_string(),
        rank: c.rank,
        density: c.density,
        seed: c.seed,
        lambda: c.lambda,
        dtype: opts.dtype.torch_name().to_string(),
        output: output.to_path_buf(),
        tensors: summary.tensors,
        weights_bytes: summary.bytes,
        modules,
        verification,
        timings: Timings {
            open_s,
            merge_write_s,
            sidecar_s,
            verify_s,
            total_s: 0.0,
        },
    };
    report.timings.total_s = t0.elapsed().as_secs_f64();
    write_json(&staged.path().join(REPORT_FILE), &report)?;
    staged.commit()?;
    Ok(report)
}

/// Adds every module's combined update `ΔW` to the decoder's own base weights, one module at a
/// time (a merge in memory, independent of the export code).
fn add_dense_updates(
    decoder: &mut lm_core::model::Decoder,
    adapters: &[&LoraAdapter],
    opts: &CombineOptions,
) -> Result<()> {
    let names: std::collections::BTreeSet<&String> =
        adapters.iter().flat_map(|a| a.modules.keys()).collect();
    for name in names {
        let Some(delta) = combined_delta(adapters, opts, name)? else {
            continue;
        };
        let layer = crate::apply::target_layer(decoder, name)?;
        let (d_out, d_in) = delta.dim();
        if (layer.d_in(), layer.d_out()) != (d_in, d_out) {
            return Err(LoraError::ShapeMismatch {
                what: format!("merged update of {name}"),
                expected: format!("[{}, {}] (the base layer)", layer.d_out(), layer.d_in()),
                found: vec![d_out, d_in],
            });
        }
        // burn stores the weight as [d_in, d_out]: add ΔWᵀ.
        let delta_t: Vec<f32> = delta.t().iter().copied().collect();
        let weight = layer.base.weight.val();
        let delta_t =
            Tensor::<2>::from_data(TensorData::new(delta_t, [d_in, d_out]), &weight.device());
        layer.base.weight =
            lm_core::burn::module::Param::from_tensor(weight + delta_t).set_require_grad(false);
        // A quantised copy of the old weight would decode without the merged update.
        layer.quant = None;
    }
    Ok(())
}

/// Logits `[seq, vocab]` of one sequence, flattened.
fn logits(model: &LanguageModel, ids: &[u32], mix: &ExpertMix) -> Result<Vec<f32>> {
    let tokens: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(tokens, [1, ids.len()]), &model.device);
    model
        .decoder
        .forward(t, mix)
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| LoraError::InvalidCombine(format!("cannot read logits back: {e:?}")))
}

fn verify(
    model: &str,
    adapters: &[&LoraAdapter],
    opts: &CombineOptions,
    exported: &Path,
    v: &VerifyOptions,
) -> Result<Verification> {
    let device = lm_core::device::device_from_name(&v.device)?;
    let mut base = LanguageModel::load(model, &device)?;
    let mut ids = base.encode(&v.prompt)?;
    ids.truncate(64);
    if ids.is_empty() {
        return Err(LoraError::InvalidCombine(
            "the verification prompt encodes to no tokens".into(),
        ));
    }
    let (reference, want) = if opts.rank.is_none() && !opts.method.is_pruning() {
        attach_adapters(&mut base.decoder, adapters)?;
        let coeffs = opts.weights.iter().map(|w| w * opts.lambda).collect();
        (
            "source adapters attached unmerged, coefficients lambda * weights".to_string(),
            logits(&base, &ids, &ExpertMix::Static(coeffs))?,
        )
    } else if opts.rank.is_some() {
        let (combined, _) = combine(adapters, opts)?;
        attach_adapters(&mut base.decoder, &[&combined])?;
        (
            "combined adapter attached unmerged".to_string(),
            logits(&base, &ids, &ExpertMix::Static(vec![1.0]))?,
        )
    } else {
        add_dense_updates(&mut base.decoder, adapters, opts)?;
        (
            "dense merged update added to the base weights in memory, module by module".to_string(),
            logits(&base, &ids, &ExpertMix::Base)?,
        )
    };
    let continuation = base.encode_continuation(&v.prompt)?;
    drop(base);
    // Loaded with positioned reads, not a memory map: one model resident at a time.
    let (decoder, tokenizer) = load_exported(exported, &device)?;
    let merged = LanguageModel::from_parts(decoder, tokenizer, &device);
    let tokenizer_ids_equal = merged.encode_continuation(&v.prompt)? == continuation;
    let got = logits(&merged, &ids, &ExpertMix::Base)?;
    let vocab = merged.config().vocab_size;
    let max_abs_logit_diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let argmax = |x: &[f32]| -> Vec<usize> {
        x.chunks(vocab)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i)
            })
            .collect()
    };
    Ok(Verification {
        prompt: v.prompt.clone(),
        tokens: ids.len(),
        reference,
        max_abs_logit_diff,
        max_abs_logit: want.iter().fold(0f32, |m, x| m.max(x.abs())),
        argmax_agree: argmax(&got) == argmax(&want),
        tokenizer_ids_equal,
        device: v.device.clone(),
    })
}

/// Loads adapter directories, naming each by its path.
pub fn load_named(dirs: &[PathBuf]) -> Result<Vec<NamedAdapter>> {
    dirs.iter()
        .map(|d| {
            Ok(NamedAdapter {
                name: d.display().to_string(),
                adapter: LoraAdapter::load(d)?,
            })
        })
        .collect()
}

/// `CombineMethod::Linear` with weight 1 for each adapter: the plain merge of their sum.
pub fn plain_merge_options(n: usize) -> CombineOptions {
    CombineOptions::new(CombineMethod::Linear, vec![1.0; n])
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;
    use crate::adapter::LoraModule;

    fn module(d_in: usize, d_out: usize, r: usize, seed: u64) -> LoraModule {
        let a = Array2::from_shape_fn((r, d_in), |(i, j)| {
            ((seed as usize * 7 + i * 13 + j * 3) % 11) as f32 / 11.0 - 0.5
        });
        let b = Array2::from_shape_fn((d_out, r), |(i, j)| {
            ((seed as usize * 5 + i * 3 + j * 7) % 13) as f32 / 13.0 - 0.5
        });
        LoraModule::new(a, b, r as f64, 1.0).unwrap()
    }

    #[test]
    fn dense_updates_are_added_to_the_base_weights() {
        let device = lm_core::device::device_from_name("cpu").unwrap();
        let mut model = lm_core::testing::tiny_language_model(3, &device);
        let name = "model.layers.0.self_attn.q_proj".to_string();
        let (d_in, d_out) = {
            let l = model.decoder.adapted_linear_mut(&name).unwrap();
            (l.d_in(), l.d_out())
        };
        let weight = |m: &mut LanguageModel| -> Vec<f32> {
            let l = m.decoder.adapted_linear_mut(&name).unwrap();
            l.base
                .weight
                .val()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        let before = weight(&mut model);
        let mut mods = std::collections::BTreeMap::new();
        mods.insert(name.clone(), module(d_in, d_out, 2, 1));
        let a = LoraAdapter {
            config: crate::config::AdapterConfig::default(),
            modules: mods,
        };
        let mut o = CombineOptions::new(CombineMethod::Ties, vec![0.8]);
        o.density = 0.6;
        add_dense_updates(&mut model.decoder, &[&a], &o).unwrap();
        let after = weight(&mut model);
        let delta = combined_delta(&[&a], &o, &name).unwrap().unwrap();
        for i in 0..d_in {
            for j in 0..d_out {
                let got = after[i * d_out + j] - before[i * d_out + j];
                assert!((got - delta[[j, i]]).abs() < 1e-6, "[{i}, {j}]");
            }
        }
        // An update for a module the base does not have is a named error.
        let mut other = std::collections::BTreeMap::new();
        other.insert(
            "model.layers.0.mlp.nope".to_string(),
            module(d_in, d_out, 2, 2),
        );
        let bad = LoraAdapter {
            config: crate::config::AdapterConfig::default(),
            modules: other,
        };
        let err = add_dense_updates(&mut model.decoder, &[&bad], &o).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
