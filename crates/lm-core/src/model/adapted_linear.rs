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
//! - [`ExpertMix::Routed`]: a learned router (a linear `d_in → E` in this layer) gives
//!   softmax gates per token, optionally keeping the top-k (mixture of LoRA experts).
//!
//! Experts of different ranks are zero-padded to a common `r`, which is exact.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};

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
    /// Optional router `d_in → E` for [`ExpertMix::Routed`].
    pub router: Option<Linear>,
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

impl ExpertSet {
    /// Number of experts `E`.
    pub fn num_experts(&self) -> usize {
        self.scales.len()
    }
}

/// A linear layer with a frozen base weight and optional LoRA experts.
#[derive(Module, Debug)]
pub struct AdaptedLinear {
    /// Base weight `[d_in, d_out]` (burn layout) and optional bias `[d_out]`.
    pub base: Linear,
    /// Low-rank experts, if any are attached.
    pub experts: Option<ExpertSet>,
}

impl AdaptedLinear {
    /// Wraps a base linear with no experts.
    pub fn new(base: Linear) -> Self {
        Self {
            base,
            experts: None,
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
        let y = self.base.forward(x.clone());
        let Some(experts) = &self.experts else {
            return y;
        };
        let [batch, seq, _] = x.dims();
        let e = experts.num_experts();
        let r = experts.rank;
        let device = x.device();
        // Per-token coefficient of each expert's r columns, already multiplied by s_e.
        let coef: Tensor<3> = match mix {
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
                Tensor::<1>::from_data(TensorData::new(cols, [batch * e * r]), &device).reshape([
                    batch,
                    1,
                    e * r,
                ])
            }
            ExpertMix::Routed { top_k } => {
                let router = experts
                    .router
                    .as_ref()
                    .expect("ExpertMix::Routed needs a router in every adapted layer");
                let gates = softmax(router.forward(x.clone()), 2); // [b, s, E]
                let gates = match top_k {
                    Some(k) if *k < e => keep_top_k(gates, *k),
                    _ => gates,
                };
                let scales =
                    Tensor::<1>::from_data(TensorData::new(experts.scales.clone(), [e]), &device)
                        .reshape([1, 1, e]);
                (gates * scales)
                    .reshape([batch, seq, e, 1])
                    .expand([batch, seq, e, r])
                    .reshape([batch, seq, e * r])
            }
        };
        let x = match &experts.dropout {
            Some(d) if device.is_autodiff() => d.apply(x),
            _ => x,
        };
        let xa = x.matmul(experts.a.val().unsqueeze_dim(0)); // [b, s, E·r]
        y + (xa * coef).matmul(experts.b.val().unsqueeze_dim(0))
    }
}

/// Keeps the `k` largest gates per token and renormalises them to sum to one.
///
/// # Shapes
/// - `gates`: `[batch, seq, E]` -> `[batch, seq, E]`
fn keep_top_k(gates: Tensor<3>, k: usize) -> Tensor<3> {
    let [b, s, e] = gates.dims();
    let (_, idx): (Tensor<3>, Tensor<3, Int>) = gates.clone().topk_with_indices(k, 2);
    let ones = Tensor::<3>::ones([b, s, k], &gates.device());
    let keep = Tensor::<3>::zeros([b, s, e], &gates.device()).scatter(
        2,
        idx,
        ones,
        burn::tensor::IndexingUpdateOp::Add,
    );
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

    #[test]
    fn transpose_is_an_involution() {
        let m: Vec<f32> = (0..35 * 67).map(|x| x as f32).collect();
        let t = transpose(&m, 35, 67);
        assert_eq!(t[35 + 2], m[2 * 67 + 1]);
        assert_eq!(transpose(&t, 67, 35), m);
    }
}
