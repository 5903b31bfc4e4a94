//! [`Moe`]: a mixture of LoRA experts attached to a [`Decoder`] through lm-core's
//! [`AdaptedLinear`](lm_core::model::AdaptedLinear) seam, and its directory format.
//!
//! Building (Rocket stage 6):
//! 1. the config and the experts are validated ([`MoeError`] names every refusal);
//! 2. each expert's scale (`α/r`, or `α/√r` for rsLoRA) is folded into its `B`, so that every
//!    expert runs at scale 1 — the authors' MoE forward never multiplies by `α/r`;
//! 3. the experts are attached with `lora_zoo::apply::attach_adapters` (ranks zero-padded to the
//!    largest in each module, a module an expert does not target gets zero factors and scale 0,
//!    which the routed forward skips);
//! 4. every adapted module gets a router `d_in → E` without bias, initialised per
//!    [`RouterInit`] from a seed and the module name (deterministic).
//!
//! Directory (`save` / `load`):
//! ```text
//! moe_config.json      format, base-model fingerprint, MoeConfig (experts by name, in order), modules
//! router.safetensors   one [E, d_in] f32 tensor per module, named by HF module name (PyTorch layout)
//! experts/<name>/      each expert as a PEFT LoRA adapter (scale folded: lora_alpha = r)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use lm_core::burn::module::Param;
use lm_core::burn::nn::Linear;
use lm_core::burn::tensor::{Tensor, TensorData};
use lm_core::model::adapted_linear::{RouteRecorder, RouteStats, Router, transpose};
use lm_core::model::{AdaptedLinear, Decoder, ExpertMix, LanguageModel};
use lm_core::score::{ScoreOptions, ScoreRequest, score};
use lora_zoo::apply::attach_adapters;
use lora_zoo::writer::config_for_modules;
use lora_zoo::{AdapterConfig, BaseModelSpec, LoraAdapter, LoraModule};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::arrow;
use crate::config::{ExpertSpec, MoeConfig, RouterInit};
use crate::error::{MoeError, Result};
use crate::fingerprint::BaseFingerprint;
use crate::losses::{AuxLosses, aux_losses};

/// File name of the mixture's config.
pub const CONFIG_FILE: &str = "moe_config.json";
/// File name of the router weights.
pub const ROUTER_FILE: &str = "router.safetensors";
/// Folder of the experts' PEFT directories.
pub const EXPERTS_DIR: &str = "experts";
/// Value of `format` in `moe_config.json`.
pub const FORMAT: &str = "openexpert-moe-lora";
/// Version of the directory format.
pub const FORMAT_VERSION: u32 = 1;

/// Router weights by module: PyTorch-layout values `[E, d_in]` (row-major) and that shape.
pub type RouterWeights = BTreeMap<String, (Vec<f32>, [usize; 2])>;

/// One expert of a built mixture.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertInfo {
    /// Its name.
    pub name: String,
    /// Its original `adapter_config.json` (base model name, task type) used when it is saved.
    pub template: AdapterConfig,
    /// Its own rank in each module it targets (before zero-padding).
    pub ranks: BTreeMap<String, usize>,
}

/// A mixture of LoRA experts attached to a decoder. The weights live in the decoder (experts
/// and routers of its adapted modules); this handle knows what they are.
#[derive(Debug, Clone, PartialEq)]
pub struct Moe {
    /// The configuration (experts in order, k, router init, loss coefficients).
    pub config: MoeConfig,
    /// The base model it was built on.
    pub base: BaseFingerprint,
    /// The routed modules (HF names, sorted).
    pub modules: Vec<String>,
    /// The experts, in order.
    pub experts: Vec<ExpertInfo>,
}

/// `moe_config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoeFile {
    format: String,
    version: u32,
    base: BaseFingerprint,
    config: MoeConfig,
    modules: Vec<String>,
}

/// The recorders installed on a mixture's routers, by module.
#[derive(Debug, Clone, Default)]
pub struct RouteRecorders {
    /// `(module, recorder)` in [`Moe::modules`] order.
    pub modules: Vec<(String, RouteRecorder)>,
}

/// Routing statistics of one module, ready for a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleRouting {
    /// The module.
    pub module: String,
    /// Tokens recorded.
    pub tokens: u64,
    /// Per expert: share of the token-to-expert assignments (load).
    pub load_share: Vec<f64>,
    /// Per expert: share of tokens whose largest gate it is.
    pub top1_share: Vec<f64>,
    /// Per expert: mean softmax gate.
    pub mean_gate: Vec<f64>,
    /// Mean entropy of the gates over experts, in nats.
    pub mean_entropy: f64,
    /// Mean entropy divided by `ln E` (1 = uniform).
    pub normalized_entropy: f64,
}

impl ModuleRouting {
    fn new(module: String, s: &RouteStats) -> Self {
        Self {
            module,
            tokens: s.tokens,
            load_share: s.load_share(),
            top1_share: s.top1_share(),
            mean_gate: s.mean_gate(),
            mean_entropy: s.mean_entropy(),
            normalized_entropy: s.normalized_entropy(),
        }
    }
}

impl RouteRecorders {
    /// Statistics per module.
    pub fn stats(&self) -> Vec<ModuleRouting> {
        self.modules
            .iter()
            .map(|(m, r)| ModuleRouting::new(m.clone(), &r.stats()))
            .collect()
    }

    /// Statistics of all modules pooled (loads averaged over modules; `tokens` is the number of
    /// tokens each module routed).
    pub fn overall(&self) -> Option<ModuleRouting> {
        let all = self.stats();
        let first = all.first()?;
        let n = all.len() as f64;
        let avg = |f: &dyn Fn(&ModuleRouting) -> &Vec<f64>| -> Vec<f64> {
            (0..f(first).len())
                .map(|e| {
                    all.iter()
                        .map(|m| f(m).get(e).copied().unwrap_or(0.0))
                        .sum::<f64>()
                        / n
                })
                .collect()
        };
        Some(ModuleRouting {
            module: "all".into(),
            // Every module sees every token: the count of one module, not the sum over them.
            tokens: all.iter().map(|m| m.tokens).max().unwrap_or(0),
            load_share: avg(&|m| &m.load_share),
            top1_share: avg(&|m| &m.top1_share),
            mean_gate: avg(&|m| &m.mean_gate),
            mean_entropy: all.iter().map(|m| m.mean_entropy).sum::<f64>() / n,
            normalized_entropy: all.iter().map(|m| m.normalized_entropy).sum::<f64>() / n,
        })
    }

    /// Takes the kept logits of every module (see [`RouteRecorder::take_logits`]).
    pub fn take_logits(&self) -> Vec<(String, Vec<Tensor<2>>)> {
        self.modules
            .iter()
            .map(|(m, r)| (m.clone(), r.take_logits()))
            .collect()
    }

    /// Clears every recorder.
    pub fn reset(&self) {
        for (_, r) in &self.modules {
            r.reset();
        }
    }
}

/// A stable 64-bit hash of a module name (FNV-1a), mixed into the router seed.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Normalised base model name for comparisons: the last path component, lower case.
fn base_name(name: &str) -> String {
    name.trim_end_matches('/')
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(name)
        .to_lowercase()
}

/// Mean load share per decoder layer and expert: the average, over a layer's routed modules,
/// of each module's load share (`moe routes` and Rocket's routing heatmap).
///
/// # Shapes
/// `modules[i].load_share: [e]` -> `[(layer, [e])]`, layers ascending; modules whose name
/// carries no layer index are skipped.
pub fn layer_load_share(modules: &[ModuleRouting], e: usize) -> Vec<(usize, Vec<f64>)> {
    let mut by_layer: std::collections::BTreeMap<usize, (Vec<f64>, usize)> = Default::default();
    for m in modules {
        let Some(layer) = lm_core::model::layout::layer_index(&m.module) else {
            continue;
        };
        let entry = by_layer.entry(layer).or_insert((vec![0.0; e], 0));
        entry
            .0
            .iter_mut()
            .zip(&m.load_share)
            .for_each(|(a, b)| *a += b);
        entry.1 += 1;
    }
    by_layer
        .into_iter()
        .map(|(l, (sum, n))| (l, sum.into_iter().map(|s| s / n as f64).collect()))
        .collect()
}

/// The [`BaseModelSpec`] of a decoder (its adaptable linears and their shapes).
pub fn decoder_spec(decoder: &Decoder) -> BaseModelSpec {
    BaseModelSpec {
        name: BaseFingerprint::of(decoder).describe(),
        modules: decoder
            .adapted_linears()
            .into_iter()
            .map(|(n, l)| (n, (l.d_in(), l.d_out())))
            .collect(),
    }
}

/// Loads the experts' PEFT adapters from their directories; relative paths are taken from
/// `root` when given.
pub fn load_experts(config: &MoeConfig, root: Option<&Path>) -> Result<Vec<LoraAdapter>> {
    config
        .experts
        .iter()
        .map(|spec| {
            let path = match root {
                Some(r) if spec.path.is_relative() => r.join(&spec.path),
                _ => spec.path.clone(),
            };
            LoraAdapter::load(&path).map_err(|source| MoeError::LoadExpert {
                expert: spec.name.clone(),
                path,
                source: Box::new(source),
            })
        })
        .collect()
}

/// Checks experts against each other and the base: shapes and modules fit the decoder, one
/// base model name, and no expert whose modules no other expert targets.
fn validate_experts(
    config: &MoeConfig,
    adapters: &[LoraAdapter],
    spec: &BaseModelSpec,
) -> Result<()> {
    if adapters.len() != config.experts.len() {
        return Err(MoeError::ExpertCount {
            specs: config.experts.len(),
            adapters: adapters.len(),
        });
    }
    let mut first_name: Option<(&str, &str)> = None;
    for (s, a) in config.experts.iter().zip(adapters) {
        a.validate(spec)
            .map_err(|source| MoeError::ExpertForAnotherBase {
                expert: s.name.clone(),
                base: spec.name.clone(),
                source: Box::new(source),
            })?;
        if let Some(name) = a.config.base_model_name_or_path.as_deref() {
            match first_name {
                None => first_name = Some((s.name.as_str(), name)),
                Some((first, expected)) if base_name(expected) != base_name(name) => {
                    return Err(MoeError::BaseModelNames {
                        expert: s.name.clone(),
                        found: name.into(),
                        first: first.into(),
                        expected: expected.into(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    if adapters.len() > 1 {
        for (i, a) in adapters.iter().enumerate() {
            let others: BTreeSet<&String> = adapters
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .flat_map(|(_, b)| b.modules.keys())
                .collect();
            if a.modules.keys().all(|m| !others.contains(m)) {
                let suffixes = |it: &mut dyn Iterator<Item = &String>| -> Vec<String> {
                    it.map(|k| k.rsplit('.').next().unwrap_or(k).to_string())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect()
                };
                return Err(MoeError::DisjointTargets {
                    expert: config.experts[i].name.clone(),
                    modules: suffixes(&mut a.modules.keys()),
                    others: suffixes(&mut others.into_iter()),
                });
            }
        }
        let all: BTreeSet<&String> = adapters.iter().flat_map(|a| a.modules.keys()).collect();
        let partial = all
            .iter()
            .filter(|m| adapters.iter().any(|a| !a.modules.contains_key(**m)))
            .count();
        if partial > 0 {
            tracing::warn!(
                partial,
                total = all.len(),
                "some modules are targeted by only some experts; the others are zero experts there"
            );
        }
    }
    Ok(())
}

/// The adapter with its scale folded into `B` (scale 1, `alpha = r`).
fn folded(adapter: &LoraAdapter) -> LoraAdapter {
    let mut out = adapter.clone();
    for m in out.modules.values_mut() {
        m.b *= m.scale;
        m.scale = 1.0;
        m.alpha = m.rank() as f64;
    }
    out
}

/// A router `d_in → E` from PyTorch-layout weights `[E, d_in]`.
fn router_from_rows(
    rows: &[f32],
    e: usize,
    d_in: usize,
    abs: bool,
    device: &lm_core::burn::tensor::Device,
) -> Router {
    let w = Tensor::<2>::from_data(TensorData::new(transpose(rows, e, d_in), [d_in, e]), device);
    Router {
        linear: Linear {
            weight: Param::from_tensor(w),
            bias: None,
        },
        abs_logits: abs,
        recorder: None,
    }
}

/// The adapted module `name` of a decoder (read only).
fn layer<'a>(
    layers: &'a HashMap<String, &'a AdaptedLinear>,
    name: &str,
) -> Result<&'a AdaptedLinear> {
    layers
        .get(name)
        .copied()
        .filter(|l| l.experts.is_some())
        .ok_or_else(|| MoeError::NotAttached {
            module: name.to_string(),
        })
}

/// Refuses a path that is not a mixture directory (missing, a file, or without its files)
/// before anything is read, naming what is missing.
fn check_mixture_dir(dir: &Path) -> Result<()> {
    let expected = format!("a directory with {CONFIG_FILE}, {ROUTER_FILE} and {EXPERTS_DIR}/");
    let not = |found: String| MoeError::NotAMixture {
        path: dir.to_path_buf(),
        expected: expected.clone(),
        found,
    };
    if !dir.exists() {
        return Err(not("nothing (no such directory)".into()));
    }
    if !dir.is_dir() {
        return Err(not("a file".into()));
    }
    let missing: Vec<&str> = [CONFIG_FILE, ROUTER_FILE, EXPERTS_DIR]
        .into_iter()
        .filter(|f| !dir.join(f).exists())
        .collect();
    if !missing.is_empty() {
        return Err(not(format!("a directory without {}", missing.join(", "))));
    }
    Ok(())
}

/// The first non-finite value of a slice.
fn non_finite(v: &[f32]) -> Option<(usize, f32)> {
    v.iter().copied().enumerate().find(|(_, x)| !x.is_finite())
}

impl Moe {
    /// Builds the mixture on `decoder` from already loaded adapters (`adapters[e]` is
    /// `config.experts[e]`); experts attached before are replaced. Fails, leaving the decoder
    /// untouched, on any validation error.
    pub fn build(
        decoder: &mut Decoder,
        config: MoeConfig,
        adapters: &[LoraAdapter],
    ) -> Result<Self> {
        config.validate()?;
        let spec = decoder_spec(decoder);
        validate_experts(&config, adapters, &spec)?;
        let e = adapters.len();
        let folded: Vec<LoraAdapter> = adapters.iter().map(folded).collect();
        let refs: Vec<&LoraAdapter> = folded.iter().collect();
        let report = attach_adapters(decoder, &refs).map_err(|e| MoeError::Attach(Box::new(e)))?;
        let device = decoder.embed_tokens.weight.val().device();
        for name in &report.modules {
            let layer = decoder
                .adapted_linear_mut(name)
                .expect("attach_adapters reported this module");
            let d_in = layer.d_in();
            let rows = match config.router_init {
                RouterInit::Kaiming => {
                    let bound = 1.0 / (d_in as f32).sqrt();
                    let mut rng = StdRng::seed_from_u64(config.seed ^ name_hash(name));
                    (0..e * d_in)
                        .map(|_| rng.random_range(-bound..bound))
                        .collect()
                }
                RouterInit::Zero => vec![0.0; e * d_in],
                RouterInit::Arrow => {
                    let modules: Vec<Option<&LoraModule>> =
                        adapters.iter().map(|a| a.modules.get(name)).collect();
                    arrow::router_rows(&modules, d_in)
                }
            };
            let abs = config.router_init == RouterInit::Arrow;
            let set = layer.experts.as_mut().expect("attached");
            set.router = Some(router_from_rows(&rows, e, d_in, abs, &device));
        }
        let experts = config
            .experts
            .iter()
            .zip(adapters)
            .map(|(s, a)| ExpertInfo {
                name: s.name.clone(),
                template: a.config.clone(),
                ranks: a
                    .modules
                    .iter()
                    .map(|(n, m)| (n.clone(), m.rank()))
                    .collect(),
            })
            .collect();
        let moe = Self {
            base: BaseFingerprint::of(decoder),
            modules: report.modules,
            experts,
            config,
        };
        moe.check(decoder)?;
        tracing::info!(
            experts = e,
            modules = moe.modules.len(),
            top_k = moe.config.top_k,
            init = ?moe.config.router_init,
            "mixture of LoRA experts built"
        );
        Ok(moe)
    }

    /// [`load_experts`] then [`build`](Self::build).
    pub fn from_config(decoder: &mut Decoder, config: MoeConfig) -> Result<Self> {
        config.validate()?;
        let adapters = load_experts(&config, None)?;
        Self::build(decoder, config, &adapters)
    }

    /// The mix that runs this mixture (`ExpertMix::Routed`).
    pub fn mix(&self) -> ExpertMix {
        self.config.mix()
    }

    /// Checks that every routed module of `decoder` can run [`mix`](Self::mix).
    pub fn check(&self, decoder: &Decoder) -> Result<()> {
        let layers: HashMap<String, &AdaptedLinear> =
            decoder.adapted_linears().into_iter().collect();
        let mix = self.mix();
        for name in &self.modules {
            let set = layer(&layers, name)?
                .experts
                .as_ref()
                .expect("checked by layer");
            set.check_mix(&mix).map_err(|source| MoeError::Mix {
                module: name.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Installs a fresh recorder on every router (replacing any) and returns them. `stats`:
    /// accumulate [`RouteStats`] (one device-to-host copy of the gates per forward);
    /// `logits`: keep each forward's logits for [`aux_losses`](Self::aux_losses). Works for
    /// training, scoring and generation alike; clones of the decoder share the recorders.
    pub fn record(&self, decoder: &mut Decoder, stats: bool, logits: bool) -> RouteRecorders {
        let mut out = RouteRecorders::default();
        for name in &self.modules {
            if let Some(router) = decoder
                .adapted_linear_mut(name)
                .and_then(|l| l.experts.as_mut())
                .and_then(|s| s.router.as_mut())
            {
                let rec = RouteRecorder::new(stats, logits);
                router.recorder = Some(rec.clone());
                out.modules.push((name.clone(), rec));
            }
        }
        out
    }

    /// Routes `requests` through this mixture (attached to `model`) by teacher-forced scoring
    /// and returns the recorders holding each module's statistics ([`RouteRecorders::stats`],
    /// [`RouteRecorders::overall`]). Every token of every request counts once; requests are
    /// scored one per forward, so padding never counts as routed traffic. The recorders are
    /// removed from the routers afterwards.
    ///
    /// # Errors
    /// [`MoeError::Route`] when a forward fails (a request longer than the model's context,
    /// a token id beyond the vocabulary).
    pub fn route(
        &self,
        model: &mut LanguageModel,
        requests: &[ScoreRequest],
    ) -> Result<RouteRecorders> {
        let recorders = self.record(&mut model.decoder, true, false);
        let options = ScoreOptions {
            batch_size: 1,
            ..ScoreOptions::default()
        };
        let scored = score(model, requests, &options, &self.mix());
        self.stop_recording(&mut model.decoder);
        scored.map_err(|e| MoeError::Route {
            source: Box::new(e),
        })?;
        Ok(recorders)
    }

    /// Removes the recorders from every router.
    pub fn stop_recording(&self, decoder: &mut Decoder) {
        for name in &self.modules {
            if let Some(router) = decoder
                .adapted_linear_mut(name)
                .and_then(|l| l.experts.as_mut())
                .and_then(|s| s.router.as_mut())
            {
                router.recorder = None;
            }
        }
    }

    /// The auxiliary losses of the forwards recorded since the last call (takes the kept
    /// logits), weighted by the config's `balance_loss` and `z_loss`; `None` when both are 0.
    /// `mask`: per-token weights `[batch · seq]` (0 leaves a token out; training passes 0 for
    /// padding), see [`crate::losses`].
    pub fn aux_losses(
        &self,
        recorders: &RouteRecorders,
        mask: Option<&Tensor<1>>,
    ) -> Option<AuxLosses> {
        let logits = recorders.take_logits();
        aux_losses(
            &logits,
            self.config.top_k,
            self.config.balance_loss,
            self.config.z_loss,
            mask,
        )
    }

    /// Each router's weights in PyTorch layout `[E, d_in]`, by module.
    pub fn router_weights(&self, decoder: &Decoder) -> Result<RouterWeights> {
        let layers: HashMap<String, &AdaptedLinear> =
            decoder.adapted_linears().into_iter().collect();
        let e = self.experts.len();
        let mut out = BTreeMap::new();
        for name in &self.modules {
            let l = layer(&layers, name)?;
            let router = l
                .experts
                .as_ref()
                .and_then(|s| s.router.as_ref())
                .ok_or_else(|| MoeError::NotAttached {
                    module: name.clone(),
                })?;
            let d_in = l.d_in();
            let w: Vec<f32> = router
                .linear
                .weight
                .val()
                .into_data()
                .iter::<f32>()
                .collect();
            out.insert(name.clone(), (transpose(&w, d_in, e), [e, d_in]));
        }
        Ok(out)
    }

    /// The experts as they are now in `decoder` (trained or not), as PEFT adapters at scale 1
    /// (`lora_alpha = r`), each at its own rank (padding dropped).
    pub fn expert_adapters(&self, decoder: &Decoder) -> Result<Vec<LoraAdapter>> {
        let layers: HashMap<String, &AdaptedLinear> =
            decoder.adapted_linears().into_iter().collect();
        let e = self.experts.len();
        let mut modules: Vec<BTreeMap<String, LoraModule>> = vec![BTreeMap::new(); e];
        for name in &self.modules {
            let l = layer(&layers, name)?;
            let set = l.experts.as_ref().expect("checked by layer");
            let (d_in, d_out, r) = (l.d_in(), l.d_out(), set.rank);
            let a: Vec<f32> = set.a.val().into_data().iter::<f32>().collect(); // [d_in, E·r]
            let b: Vec<f32> = set.b.val().into_data().iter::<f32>().collect(); // [E·r, d_out]
            for (ei, info) in self.experts.iter().enumerate() {
                let Some(&re) = info.ranks.get(name) else {
                    continue;
                };
                let lora_a = Array2::from_shape_fn((re, d_in), |(k, i)| a[i * e * r + ei * r + k]);
                let lora_b =
                    Array2::from_shape_fn((d_out, re), |(o, k)| b[(ei * r + k) * d_out + o]);
                let scale = set.scales[ei];
                let m = LoraModule::new(lora_a, lora_b, f64::from(scale) * re as f64, scale)
                    .map_err(|source| MoeError::SaveExpert {
                        expert: info.name.clone(),
                        source: Box::new(source),
                    })?;
                modules[ei].insert(name.clone(), m);
            }
        }
        Ok(self
            .experts
            .iter()
            .zip(modules)
            .map(|(info, modules)| {
                let mut template = info.template.clone();
                template.use_rslora = false;
                LoraAdapter {
                    config: config_for_modules(&modules, &template),
                    modules,
                }
            })
            .collect())
    }

    /// Saves the mixture (as it is now in `decoder`) to `dir`, replacing the directory as a
    /// whole (built aside, then swapped in: a crash leaves the old mixture or the new one).
    pub fn save(&self, decoder: &Decoder, dir: &Path) -> Result<()> {
        let staged =
            atomic_fs::StagedDir::replacing(dir).map_err(|e| MoeError::Output(Box::new(e)))?;
        self.write_into(decoder, staged.path())?;
        staged.commit().map_err(|e| MoeError::Output(Box::new(e)))?;
        tracing::info!(dir = %dir.display(), "mixture saved");
        Ok(())
    }

    /// Writes the mixture's files into an existing directory `dir` (for callers that compose a
    /// larger directory and swap it in themselves); [`save`](Self::save) is the atomic version.
    pub fn write_into(&self, decoder: &Decoder, dir: &Path) -> Result<()> {
        for (info, adapter) in self.experts.iter().zip(self.expert_adapters(decoder)?) {
            let path = dir.join(EXPERTS_DIR).join(&info.name);
            adapter.save(&path).map_err(|source| MoeError::SaveExpert {
                expert: info.name.clone(),
                source: Box::new(source),
            })?;
        }
        let weights = self.router_weights(decoder)?;
        for (module, (w, _)) in &weights {
            if let Some((index, value)) = non_finite(w) {
                return Err(MoeError::NonFiniteRouter {
                    module: module.clone(),
                    value,
                    index,
                });
            }
        }
        let bytes: Vec<(String, [usize; 2], Vec<u8>)> = weights
            .into_iter()
            .map(|(m, (w, shape))| (m, shape, w.iter().flat_map(|v| v.to_le_bytes()).collect()))
            .collect();
        let router_path = dir.join(ROUTER_FILE);
        let views = bytes
            .iter()
            .map(|(m, shape, data)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), data)
                    .map(|v| (m.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|source| MoeError::Safetensors {
                path: router_path.clone(),
                source,
            })?;
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        let data =
            safetensors::serialize(views, Some(meta)).map_err(|source| MoeError::Safetensors {
                path: router_path.clone(),
                source,
            })?;
        std::fs::write(&router_path, data).map_err(|e| MoeError::io(&router_path, e))?;
        let mut config = self.config.clone();
        config.experts = self
            .experts
            .iter()
            .map(|info| ExpertSpec {
                name: info.name.clone(),
                path: PathBuf::from(EXPERTS_DIR).join(&info.name),
            })
            .collect();
        let file = MoeFile {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            base: self.base.clone(),
            config,
            modules: self.modules.clone(),
        };
        let cpath = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&file).map_err(|source| MoeError::Json {
            path: cpath.clone(),
            source,
        })?;
        std::fs::write(&cpath, text).map_err(|e| MoeError::io(&cpath, e))?;
        Ok(())
    }

    /// Loads a mixture saved by [`save`](Self::save) onto `decoder`, refusing one built for
    /// another base model.
    pub fn load(decoder: &mut Decoder, dir: &Path) -> Result<Self> {
        check_mixture_dir(dir)?;
        let cpath = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cpath).map_err(|e| MoeError::io(&cpath, e))?;
        let file: MoeFile = serde_json::from_str(&text).map_err(|source| MoeError::Json {
            path: cpath.clone(),
            source,
        })?;
        file.base.check(&BaseFingerprint::of(decoder), dir)?;
        let adapters = load_experts(&file.config, Some(dir))?;
        // Routers come from the file: build with zero routers, then overwrite them.
        let init = file.config.router_init;
        let mut moe = Self::build(
            decoder,
            file.config.clone().with_router_init(RouterInit::Zero),
            &adapters,
        )?;
        moe.config.router_init = init;
        let rpath = dir.join(ROUTER_FILE);
        let bytes = std::fs::read(&rpath).map_err(|e| MoeError::io(&rpath, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|source| {
            MoeError::Safetensors {
                path: rpath.clone(),
                source,
            }
        })?;
        let e = moe.experts.len();
        let device = decoder.embed_tokens.weight.val().device();
        for name in &moe.modules {
            let layer = decoder.adapted_linear_mut(name).expect("built above");
            let d_in = layer.d_in();
            let view = st.tensor(name).map_err(|_| MoeError::RouterShape {
                module: name.clone(),
                expected: format!("a tensor {name:?} in {ROUTER_FILE}"),
                found: "none".into(),
            })?;
            if view.dtype() != safetensors::Dtype::F32 || view.shape() != [e, d_in] {
                return Err(MoeError::RouterShape {
                    module: name.clone(),
                    expected: format!("F32 [{e}, {d_in}]"),
                    found: format!("{:?} {:?}", view.dtype(), view.shape()),
                });
            }
            let rows: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            if let Some((index, value)) = non_finite(&rows) {
                return Err(MoeError::NonFiniteRouter {
                    module: name.clone(),
                    value,
                    index,
                });
            }
            let abs = init == RouterInit::Arrow;
            layer.experts.as_mut().expect("built").router =
                Some(router_from_rows(&rows, e, d_in, abs, &device));
        }
        if file.modules != moe.modules {
            tracing::warn!(
                saved = file.modules.len(),
                built = moe.modules.len(),
                "the experts on disk adapt other modules than the saved list"
            );
        }
        Ok(moe)
    }
}
