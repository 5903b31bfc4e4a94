//! Combining several adapters into one, in ΔW space.
//!
//! The ΔW of module `m` for adapter `i` is `s_i · B_i · A_i`. Every method here defines the combined
//! update as a function of those ΔW's, never of the factors separately: summing `A`'s and `B`'s
//! (PEFT's `linear`, LoraHub) creates cross terms `B_i · A_j` that belong to no adapter.
//!
//! | method | combined ΔW | output rank |
//! |---|---|---|
//! | `cat` | `Σ w_i ΔW_i`, exact: `A = [w_i s_i A_i]` stacked, `B = [B_i]` side by side (PEFT `cat`) | `Σ r_i` |
//! | `linear`, `task_arithmetic` | `λ Σ w_i ΔW_i`; exact (as `cat`) unless `rank` is given, then the best rank-`rank` approximation computed from the factors (QR + core SVD) | `Σ r_i` or `rank` |
//! | `svd` | as `linear` with `rank` defaulting to the largest input rank (PEFT `svd`) | `rank` |
//! | `ties` | magnitude-prune each ΔW to `density`, elect the sign per entry, average the agreeing weighted entries (PEFT `ties_svd`) | `rank` |
//! | `dare` | random-drop each ΔW entry with prob. `1 - density`, rescale by `1/density`, weighted sum (PEFT `dare_linear_svd`) | `rank` |
//! | `dare_ties` | DARE drop + rescale, then TIES sign election (PEFT `dare_ties_svd`) | `rank` |
//! | `magnitude_prune` | magnitude-prune each ΔW, weighted sum (PEFT `magnitude_prune_svd`) | `rank` |
//!
//! Pruning methods materialise each module's ΔW (`[d_out, d_in]`, f32), modules in parallel, then
//! re-factorise by truncated SVD. Output modules have scale 1 (`lora_alpha = r`); the written config
//! lists per-module ranks in `rank_pattern`. One adapter with weight 1 (and `λ = 1`) comes back
//! unchanged for the exact methods.

use std::collections::{BTreeMap, BTreeSet};

use ndarray::{Array2, Axis, concatenate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::adapter::{LoraAdapter, LoraModule};
use crate::error::{LoraError, Result};
use crate::linalg;
use crate::writer::config_for_modules;

/// How adapters are combined; see the module docs for the formulas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CombineMethod {
    /// Exact weighted ΔW sum; SVD-truncated only when a rank is given.
    Linear,
    /// Exact concatenation of factors (rank = sum of ranks), as PEFT `cat`.
    Cat,
    /// Weighted ΔW sum truncated by SVD to `rank` (default: the largest input rank).
    Svd,
    /// Alias of `linear` (task vectors are the ΔW's), scaled by `λ`.
    TaskArithmetic,
    /// TIES-merging on ΔW, then SVD.
    Ties,
    /// DARE (random drop and rescale) on ΔW, weighted sum, then SVD.
    Dare,
    /// DARE drop and rescale, TIES sign election, then SVD.
    DareTies,
    /// Magnitude pruning of each ΔW, weighted sum, then SVD.
    MagnitudePrune,
}

// The names PEFT's `add_weighted_adapter` and mergekit use (snake case).
lm_core::named_enum!(CombineMethod, "combine method", {
    Linear => "linear",
    Cat => "cat",
    Svd => "svd",
    TaskArithmetic => "task_arithmetic",
    Ties => "ties",
    Dare => "dare",
    DareTies => "dare_ties",
    MagnitudePrune => "magnitude_prune",
});

impl CombineMethod {
    /// Whether the method materialises ΔW per module (pruning methods).
    pub fn is_pruning(self) -> bool {
        matches!(
            self,
            CombineMethod::Ties
                | CombineMethod::Dare
                | CombineMethod::DareTies
                | CombineMethod::MagnitudePrune
        )
    }
}

/// How TIES elects the sign of each entry (PEFT's `majority_sign_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MajoritySign {
    /// Sign of the sum of the (pruned, unweighted) values.
    #[default]
    Total,
    /// Sign held by more adapters.
    Frequency,
}

lm_core::named_enum!(MajoritySign, "majority sign", { Total => "total", Frequency => "frequency" });

/// Options of [`combine`].
#[derive(Debug, Clone, PartialEq)]
pub struct CombineOptions {
    /// The method.
    pub method: CombineMethod,
    /// One weight per adapter; negative weights subtract.
    pub weights: Vec<f32>,
    /// Output rank (per module); `None`: exact for `linear`/`cat`, largest input rank otherwise.
    pub rank: Option<usize>,
    /// Fraction of entries kept by the pruning methods, in `(0, 1]`.
    pub density: f32,
    /// Seed of DARE's random drops (results are reproducible for a given seed).
    pub seed: u64,
    /// TIES sign election.
    pub majority_sign: MajoritySign,
    /// Global multiplier on the combined ΔW (mergekit's `lambda`).
    pub lambda: f32,
}

impl CombineOptions {
    /// Options for `method` with the given weights and defaults elsewhere (density 0.5, seed 0, λ 1).
    pub fn new(method: CombineMethod, weights: Vec<f32>) -> Self {
        CombineOptions {
            method,
            weights,
            rank: None,
            density: 0.5,
            seed: 0,
            majority_sign: MajoritySign::Total,
            lambda: 1.0,
        }
    }
}

/// What [`combine`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CombineReport {
    /// Number of output modules.
    pub modules: usize,
    /// Largest output rank.
    pub max_rank: usize,
    /// Smallest fraction of `‖ΔW‖²_F` kept by an SVD truncation over modules (1 when exact).
    pub min_energy_kept: f64,
}

/// One adapter's contribution to a module.
struct Part<'a> {
    index: usize,
    weight: f32,
    module: &'a LoraModule,
}

fn to_f64(m: &Array2<f32>) -> Array2<f64> {
    m.mapv(f64::from)
}

fn to_f32(m: &Array2<f64>) -> Array2<f32> {
    m.mapv(|x| x as f32)
}

/// FNV-1a, for per-module seeds that do not depend on the standard library's hasher.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Combines adapters into a new adapter (see the module docs). Adapters may target different modules
/// (a module absent from an adapter gets no contribution from it) and have different ranks and scales.
pub fn combine(
    adapters: &[&LoraAdapter],
    opts: &CombineOptions,
) -> Result<(LoraAdapter, CombineReport)> {
    validate_request(adapters, opts)?;
    let exact_method = matches!(
        opts.method,
        CombineMethod::Linear
            | CombineMethod::Cat
            | CombineMethod::TaskArithmetic
            | CombineMethod::Svd
    );
    if adapters.len() == 1
        && opts.weights[0] == 1.0
        && opts.lambda == 1.0
        && exact_method
        && opts.rank.is_none_or(|k| k >= adapters[0].max_rank())
    {
        let ad = adapters[0].clone();
        let report = CombineReport {
            modules: ad.modules.len(),
            max_rank: ad.max_rank(),
            min_energy_kept: 1.0,
        };
        return Ok((ad, report));
    }
    let names: BTreeSet<&String> = adapters.iter().flat_map(|a| a.modules.keys()).collect();
    let names: Vec<&String> = names.into_iter().collect();
    let results: Vec<Result<(String, Option<LoraModule>, f64)>> = names
        .par_iter()
        .map(|name| {
            let parts = module_parts(adapters, name, opts)?;
            let (m, kept) = combine_module(name, &parts, opts)?;
            Ok(((*name).clone(), m, kept))
        })
        .collect();
    let mut modules = BTreeMap::new();
    let mut min_kept: f64 = 1.0;
    for r in results {
        let (name, m, kept) = r?;
        min_kept = min_kept.min(kept);
        if let Some(m) = m {
            modules.insert(name, m);
        }
    }
    if modules.is_empty() {
        return Err(LoraError::EmptyCombination {
            method: opts.method.name().to_string(),
            detail: empty_reason(opts),
        });
    }
    let config = config_for_modules(&modules, &adapters[0].config);
    let out = LoraAdapter { config, modules };
    let report = CombineReport {
        modules: out.modules.len(),
        max_rank: out.max_rank(),
        min_energy_kept: min_kept,
    };
    Ok((out, report))
}

/// Why a combination came out empty, in words, for [`LoraError::EmptyCombination`].
pub(crate) fn empty_reason(opts: &CombineOptions) -> String {
    if opts.lambda == 0.0 {
        "lambda is 0".into()
    } else if opts.weights.iter().all(|w| *w == 0.0) {
        format!("every weight is 0: {:?}", opts.weights)
    } else if opts.method.is_pruning() {
        format!(
            "every combined update is zero after pruning at density {}",
            opts.density
        )
    } else {
        "every combined update is zero".into()
    }
}

/// The combined dense update of every module, for merging into base weights: `f(module, ΔW)` is
/// called from rayon worker threads, modules in parallel, so at most one `[d_out, d_in]` f32 matrix
/// per thread (plus the pruning methods' per-adapter copies) is alive at a time.
///
/// With `opts.rank == None` nothing is truncated: exact methods give `λ Σ w_i ΔW_i` (one matmul of the
/// concatenated factors) and pruning methods their full merged ΔW (as mergekit does for full
/// merges). With a rank, the update is exactly the ΔW of the adapter [`combine`] would return.
///
/// # Shapes
/// each `ΔW` is `[d_out, d_in]`.
pub fn for_each_combined_delta<F>(
    adapters: &[&LoraAdapter],
    opts: &CombineOptions,
    f: F,
) -> Result<()>
where
    F: Fn(&str, Array2<f32>) -> Result<()> + Sync,
{
    validate_request(adapters, opts)?;
    let names: BTreeSet<&String> = adapters.iter().flat_map(|a| a.modules.keys()).collect();
    let names: Vec<&String> = names.into_iter().collect();
    names.par_iter().try_for_each(|name| {
        let delta = module_delta(adapters, name, opts)?;
        f(name, delta)
    })
}

/// The combined dense update of one module, as [`for_each_combined_delta`] computes it, or `None`
/// when no adapter has the module. The streaming merge calls this per base tensor, in file order.
///
/// # Shapes
/// returns `[d_out, d_in]`.
pub fn combined_delta(
    adapters: &[&LoraAdapter],
    opts: &CombineOptions,
    name: &str,
) -> Result<Option<Array2<f32>>> {
    validate_request(adapters, opts)?;
    if !adapters.iter().any(|a| a.modules.contains_key(name)) {
        return Ok(None);
    }
    module_delta(adapters, name, opts).map(Some)
}

/// The dense update of a module that at least one adapter has.
fn module_delta(
    adapters: &[&LoraAdapter],
    name: &str,
    opts: &CombineOptions,
) -> Result<Array2<f32>> {
    let parts = module_parts(adapters, name, opts)?;
    Ok(match (opts.rank, opts.method.is_pruning()) {
        (None, true) => pruned_delta(name, &parts, opts),
        (None, false) => {
            // `cat`/`linear` modules keep the sources' own scale when there is a single source.
            if parts.len() == 1 && parts[0].weight == 1.0 && opts.lambda == 1.0 {
                parts[0].module.delta()
            } else {
                let (a, b) = concat_parts(&parts, opts.lambda);
                b.dot(&a)
            }
        }
        (Some(_), _) => match combine_module(name, &parts, opts)?.0 {
            Some(m) => m.delta(),
            None => Array2::zeros((parts[0].module.d_out(), parts[0].module.d_in())),
        },
    })
}

/// The contributions of each adapter to module `name`, checking that their shapes agree.
fn module_parts<'a>(
    adapters: &[&'a LoraAdapter],
    name: &str,
    opts: &CombineOptions,
) -> Result<Vec<Part<'a>>> {
    let parts: Vec<Part<'a>> = adapters
        .iter()
        .enumerate()
        .filter_map(|(index, a)| {
            a.modules.get(name).map(|module| Part {
                index,
                weight: opts.weights[index],
                module,
            })
        })
        .collect();
    let shape = (parts[0].module.d_in(), parts[0].module.d_out());
    if let Some(p) = parts
        .iter()
        .find(|p| (p.module.d_in(), p.module.d_out()) != shape)
    {
        return Err(LoraError::InvalidCombine(format!(
            "module {name}: adapter {} has (d_in, d_out) = ({}, {}), adapter {} has {shape:?}",
            p.index,
            p.module.d_in(),
            p.module.d_out(),
            parts[0].index
        )));
    }
    Ok(parts)
}

pub(crate) fn validate_request(adapters: &[&LoraAdapter], opts: &CombineOptions) -> Result<()> {
    if adapters.is_empty() {
        return Err(LoraError::InvalidCombine("no adapters given".into()));
    }
    if opts.weights.len() != adapters.len() {
        return Err(LoraError::InvalidCombine(format!(
            "{} adapters but {} weights; give one weight per adapter",
            adapters.len(),
            opts.weights.len()
        )));
    }
    if opts.weights.iter().any(|w| !w.is_finite()) || !opts.lambda.is_finite() {
        return Err(LoraError::InvalidCombine(
            "weights and lambda must be finite".into(),
        ));
    }
    if opts.rank == Some(0) {
        return Err(LoraError::InvalidCombine(
            "rank 0 requested; the output rank must be at least 1".into(),
        ));
    }
    if opts.method == CombineMethod::Cat && opts.rank.is_some() {
        return Err(LoraError::InvalidCombine(
            "cat is exact and its rank is the sum of the input ranks; use linear or svd with a rank".into(),
        ));
    }
    if opts.method.is_pruning() && !(opts.density > 0.0 && opts.density <= 1.0) {
        return Err(LoraError::InvalidCombine(format!(
            "density {} is outside (0, 1]; it is the fraction of ΔW entries kept",
            opts.density
        )));
    }
    Ok(())
}

/// Combines one module; returns the module (None when every weight is zero) and the energy kept.
fn combine_module(
    name: &str,
    parts: &[Part<'_>],
    opts: &CombineOptions,
) -> Result<(Option<LoraModule>, f64)> {
    let max_rank = parts.iter().map(|p| p.module.rank()).max().unwrap_or(1);
    match opts.method {
        CombineMethod::Cat
        | CombineMethod::Linear
        | CombineMethod::TaskArithmetic
        | CombineMethod::Svd => {
            let rank = match opts.method {
                CombineMethod::Svd => Some(opts.rank.unwrap_or(max_rank)),
                _ => opts.rank,
            };
            // An all-zero contribution adapts nothing: drop the module, as the SVD path does for a
            // zero update, instead of writing zero factors.
            if opts.lambda == 0.0
                || parts
                    .iter()
                    .all(|p| p.weight == 0.0 || p.module.scale == 0.0)
            {
                tracing::debug!(module = name, "every weight is zero; module dropped");
                return Ok((None, 1.0));
            }
            if parts.len() == 1
                && parts[0].weight == 1.0
                && opts.lambda == 1.0
                && rank.is_none_or(|k| k >= max_rank)
            {
                return Ok((Some(parts[0].module.clone()), 1.0));
            }
            let (a_cat, b_cat) = concat_parts(parts, opts.lambda);
            match rank {
                None => {
                    let r = a_cat.nrows();
                    Ok((Some(LoraModule::new(a_cat, b_cat, r as f64, 1.0)?), 1.0))
                }
                Some(k) => {
                    let full = linalg::svd_of_product(to_f64(&b_cat).view(), to_f64(&a_cat).view());
                    let total: f64 = full.s.iter().map(|x| x * x).sum();
                    let t = full.truncate(k);
                    let kept: f64 = t.s.iter().map(|x| x * x).sum();
                    Ok((factors_from_svd(name, &t)?, energy_ratio(kept, total)))
                }
            }
        }
        _ => {
            let delta = pruned_delta(name, parts, opts);
            let total: f64 = delta.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            let k = opts.rank.unwrap_or(max_rank);
            let t = linalg::truncated_svd_f32(delta.view(), k);
            let kept: f64 = t.s.iter().map(|x| x * x).sum();
            Ok((factors_from_svd(name, &t)?, energy_ratio(kept, total)))
        }
    }
}

fn energy_ratio(kept: f64, total: f64) -> f64 {
    if total > 0.0 {
        (kept / total).min(1.0)
    } else {
        1.0
    }
}

/// `A = [λ w_i s_i A_i]` stacked by rows, `B = [B_i]` stacked by columns: `B · A = λ Σ w_i ΔW_i`.
///
/// # Shapes
/// returns `A: [Σ r_i, d_in]`, `B: [d_out, Σ r_i]`.
fn concat_parts(parts: &[Part<'_>], lambda: f32) -> (Array2<f32>, Array2<f32>) {
    let a_scaled: Vec<Array2<f32>> = parts
        .iter()
        .map(|p| &p.module.a * (lambda * p.weight * p.module.scale))
        .collect();
    let a_views: Vec<_> = a_scaled.iter().map(|a| a.view()).collect();
    let b_views: Vec<_> = parts.iter().map(|p| p.module.b.view()).collect();
    let a = concatenate(Axis(0), &a_views).expect("same d_in checked");
    let b = concatenate(Axis(1), &b_views).expect("same d_out checked");
    (a, b)
}

/// Balanced f32 factors of a (truncated) SVD, dropping exactly-zero singular values; None if all are zero.
fn factors_from_svd(name: &str, t: &linalg::Svd) -> Result<Option<LoraModule>> {
    let k = t.s.iter().filter(|&&x| x > 0.0).count();
    if k == 0 {
        tracing::debug!(module = name, "combined update is zero; module dropped");
        return Ok(None);
    }
    let t = t.clone().truncate(k);
    let (b, a) = t.balanced_factors();
    Ok(Some(LoraModule::new(
        to_f32(&a),
        to_f32(&b),
        k as f64,
        1.0,
    )?))
}

/// Keeps the `round_down(density · n)` largest-magnitude entries of `m` (PEFT's magnitude pruning;
/// among equal magnitudes at the threshold, the first ones in row-major order are kept).
fn magnitude_prune(m: &mut Array2<f32>, density: f32) {
    if density >= 1.0 {
        return;
    }
    let n = m.len();
    let k = (f64::from(density) * n as f64) as usize;
    if k == 0 {
        m.fill(0.0);
        return;
    }
    let thr = kth_largest_magnitude(m.as_slice().expect("standard layout"), k);
    let above = m.iter().filter(|x| x.abs() > thr).count();
    let equal = m.iter().filter(|x| x.abs() == thr).count();
    let ties_left = k - above;
    if ties_left == equal {
        // the common case: keep everything at or above the threshold (branch-free pass)
        m.mapv_inplace(|x| if x.abs() >= thr { x } else { 0.0 });
        return;
    }
    let mut ties_left = ties_left;
    m.mapv_inplace(|x| {
        let a = x.abs();
        if a > thr {
            x
        } else if a == thr && ties_left > 0 {
            ties_left -= 1;
            x
        } else {
            0.0
        }
    });
}

/// The `k`-th largest `|x|` (1-based), by a radix pass on the top 16 bits of the float bit patterns
/// (non-negative floats order like their bits) and a selection inside the one bucket that holds it.
fn kth_largest_magnitude(xs: &[f32], k: usize) -> f32 {
    debug_assert!(k >= 1 && k <= xs.len());
    let mut hist = vec![0usize; 1 << 16];
    for x in xs {
        hist[(x.abs().to_bits() >> 16) as usize] += 1;
    }
    let mut seen = 0usize;
    let mut bucket = 0usize;
    for b in (0..hist.len()).rev() {
        if seen + hist[b] >= k {
            bucket = b;
            break;
        }
        seen += hist[b];
    }
    let need = k - seen; // rank inside the bucket, 1-based, from the top
    let mut cand: Vec<u32> = xs
        .iter()
        .map(|x| x.abs().to_bits())
        .filter(|b| (*b >> 16) as usize == bucket)
        .collect();
    let len = cand.len();
    let (_, v, _) = cand.select_nth_unstable(len - need);
    f32::from_bits(*v)
}

/// Drops each entry with probability `1 - density` and rescales the kept ones by `1 / density`.
fn dare_drop(m: &mut Array2<f32>, density: f32, rng: &mut StdRng) {
    if density >= 1.0 {
        return;
    }
    let inv = 1.0 / density;
    m.mapv_inplace(|x| {
        if rng.random::<f32>() < density {
            x * inv
        } else {
            0.0
        }
    });
}

/// The combined dense ΔW of one module for the pruning methods.
///
/// # Shapes
/// returns `[d_out, d_in]`.
fn pruned_delta(name: &str, parts: &[Part<'_>], opts: &CombineOptions) -> Array2<f32> {
    let tasks: Vec<Array2<f32>> = parts
        .iter()
        .map(|p| {
            let mut d = p.module.delta();
            match opts.method {
                CombineMethod::Ties | CombineMethod::MagnitudePrune => {
                    magnitude_prune(&mut d, opts.density)
                }
                CombineMethod::Dare | CombineMethod::DareTies => {
                    let seed = opts.seed
                        ^ fnv1a(name)
                        ^ (p.index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    dare_drop(&mut d, opts.density, &mut StdRng::seed_from_u64(seed));
                }
                _ => unreachable!("pruned_delta is only called for pruning methods"),
            }
            d
        })
        .collect();
    let shape = tasks[0].raw_dim();
    let mut out = Array2::<f32>::zeros(shape);
    let elect = matches!(opts.method, CombineMethod::Ties | CombineMethod::DareTies);
    if !elect {
        for (t, p) in tasks.iter().zip(parts) {
            out.scaled_add(p.weight * opts.lambda, t);
        }
        return out;
    }
    // TIES: elect a sign per entry from the unweighted pruned values, then average the weighted values
    // whose sign agrees (entries that are zero never agree). Loops run per task over contiguous memory.
    let len = out.len();
    let mut votes = vec![0.0f32; len];
    for t in &tasks {
        let ts = t.as_slice().expect("standard layout");
        match opts.majority_sign {
            MajoritySign::Total => votes.iter_mut().zip(ts).for_each(|(v, x)| *v += x),
            MajoritySign::Frequency => votes.iter_mut().zip(ts).for_each(|(v, x)| *v += sign(*x)),
        }
    }
    // majority sign: +1 where votes >= 0; branch-free accumulation so the loops vectorise
    let mut acc = vec![0.0f32; len];
    let mut count = vec![0.0f32; len];
    for (t, p) in tasks.iter().zip(parts) {
        let ts = t.as_slice().expect("standard layout");
        let w = p.weight;
        for (((a, c), &x), &v) in acc.iter_mut().zip(count.iter_mut()).zip(ts).zip(&votes) {
            let agrees = if v >= 0.0 { x > 0.0 } else { x < 0.0 };
            let f = f32::from(u8::from(agrees));
            *a += f * w * x;
            *c += f;
        }
    }
    let out_s = out.as_slice_mut().expect("standard layout");
    for ((o, a), c) in out_s.iter_mut().zip(&acc).zip(&count) {
        *o = opts.lambda * a / c.max(1.0);
    }
    out
}

fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdapterConfig;
    use proptest::prelude::*;
    use rand::Rng;

    fn module(r: usize, d_in: usize, d_out: usize, scale: f32, seed: u64) -> LoraModule {
        let mut rng = StdRng::seed_from_u64(seed);
        LoraModule::new(
            Array2::from_shape_fn((r, d_in), |_| rng.random::<f32>() - 0.5),
            Array2::from_shape_fn((d_out, r), |_| rng.random::<f32>() - 0.5),
            f64::from(scale) * r as f64,
            scale,
        )
        .unwrap()
    }

    fn adapter(specs: &[(&str, usize, f32)], seed: u64) -> LoraAdapter {
        let modules = specs
            .iter()
            .enumerate()
            .map(|(i, (n, r, s))| (n.to_string(), module(*r, 24, 16, *s, seed * 100 + i as u64)))
            .collect();
        LoraAdapter {
            config: AdapterConfig::default(),
            modules,
        }
        .with_describing_config()
    }

    fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn weighted_delta(ads: &[&LoraAdapter], w: &[f32], name: &str) -> Array2<f32> {
        let mut d = Array2::<f32>::zeros((16, 24));
        for (a, &wi) in ads.iter().zip(w) {
            if let Some(m) = a.modules.get(name) {
                d.scaled_add(wi, &m.delta());
            }
        }
        d
    }

    #[test]
    fn single_adapter_weight_one_is_identity() {
        let a = adapter(&[("m.q", 4, 2.0), ("m.v", 2, 0.5)], 1);
        for method in [
            CombineMethod::Linear,
            CombineMethod::Cat,
            CombineMethod::Svd,
            CombineMethod::TaskArithmetic,
        ] {
            let (out, _) = combine(&[&a], &CombineOptions::new(method, vec![1.0])).unwrap();
            assert_eq!(out, a, "{method}");
        }
    }

    #[test]
    fn linear_is_the_exact_weighted_delta_sum_with_negative_weights() {
        let a = adapter(&[("m.q", 4, 2.0), ("m.v", 2, 0.5)], 1);
        let b = adapter(&[("m.q", 3, 1.0), ("m.o", 5, 4.0)], 2);
        let w = [0.7f32, -1.3];
        let (out, rep) = combine(
            &[&a, &b],
            &CombineOptions::new(CombineMethod::Linear, w.to_vec()),
        )
        .unwrap();
        assert_eq!(out.modules.len(), 3);
        assert_eq!(out.modules["m.q"].rank(), 7);
        assert_eq!(rep.min_energy_kept, 1.0);
        for name in ["m.q", "m.v", "m.o"] {
            let want = weighted_delta(&[&a, &b], &w, name);
            assert!(max_diff(&out.modules[name].delta(), &want) < 1e-5, "{name}");
        }
        // Summing A's and B's separately (PEFT linear) is not the weighted delta sum.
        let (qa, qb) = (&a.modules["m.q"], &b.modules["m.q"]);
        let r = qa.rank().min(qb.rank());
        let sum_a = &qa.a.slice(ndarray::s![..r, ..]) + &qb.a.slice(ndarray::s![..r, ..]);
        let sum_b = &qa.b.slice(ndarray::s![.., ..r]) + &qb.b.slice(ndarray::s![.., ..r]);
        let naive = sum_b.dot(&sum_a);
        assert!(max_diff(&naive, &weighted_delta(&[&a, &b], &[1.0, 1.0], "m.q")) > 1e-2);
    }

    #[test]
    fn svd_truncation_is_optimal_and_full_rank_is_exact() {
        let a = adapter(&[("m.q", 4, 2.0)], 1);
        let b = adapter(&[("m.q", 4, 1.0)], 2);
        let w = vec![1.0, 0.5];
        let mut o = CombineOptions::new(CombineMethod::Svd, w.clone());
        o.rank = Some(8);
        let (full, rep) = combine(&[&a, &b], &o).unwrap();
        assert!(
            max_diff(
                &full.modules["m.q"].delta(),
                &weighted_delta(&[&a, &b], &w, "m.q")
            ) < 1e-5
        );
        assert!((rep.min_energy_kept - 1.0).abs() < 1e-9);
        o.rank = None; // default: largest input rank (4)
        let (t, rep) = combine(&[&a, &b], &o).unwrap();
        assert_eq!(t.modules["m.q"].rank(), 4);
        assert!(rep.min_energy_kept < 1.0);
        let dense = weighted_delta(&[&a, &b], &w, "m.q").mapv(f64::from);
        let exact = linalg::svd(dense.view())
            .truncate(4)
            .reconstruct()
            .mapv(|x| x as f32);
        assert!(max_diff(&t.modules["m.q"].delta(), &exact) < 1e-5);
    }

    #[test]
    fn cat_matches_peft_layout() {
        let a = adapter(&[("m.q", 4, 2.0)], 1);
        let b = adapter(&[("m.q", 2, 0.5)], 2);
        let (out, _) = combine(
            &[&a, &b],
            &CombineOptions::new(CombineMethod::Cat, vec![0.3, 0.9]),
        )
        .unwrap();
        let m = &out.modules["m.q"];
        assert_eq!((m.rank(), m.scale), (6, 1.0));
        let want_a0 = &a.modules["m.q"].a * (0.3 * 2.0);
        assert!(max_diff(&m.a.slice(ndarray::s![..4, ..]).to_owned(), &want_a0) < 1e-7);
        assert_eq!(m.b.slice(ndarray::s![.., 4..]), b.modules["m.q"].b);
    }

    #[test]
    fn ties_hand_checked() {
        let mk = |b: [f32; 2], a: [f32; 2]| {
            LoraModule::new(
                Array2::from_shape_vec((1, 2), a.to_vec()).unwrap(),
                Array2::from_shape_vec((2, 1), b.to_vec()).unwrap(),
                1.0,
                1.0,
            )
            .unwrap()
        };
        // rank-1 deltas: d1 = [1,2]ᵀ[1,-1] = [[1,-1],[2,-2]], d2 = [1,-1]ᵀ[3,1] = [[3,1],[-3,-1]]
        let a1 = LoraAdapter {
            config: AdapterConfig::default(),
            modules: [("m".to_string(), mk([1.0, 2.0], [1.0, -1.0]))].into(),
        }
        .with_describing_config();
        let a2 = LoraAdapter {
            config: AdapterConfig::default(),
            modules: [("m".to_string(), mk([1.0, -1.0], [3.0, 1.0]))].into(),
        }
        .with_describing_config();
        let mut o = CombineOptions::new(CombineMethod::Ties, vec![1.0, 1.0]);
        o.density = 1.0;
        o.rank = Some(2);
        let (out, _) = combine(&[&a1, &a2], &o).unwrap();
        // votes (total): [4, 0, -1, -3] -> signs [+, +, -, -];
        // agreeing: e0 {1,3}->2; e1 {1}->1 (since -1 disagrees with +); e2 {-3}->-3; e3 {-2,-1}->-1.5
        let want = Array2::from_shape_vec((2, 2), vec![2.0, 1.0, -3.0, -1.5]).unwrap();
        assert!(
            max_diff(&out.modules["m"].delta(), &want) < 1e-5,
            "{:?}",
            out.modules["m"].delta()
        );
        // density 0.5 keeps the 2 largest magnitudes of each: d1 -> [0,0,2,-2], d2 -> [3,0,-3,0]
        o.density = 0.5;
        let (out, _) = combine(&[&a1, &a2], &o).unwrap();
        // votes [3, 0, -1, -2] -> [+, +, -, -]; e0 {3}; e1 none -> 0; e2 {-3}; e3 {-2}
        let want = Array2::from_shape_vec((2, 2), vec![3.0, 0.0, -3.0, -2.0]).unwrap();
        assert!(
            max_diff(&out.modules["m"].delta(), &want) < 1e-5,
            "{:?}",
            out.modules["m"].delta()
        );
    }

    #[test]
    fn dare_is_seeded_and_unbiased_at_density_one() {
        let a = adapter(&[("m.q", 4, 2.0)], 1);
        let b = adapter(&[("m.q", 4, 1.0)], 2);
        let mut o = CombineOptions::new(CombineMethod::Dare, vec![0.5, 0.5]);
        o.rank = Some(8);
        o.density = 0.3;
        o.seed = 7;
        let (x, _) = combine(&[&a, &b], &o).unwrap();
        let (y, _) = combine(&[&a, &b], &o).unwrap();
        assert_eq!(x, y);
        o.seed = 8;
        let (z, _) = combine(&[&a, &b], &o).unwrap();
        assert_ne!(x, z);
        o.density = 1.0;
        let (full, _) = combine(&[&a, &b], &o).unwrap();
        assert!(
            max_diff(
                &full.modules["m.q"].delta(),
                &weighted_delta(&[&a, &b], &[0.5, 0.5], "m.q")
            ) < 1e-5
        );
    }

    #[test]
    fn a_combination_that_adapts_nothing_is_refused() {
        let a = adapter(&[("m.q", 4, 2.0), ("m.v", 2, 1.0)], 1);
        let b = adapter(&[("m.q", 2, 0.5)], 2);
        let empty = |r: Result<(LoraAdapter, CombineReport)>| match r {
            Err(e @ LoraError::EmptyCombination { .. }) => e.to_string(),
            other => panic!("expected EmptyCombination, got {other:?}"),
        };
        for m in CombineMethod::NAMES {
            let method: CombineMethod = m.parse().unwrap();
            let msg = empty(combine(
                &[&a, &b],
                &CombineOptions::new(method, vec![0.0, 0.0]),
            ));
            assert!(msg.contains("every weight is 0"), "{m}: {msg}");
            let mut o = CombineOptions::new(method, vec![0.6, 0.4]);
            o.lambda = 0.0;
            assert!(empty(combine(&[&a, &b], &o)).contains("lambda"), "{m}");
        }
        // density so small that magnitude pruning keeps round_down(density · n) = 0 entries
        for method in [CombineMethod::Ties, CombineMethod::MagnitudePrune] {
            let mut o = CombineOptions::new(method, vec![0.6, 0.4]);
            o.density = 1e-30;
            assert!(empty(combine(&[&a, &b], &o)).contains("density"));
        }
        // a zero weight drops only what it alone contributes: m.v (only in a) goes, m.q stays exact
        let (out, report) = combine(
            &[&a, &b],
            &CombineOptions::new(CombineMethod::Linear, vec![0.0, 1.0]),
        )
        .unwrap();
        assert_eq!(out.modules.keys().collect::<Vec<_>>(), vec!["m.q"]);
        assert_eq!(report.modules, 1);
        assert!(max_diff(&out.modules["m.q"].delta(), &b.modules["m.q"].delta()) < 1e-6);
    }

    #[test]
    fn bad_requests_are_refused() {
        let a = adapter(&[("m.q", 4, 2.0)], 1);
        let b = LoraAdapter {
            config: AdapterConfig::default(),
            modules: [(
                "m.q".to_string(),
                LoraModule::new(Array2::zeros((2, 5)), Array2::zeros((16, 2)), 2.0, 1.0).unwrap(),
            )]
            .into(),
        };
        let err = |r: Result<_>| matches!(r, Err(LoraError::InvalidCombine(_)));
        assert!(err(combine(
            &[],
            &CombineOptions::new(CombineMethod::Linear, vec![])
        )));
        assert!(err(combine(
            &[&a],
            &CombineOptions::new(CombineMethod::Linear, vec![1.0, 2.0])
        )));
        assert!(err(combine(
            &[&a, &b],
            &CombineOptions::new(CombineMethod::Linear, vec![1.0, 2.0])
        )));
        let mut o = CombineOptions::new(CombineMethod::Ties, vec![1.0]);
        o.density = 0.0;
        assert!(err(combine(&[&a], &o)));
        let mut o = CombineOptions::new(CombineMethod::Cat, vec![1.0]);
        o.rank = Some(2);
        assert!(err(combine(&[&a], &o)));
        let mut o = CombineOptions::new(CombineMethod::Svd, vec![1.0]);
        o.rank = Some(0);
        assert!(err(combine(&[&a], &o)));
        let unknown = "nope".parse::<CombineMethod>().unwrap_err().to_string();
        assert!(
            unknown.contains("\"nope\"") && unknown.contains("dare_ties, magnitude_prune"),
            "{unknown}"
        );
        assert_eq!(
            "TIES".parse::<CombineMethod>().unwrap(),
            CombineMethod::Ties
        );
        for m in CombineMethod::NAMES {
            assert_eq!(m.parse::<CombineMethod>().unwrap().to_string(), *m);
        }
        assert_eq!(
            "dare_ties".parse::<CombineMethod>().unwrap(),
            CombineMethod::DareTies
        );
    }

    #[test]
    fn dense_deltas_for_merging() {
        let a = adapter(&[("m.q", 4, 2.0), ("m.v", 2, 0.5)], 1);
        let b = adapter(&[("m.q", 3, 1.0)], 2);
        let w = vec![0.6f32, -0.3];
        let got = std::sync::Mutex::new(BTreeMap::new());
        let collect = |n: &str, d: Array2<f32>| {
            got.lock().unwrap().insert(n.to_string(), d);
            Ok(())
        };
        for_each_combined_delta(
            &[&a, &b],
            &CombineOptions::new(CombineMethod::Linear, w.clone()),
            collect,
        )
        .unwrap();
        for name in ["m.q", "m.v"] {
            let want = weighted_delta(&[&a, &b], &w, name);
            assert!(max_diff(&got.lock().unwrap()[name], &want) < 1e-6, "{name}");
        }
        // TIES with a rank: the same update as the re-factorised adapter; without: the untruncated merge
        let mut o = CombineOptions::new(CombineMethod::Ties, w.clone());
        o.rank = Some(2);
        for_each_combined_delta(&[&a, &b], &o, collect).unwrap();
        let (ad, _) = combine(&[&a, &b], &o).unwrap();
        assert!(max_diff(&got.lock().unwrap()["m.q"], &ad.modules["m.q"].delta()) < 1e-6);
        o.rank = None;
        for_each_combined_delta(&[&a, &b], &o, collect).unwrap();
        let parts = module_parts(&[&a, &b], "m.q", &o).unwrap();
        assert_eq!(got.lock().unwrap()["m.q"], pruned_delta("m.q", &parts, &o));
        let truncated = ad.modules["m.q"].delta();
        assert!(max_diff(&got.lock().unwrap()["m.q"], &truncated) > 1e-4);
    }

    proptest! {
        #[test]
        fn kth_largest_matches_sorting(xs in prop::collection::vec(-1e3f32..1e3, 1..400), frac in 0.0f64..1.0) {
            let k = 1 + ((xs.len() - 1) as f64 * frac) as usize;
            let mut sorted: Vec<f32> = xs.iter().map(|x| x.abs()).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            prop_assert_eq!(kth_largest_magnitude(&xs, k), sorted[k - 1]);
        }
    }

    #[test]
    fn magnitude_prune_keeps_exactly_k() {
        let mut m = Array2::from_shape_vec((2, 3), vec![1.0, -5.0, 2.0, 2.0, 0.5, -3.0]).unwrap();
        magnitude_prune(&mut m, 0.5);
        assert_eq!(m.iter().filter(|x| **x != 0.0).count(), 3);
        assert_eq!(m[[0, 1]], -5.0);
        assert_eq!(m[[1, 2]], -3.0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn linear_is_linear(w1 in -2.0f32..2.0, w2 in -2.0f32..2.0, s1 in 1u64..1000, s2 in 1u64..1000) {
            let a = adapter(&[("m.q", 3, 1.5), ("m.v", 2, 0.5)], s1);
            let b = adapter(&[("m.q", 5, 0.25)], s2);
            let (out, _) = combine(&[&a, &b], &CombineOptions::new(CombineMethod::Linear, vec![w1, w2])).unwrap();
            for name in ["m.q", "m.v"] {
                let want = weighted_delta(&[&a, &b], &[w1, w2], name);
                prop_assert!(max_diff(&out.modules[name].delta(), &want) < 1e-5);
            }
            // cat is exactly the same update
            let (cat, _) = combine(&[&a, &b], &CombineOptions::new(CombineMethod::Cat, vec![w1, w2])).unwrap();
            prop_assert!(max_diff(&cat.modules["m.q"].delta(), &out.modules["m.q"].delta()) < 1e-6);
        }

        #[test]
        fn svd_combine_is_eckart_young_optimal(k in 1usize..6, s1 in 1u64..1000, s2 in 1u64..1000) {
            let a = adapter(&[("m.q", 4, 1.0)], s1);
            let b = adapter(&[("m.q", 3, 2.0)], s2);
            let mut o = CombineOptions::new(CombineMethod::Svd, vec![1.0, -0.5]);
            o.rank = Some(k);
            let (out, rep) = combine(&[&a, &b], &o).unwrap();
            let dense = weighted_delta(&[&a, &b], &[1.0, -0.5], "m.q").mapv(f64::from);
            let s = linalg::svd(dense.view()).s;
            let total: f64 = s.iter().map(|x| x * x).sum();
            let tail: f64 = s.iter().skip(k).map(|x| x * x).sum();
            let err = linalg::frobenius((&dense - &out.modules["m.q"].delta().mapv(f64::from)).view());
            prop_assert!((err - tail.sqrt()).abs() < 1e-4 * (1.0 + tail.sqrt()));
            prop_assert!((rep.min_energy_kept - (1.0 - tail / total)).abs() < 1e-6);
        }
    }
}
