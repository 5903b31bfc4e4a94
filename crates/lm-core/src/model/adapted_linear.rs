//! [`AdaptedLinear`]: the one seam through which LoRA experts enter a model.
//!
//! A frozen base projection `y = x W + b` plus an optional [`ExpertSet`] of `E` low-rank
//! experts stored side by side, `A = [A_1 | … | A_E]` (`[d_in, E·r]`) and
//! `B = [B_1; …; B_E]` (`[E·r, d_out]`), each expert with its own scale `s_e` (α/r, or α/√r
//! for rsLoRA). How much of each expert a token receives is decided by an [`ExpertMix`]:
//!
//! ```text
//! y = x W + b + Σ_e c_e(token) · s_e · (x A_e) B_e
//! ```
//!
//! - [`ExpertMix::Base`]: no expert (c = 0).
//! - [`ExpertMix::Static`]: fixed coefficients for every token (plain LoRA: one expert, c = 1;
//!   several adapters at once with weights).
//! - [`ExpertMix::PerRow`]: batch row `i` uses expert `idx[i]` only: one batched forward scores
//!   rows that each use a different adapter of a bank while the base matmul is shared.
//! - [`ExpertMix::Routed`]: a learned [`Router`] (a linear `d_in → E` in this layer) gives
//!   softmax gates per token, optionally keeping the top-k (mixture of LoRA experts).
//!
//! Experts of different ranks are zero-padded to a common `r`, which is exact.
//!
//! # Routed forward
//! Router logits and their softmax are computed in f32 (the runtime's float type). With
//! `k < E` only the routed tokens go through each expert: the tokens of expert `e` are gathered
//! (`select`), `x_e A_e B_e` is computed on those rows only, scaled by the renormalised gate and
//! `s_e`, and added back into the base output (`select_assign` with `Add`). With `k = E` (or
//! `None`) every expert sees every token (dense soft routing, one fused matmul pair). Both are
//! differentiable: the router learns through the gates. A [`RouteRecorder`] on a router records
//! what it decides (statistics for reports, logits for auxiliary losses); see [`routing`].
//!
//! A mix is checked against a layer by [`ExpertSet::check_mix`]; `forward` assumes a checked mix
//! (debug builds assert it).

pub mod routing;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};

pub use routing::{RouteLog, RouteRecorder, RouteStats, Router};

use crate::quant::QuantLinear;

/// How experts are mixed for one forward pass (shared by every adapted layer).
#[derive(Debug, Clone, Default)]
pub enum ExpertMix {
    /// Base weights only.
    #[default]
    Base,
    /// The same coefficient per expert for every token: `coefficients.len() == E`.
    Static(Vec<f32>),
    /// One expert per batch row (`None` = base only for that row): `experts.len() == batch`.
    PerRow(Vec<Option<usize>>),
    /// Gates from each layer's learned router; `top_k = None` keeps all experts.
    Routed {
        /// Keep only the k largest gates per token (renormalised), or all when `None`.
        top_k: Option<usize>,
    },
}

/// `E` low-rank experts of common rank `r` attached to one linear layer.
#[derive(Module, Debug)]
pub struct ExpertSet {
    /// Down projections side by side: `[d_in, E·r]`.
    pub a: Param<Tensor<2>>,
    /// Up projections stacked: `[E·r, d_out]`.
    pub b: Param<Tensor<2>>,
    /// Optional router `d_in → E` for [`ExpertMix::Routed`] (`Router::from(linear)` wraps a
    /// plain linear).
    pub router: Option<Router>,
    /// Per-expert scale `s_e`.
    #[module(skip)]
    pub scales: Vec<f32>,
    /// Common (padded) rank `r`.
    #[module(skip)]
    pub rank: usize,
    /// Dropout on the experts' input (LoRA dropout). Active only on an autodiff device
    /// (training); inference ignores it.
    #[module(skip)]
    pub dropout: Option<LoraDropout>,
}

/// LoRA dropout with its own seed: the mask is drawn on the host from `seed`, so it is the same
/// on every backend and no other user of the device's random generator can change it (which
/// makes resumed training runs exact).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraDropout {
    /// Probability of zeroing an input element.
    pub p: f32,
    /// Seed of the mask for the next forward pass.
    pub seed: u64,
}

impl LoraDropout {
    /// Applies inverted dropout (`x · mask / (1 - p)`).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_in]` -> same
    pub fn apply(&self, x: Tensor<3>) -> Tensor<3> {
        if self.p <= 0.0 {
            return x;
        }
        let dims = x.dims();
        let keep = 1.0 - self.p;
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let mask: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| {
                if rng.random::<f32>() < keep {
                    1.0 / keep
                } else {
                    0.0
                }
            })
            .collect();
        x.clone() * Tensor::<3>::from_data(TensorData::new(mask, dims), &x.device())
    }
}

/// Top-k expert indices of flattened tokens, on the device and on the host (row-major
/// `[tokens, k]`).
type TopK = (Tensor<2, Int>, Vec<usize>);

/// Why an [`ExpertMix`] cannot run on an [`ExpertSet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    /// `ExpertMix::Routed` on a layer without a router.
    #[error(
        "ExpertMix::Routed needs a router in every adapted layer; this one has {experts} experts and none"
    )]
    MissingRouter {
        /// Experts of the layer.
        experts: usize,
    },
    /// The router's width is not the number of experts.
    #[error("the router has {found} outputs but the layer has {experts} experts")]
    RouterWidth {
        /// Router outputs.
        found: usize,
        /// Experts of the layer.
        experts: usize,
    },
    /// `top_k` outside `1..=E`.
    #[error(
        "top_k = {k} is outside 1..={experts} (the number of experts); use {experts} (or None) for dense routing"
    )]
    BadTopK {
        /// The k asked for.
        k: usize,
        /// Experts of the layer.
        experts: usize,
    },
    /// `ExpertMix::Static` with the wrong number of coefficients.
    #[error("ExpertMix::Static has {found} coefficients, expected one per expert ({experts})")]
    CoefficientCount {
        /// Coefficients given.
        found: usize,
        /// Experts of the layer.
        experts: usize,
    },
    /// `ExpertMix::PerRow` naming an expert the layer does not have.
    #[error("ExpertMix::PerRow names expert {index}, but the layer has {experts}")]
    ExpertIndex {
        /// The index.
        index: usize,
        /// Experts of the layer.
        experts: usize,
    },
}

impl ExpertSet {
    /// Number of experts `E`.
    pub fn num_experts(&self) -> usize {
        self.scales.len()
    }

    /// Checks that `mix` can run on this layer (router present and of width `E` for
    /// `Routed`, `top_k` in `1..=E`, one coefficient per expert, expert indices in range).
    /// `PerRow`'s length is the batch size and is checked by the caller that knows the batch.
    pub fn check_mix(&self, mix: &ExpertMix) -> Result<(), MixError> {
        let experts = self.num_experts();
        match mix {
            ExpertMix::Base => Ok(()),
            ExpertMix::Static(c) if c.len() != experts => Err(MixError::CoefficientCount {
                found: c.len(),
                experts,
            }),
            ExpertMix::Static(_) => Ok(()),
            ExpertMix::PerRow(rows) => match rows.iter().flatten().find(|&&i| i >= experts) {
                Some(&index) => Err(MixError::ExpertIndex { index, experts }),
                None => Ok(()),
            },
            ExpertMix::Routed { top_k } => {
                let router = self
                    .router
                    .as_ref()
                    .ok_or(MixError::MissingRouter { experts })?;
                if router.num_experts() != experts {
                    return Err(MixError::RouterWidth {
                        found: router.num_experts(),
                        experts,
                    });
                }
                match top_k {
                    Some(k) if *k == 0 || *k > experts => Err(MixError::BadTopK { k: *k, experts }),
                    _ => Ok(()),
                }
            }
        }
    }

    /// The number of experts kept per token for `top_k` (`E` for `None`; a checked mix never
    /// has 0 or more than `E`, release builds treat those as `E`).
    fn kept(&self, top_k: Option<usize>) -> usize {
        let e = self.num_experts();
        match top_k {
            Some(k) if k >= 1 && k <= e => k,
            _ => e,
        }
    }

    /// Routes flattened tokens: full softmax gates in f32, recorded if the router has a
    /// recorder. Returns the gates and, when the recorder collected statistics or
    /// `need_top` is set, the host top-k indices (row-major `[tokens, k]`).
    ///
    /// # Shapes
    /// - `x`: `[tokens, d_in]` -> gates `[tokens, E]`
    fn route(
        &self,
        router: &Router,
        x: Tensor<2>,
        k: usize,
        need_top: bool,
    ) -> (Tensor<2>, Option<TopK>) {
        let logits = router.logits(x);
        let gates = softmax(logits.clone(), 1);
        let wants_stats = router.recorder.as_ref().is_some_and(|r| r.wants_stats());
        let top = (need_top || wants_stats).then(|| {
            let (_, idx) = gates.clone().detach().topk_with_indices(k, 1);
            let host: Vec<usize> = idx.to_data().iter::<i64>().map(|i| i as usize).collect();
            (idx, host)
        });
        if let Some(rec) = &router.recorder {
            let host_gates = wants_stats.then(|| {
                gates
                    .clone()
                    .detach()
                    .into_data()
                    .iter::<f32>()
                    .collect::<Vec<f32>>()
            });
            let stats = match (&host_gates, &top) {
                (Some(g), Some((_, t))) => Some((g.as_slice(), t.as_slice(), k)),
                _ => None,
            };
            rec.record(&logits, stats);
        }
        (gates, top)
    }

    /// The routed top-k delta added to `y`, computing each expert on its routed tokens only.
    ///
    /// # Shapes
    /// - `x_router`, `x_expert`: `[tokens, d_in]`, `y`: `[tokens, d_out]` -> `[tokens, d_out]`
    fn add_routed_sparse(
        &self,
        router: &Router,
        x_router: Tensor<2>,
        x_expert: Tensor<2>,
        y: Tensor<2>,
        k: usize,
    ) -> Tensor<2> {
        let [n, _] = x_router.dims();
        let (e, r) = (self.num_experts(), self.rank);
        let device = x_router.device();
        let (gates, top) = self.route(router, x_router, k, true);
        let (idx, host) = top.expect("route returns indices when asked");
        // Renormalised kept gates, differentiable through `gather`.
        let kept = gates.gather(1, idx);
        let weights = (kept.clone() / kept.sum_dim(1)).reshape([n * k]);
        let mut tokens: Vec<Vec<i64>> = vec![Vec::new(); e];
        let mut slots: Vec<Vec<i64>> = vec![Vec::new(); e];
        for (slot, &expert) in host.iter().enumerate() {
            tokens[expert].push((slot / k) as i64);
            slots[expert].push(slot as i64);
        }
        let (a, b) = (self.a.val(), self.b.val());
        let mut y = y;
        for expert in 0..e {
            let m = tokens[expert].len();
            if m == 0 || self.scales[expert] == 0.0 {
                continue;
            }
            let ids = |v: &mut Vec<i64>| {
                Tensor::<1, Int>::from_data(TensorData::new(std::mem::take(v), [m]), &device)
            };
            let rows = ids(&mut tokens[expert]);
            let w = weights.clone().select(0, ids(&mut slots[expert])) * self.scales[expert];
            let xa = x_expert
                .clone()
                .select(0, rows.clone())
                .matmul(a.clone().narrow(1, expert * r, r)); // [m, r]
            let delta = (xa * w.unsqueeze_dim::<2>(1)).matmul(b.clone().narrow(0, expert * r, r));
            y = y.select_assign(0, rows, delta, IndexingUpdateOp::Add);
        }
        y
    }
}

/// A linear layer with a frozen base weight and optional LoRA experts.
#[derive(Module, Debug)]
pub struct AdaptedLinear {
    /// Base weight `[d_in, d_out]` (burn layout) and optional bias `[d_out]`.
    pub base: Linear,
    /// Low-rank experts, if any are attached.
    pub experts: Option<ExpertSet>,
    /// A quantised copy of `base` that decode steps multiply by instead
    /// ([`crate::quant`]); `None` unless the model was given one. Whoever changes `base`
    /// must drop it.
    #[module(skip)]
    pub quant: Option<QuantLinear>,
}

impl AdaptedLinear {
    /// Wraps a base linear with no experts.
    pub fn new(base: Linear) -> Self {
        Self {
            base,
            experts: None,
            quant: None,
        }
    }

    /// Input width `d_in`.
    pub fn d_in(&self) -> usize {
        self.base.weight.shape().dims::<2>()[0]
    }

    /// Output width `d_out`.
    pub fn d_out(&self) -> usize {
        self.base.weight.shape().dims::<2>()[1]
    }

    /// Applies the layer.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_in]`
    /// - returns `[batch, seq, d_out]`
    pub fn forward(&self, x: Tensor<3>, mix: &ExpertMix) -> Tensor<3> {
        let y = match self.quant.as_ref().and_then(|q| q.forward(&x)) {
            Some(y) => y,
            None => crate::kernels::frozen_linear::frozen_linear(x.clone(), &self.base),
        };
        let Some(experts) = &self.experts else {
            return y;
        };
        if matches!(mix, ExpertMix::Base) {
            return y;
        }
        // PEFT's `autocast_adapter_dtype`: adapters stay f32 under an f16/bf16 base; the input
        // goes up to f32, and the output (base plus delta, rounded once) back down.
        let dtype = y.dtype();
        let adapter = experts.a.val().dtype();
        if dtype != adapter {
            return self
                .add_experts(experts, x.cast(adapter), y.cast(adapter), mix)
                .cast(dtype);
        }
        self.add_experts(experts, x, y, mix)
    }

    /// `y` plus the experts' contribution for input `x`, both in the experts' dtype.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_in]`, `y`: `[batch, seq, d_out]` -> `[batch, seq, d_out]`
    fn add_experts(
        &self,
        experts: &ExpertSet,
        x: Tensor<3>,
        y: Tensor<3>,
        mix: &ExpertMix,
    ) -> Tensor<3> {
        debug_assert!(
            experts.check_mix(mix).is_ok(),
            "unchecked expert mix: {:?}",
            experts.check_mix(mix)
        );
        let [batch, seq, d_in] = x.dims();
        let e = experts.num_experts();
        let r = experts.rank;
        let device = x.device();
        let dropped = |x: Tensor<3>| match &experts.dropout {
            Some(d) if device.is_autodiff() => d.apply(x),
            _ => x,
        };
        // Per-token coefficient of each expert's r columns, already multiplied by s_e.
        let coef: Tensor<3> =
            match mix {
                ExpertMix::Base => return y,
                ExpertMix::Static(c) => {
                    assert_eq!(
                        c.len(),
                        e,
                        "ExpertMix::Static needs one coefficient per expert"
                    );
                    let cols: Vec<f32> = (0..e)
                        .flat_map(|i| std::iter::repeat_n(c[i] * experts.scales[i], r))
                        .collect();
                    Tensor::<1>::from_data(TensorData::new(cols, [e * r]), &device).reshape([
                        1,
                        1,
                        e * r,
                    ])
                }
                ExpertMix::PerRow(rows) => {
                    assert_eq!(
                        rows.len(),
                        batch,
                        "ExpertMix::PerRow needs one entry per batch row"
                    );
                    let mut cols = vec![0f32; batch * e * r];
                    for (row, expert) in rows.iter().enumerate() {
                        if let Some(i) = *expert {
                            assert!(i < e, "expert index {i} out of range (E = {e})");
                            let start = row * e * r + i * r;
                            cols[start..start + r].fill(experts.scales[i]);
                        }
                    }
                    Tensor::<1>::from_data(TensorData::new(cols, [batch * e * r]), &device)
                        .reshape([batch, 1, e * r])
                }
                ExpertMix::Routed { top_k } => {
                    // A checked mix always has a router; release builds leave the layer unadapted.
                    let Some(router) = &experts.router else {
                        return y;
                    };
                    let k = experts.kept(*top_k);
                    let n = batch * seq;
                    let x_router = x.clone().reshape([n, d_in]);
                    if k < e {
                        let d_out = y.dims()[2];
                        let x_expert = dropped(x).reshape([n, d_in]);
                        return experts
                            .add_routed_sparse(router, x_router, x_expert, y.reshape([n, d_out]), k)
                            .reshape([batch, seq, d_out]);
                    }
                    let (gates, _) = experts.route(router, x_router, k, false);
                    expand_gates(gates.reshape([batch, seq, e]), &experts.scales, r)
                }
            };
        let xa = dropped(x).matmul(experts.a.val().unsqueeze_dim(0)); // [b, s, E·r]
        y + (xa * coef).matmul(experts.b.val().unsqueeze_dim(0))
    }

    /// The routed forward computed the reference way: all `E` experts for every token, the
    /// non-top-k gates masked to zero and the kept ones renormalised. Same result as
    /// [`forward`](Self::forward) with `ExpertMix::Routed { top_k }`, at the cost of the dense
    /// path; kept to test and benchmark the sparse path against. Records nothing.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_in]` -> `[batch, seq, d_out]`
    ///
    /// # Panics
    /// When the layer has experts but no router.
    pub fn forward_masked_reference(&self, x: Tensor<3>, top_k: Option<usize>) -> Tensor<3> {
        let y = self.base.forward(x.clone());
        let Some(experts) = &self.experts else {
            return y;
        };
        let router = experts
            .router
            .as_ref()
            .expect("the masked reference needs a router");
        let e = experts.num_experts();
        let gates = softmax(router.logits(x.clone().flatten::<2>(0, 1)), 1).reshape([
            x.dims()[0],
            x.dims()[1],
            e,
        ]);
        let gates = match top_k {
            Some(k) if k < e => keep_top_k(gates, k),
            _ => gates,
        };
        let coef = expand_gates(gates, &experts.scales, experts.rank);
        let x = match &experts.dropout {
            Some(d) if x.device().is_autodiff() => d.apply(x),
            _ => x,
        };
        let xa = x.matmul(experts.a.val().unsqueeze_dim(0));
        y + (xa * coef).matmul(experts.b.val().unsqueeze_dim(0))
    }
}

/// Per-token gates times scales, repeated over each expert's `r` columns.
///
/// # Shapes
/// - `gates`: `[batch, seq, E]` -> `[batch, seq, E·r]`
fn expand_gates(gates: Tensor<3>, scales: &[f32], r: usize) -> Tensor<3> {
    let [batch, seq, e] = gates.dims();
    let device = gates.device();
    let scales =
        Tensor::<1>::from_data(TensorData::new(scales.to_vec(), [e]), &device).reshape([1, 1, e]);
    (gates * scales)
        .reshape([batch, seq, e, 1])
        .expand([batch, seq, e, r])
        .reshape([batch, seq, e * r])
}

/// Keeps the `k` largest gates per token and renormalises them to sum to one.
///
/// # Shapes
/// - `gates`: `[batch, seq, E]` -> `[batch, seq, E]`
fn keep_top_k(gates: Tensor<3>, k: usize) -> Tensor<3> {
    let [b, s, e] = gates.dims();
    let (_, idx): (Tensor<3>, Tensor<3, Int>) = gates.clone().topk_with_indices(k, 2);
    let ones = Tensor::<3>::ones([b, s, k], &gates.device());
    let keep =
        Tensor::<3>::zeros([b, s, e], &gates.device()).scatter(2, idx, ones, IndexingUpdateOp::Add);
    let kept = gates * keep;
    let total = kept.clone().sum_dim(2);
    kept / total
}

/// Builds a burn [`Linear`] from a PyTorch-layout weight `[d_out, d_in]` and optional bias.
///
/// # Shapes
/// - `weight`: `[d_out, d_in]` row-major values; stored transposed as `[d_in, d_out]`
pub fn linear_from_torch(
    weight: &[f32],
    d_out: usize,
    d_in: usize,
    bias: Option<Vec<f32>>,
    device: &Device,
) -> Linear {
    let transposed = transpose(weight, d_out, d_in);
    let w = Tensor::<2>::from_data(TensorData::new(transposed, [d_in, d_out]), device);
    Linear {
        weight: Param::from_tensor(w).set_require_grad(false),
        bias: bias.map(|b| {
            Param::from_tensor(Tensor::<1>::from_data(TensorData::new(b, [d_out]), device))
                .set_require_grad(false)
        }),
    }
}

/// Row-major transpose of a `[rows, cols]` matrix, blocked for cache friendliness.
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(m.len(), rows * cols);
    let mut out = vec![0f32; m.len()];
    const BLOCK: usize = 32;
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for c in c0..(c0 + BLOCK).min(cols) {
                    out[c * rows + r] = m[r * cols + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;

    fn device() -> Device {
        crate::device::device_from_name("cpu").unwrap()
    }

    fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// A layer with `e` experts of rank `r`, a router, and random everything; one expert has
    /// a zero scale (an expert absent from this module) when `e > 2`.
    fn routed_layer(seed: u64, e: usize, r: usize, abs: bool, dev: &Device) -> AdaptedLinear {
        let (d_in, d_out) = (6, 5);
        let mut rng = StdRng::seed_from_u64(seed);
        let w = rand_vec(&mut rng, d_out * d_in);
        let param = |v: Vec<f32>, shape: [usize; 2]| {
            Param::from_tensor(Tensor::<2>::from_data(TensorData::new(v, shape), dev))
        };
        let mut router = Router::from(linear_from_torch(
            &rand_vec(&mut rng, e * d_in),
            e,
            d_in,
            None,
            dev,
        ));
        router.linear.weight = router.linear.weight.clone().set_require_grad(true);
        router.abs_logits = abs;
        let mut scales: Vec<f32> = (0..e).map(|i| 0.5 + i as f32).collect();
        if e > 2 {
            scales[2] = 0.0;
        }
        let mut lin = AdaptedLinear::new(linear_from_torch(&w, d_out, d_in, None, dev));
        lin.experts = Some(ExpertSet {
            a: param(rand_vec(&mut rng, d_in * e * r), [d_in, e * r]),
            b: param(rand_vec(&mut rng, e * r * d_out), [e * r, d_out]),
            router: Some(router),
            scales,
            rank: r,
            dropout: None,
        });
        lin
    }

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    use crate::testing::max_abs_diff as max_diff;

    #[test]
    fn sparse_top_k_equals_the_masked_reference() {
        let dev = device();
        for (e, abs) in [(4, false), (4, true), (3, false), (2, false)] {
            let lin = routed_layer(7 + e as u64, e, 3, abs, &dev);
            let mut rng = StdRng::seed_from_u64(1);
            let x = Tensor::<3>::from_data(
                TensorData::new(rand_vec(&mut rng, 2 * 9 * 6), [2, 9, 6]),
                &dev,
            );
            for k in 1..=e {
                let sparse = values(lin.forward(x.clone(), &ExpertMix::Routed { top_k: Some(k) }));
                let masked = values(lin.forward_masked_reference(x.clone(), Some(k)));
                assert!(max_diff(&sparse, &masked) < 1e-5, "e {e} k {k} abs {abs}");
            }
            let dense = values(lin.forward(x.clone(), &ExpertMix::Routed { top_k: None }));
            let full = values(lin.forward(x.clone(), &ExpertMix::Routed { top_k: Some(e) }));
            assert!(max_diff(&dense, &full) < 1e-6);
            // Routing matters: top-1 differs from dense.
            let top1 = values(lin.forward(x.clone(), &ExpertMix::Routed { top_k: Some(1) }));
            assert!(max_diff(&dense, &top1) > 1e-3);
        }
    }

    #[test]
    fn sparse_gradients_equal_the_masked_reference() {
        let adev = device().autodiff();
        let lin = routed_layer(3, 4, 2, false, &adev);
        let mut rng = StdRng::seed_from_u64(2);
        let x = Tensor::<3>::from_data(
            TensorData::new(rand_vec(&mut rng, 2 * 5 * 6), [2, 5, 6]),
            &adev,
        );
        let probe = Tensor::<3>::from_data(
            TensorData::new(rand_vec(&mut rng, 2 * 5 * 5), [2, 5, 5]),
            &adev,
        );
        let experts = lin.experts.as_ref().unwrap();
        let params = [
            experts.a.val(),
            experts.b.val(),
            experts.router.as_ref().unwrap().linear.weight.val(),
        ];
        let grads_of = |y: Tensor<3>| {
            let g = (y * probe.clone()).sum().backward();
            params
                .iter()
                .map(|p| {
                    p.grad(&g)
                        .unwrap()
                        .into_data()
                        .iter::<f32>()
                        .collect::<Vec<f32>>()
                })
                .collect::<Vec<_>>()
        };
        let sparse = grads_of(lin.forward(x.clone(), &ExpertMix::Routed { top_k: Some(2) }));
        let masked = grads_of(lin.forward_masked_reference(x, Some(2)));
        for (i, (s, m)) in sparse.iter().zip(&masked).enumerate() {
            assert!(max_diff(s, m) < 1e-5, "parameter {i}");
            assert!(
                s.iter().any(|v| v.abs() > 1e-4),
                "parameter {i} has a gradient"
            );
        }
    }

    #[test]
    fn check_mix_names_each_problem() {
        let dev = device();
        let mut lin = routed_layer(1, 3, 2, false, &dev);
        let set = lin.experts.as_ref().unwrap();
        assert!(set.check_mix(&ExpertMix::Routed { top_k: Some(3) }).is_ok());
        assert_eq!(
            set.check_mix(&ExpertMix::Routed { top_k: Some(0) }),
            Err(MixError::BadTopK { k: 0, experts: 3 })
        );
        assert_eq!(
            set.check_mix(&ExpertMix::Routed { top_k: Some(4) }),
            Err(MixError::BadTopK { k: 4, experts: 3 })
        );
        assert!(matches!(
            set.check_mix(&ExpertMix::Static(vec![1.0])),
            Err(MixError::CoefficientCount {
                found: 1,
                experts: 3
            })
        ));
        assert!(matches!(
            set.check_mix(&ExpertMix::PerRow(vec![Some(3)])),
            Err(MixError::ExpertIndex { index: 3, .. })
        ));
        lin.experts.as_mut().unwrap().router = None;
        assert_eq!(
            lin.experts
                .as_ref()
                .unwrap()
                .check_mix(&ExpertMix::Routed { top_k: None }),
            Err(MixError::MissingRouter { experts: 3 })
        );
    }

    #[test]
    fn recorder_sees_every_routed_token() {
        let dev = device();
        let mut lin = routed_layer(5, 4, 2, false, &dev);
        let rec = RouteRecorder::new(true, true);
        lin.experts
            .as_mut()
            .unwrap()
            .router
            .as_mut()
            .unwrap()
            .recorder = Some(rec.clone());
        let mut rng = StdRng::seed_from_u64(4);
        let x = Tensor::<3>::from_data(
            TensorData::new(rand_vec(&mut rng, 3 * 4 * 6), [3, 4, 6]),
            &dev,
        );
        let _ = lin.forward(x.clone(), &ExpertMix::Routed { top_k: Some(2) });
        let _ = lin.forward(x, &ExpertMix::Base);
        let stats = rec.stats();
        assert_eq!(stats.tokens, 12);
        assert_eq!(stats.routed.iter().sum::<u64>(), 24);
        assert!((stats.load_share().iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((stats.mean_gate().iter().sum::<f64>() - 1.0).abs() < 1e-5);
        assert!(stats.mean_entropy() > 0.0 && stats.normalized_entropy() <= 1.0 + 1e-9);
        let logits = rec.take_logits();
        assert_eq!(logits.len(), 1);
        assert_eq!(logits[0].dims(), [12, 4]);
        assert!(rec.take_logits().is_empty());
    }

    #[test]
    fn transpose_is_an_involution() {
        let m: Vec<f32> = (0..35 * 67).map(|x| x as f32).collect();
        let t = transpose(&m, 35, 67);
        assert_eq!(t[35 + 2], m[2 * 67 + 1]);
        assert_eq!(transpose(&t, 67, 35), m);
    }
}
