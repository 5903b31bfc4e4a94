//! Small building blocks shared by the models: RMSNorm (plain or Gemma's `1 + w`), LayerNorm,
//! rotary tables, grouped-query attention (optional score scale and soft-cap), GELU (tanh).

use burn::module::{Module, Param};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// Root-mean-square normalisation: `x / sqrt(mean(x²) + ε) · γ`, or `· (1 + γ)` with
/// `unit_offset` (Gemma, whose checkpoints store the offset from 1: transformers'
/// `Gemma3RMSNorm`); computed in f32, as HF.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Scale γ, `[d]`.
    pub gamma: Param<Tensor<1>>,
    /// ε added to the mean square.
    #[module(skip)]
    pub eps: f64,
    /// Scale by `1 + γ` instead of `γ`.
    #[module(skip)]
    pub unit_offset: bool,
}

impl RmsNorm {
    /// Builds from the weight values (scale `γ`).
    pub fn new(gamma: Vec<f32>, eps: f64, device: &Device) -> Self {
        Self::with_offset(gamma, eps, false, device)
    }

    /// Builds from the weight values; with `unit_offset` the scale is `1 + γ`.
    pub fn with_offset(gamma: Vec<f32>, eps: f64, unit_offset: bool, device: &Device) -> Self {
        let d = gamma.len();
        Self {
            gamma: Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [d]), device))
                .set_require_grad(false),
            eps,
            unit_offset,
        }
    }

    /// Normalises over the last axis.
    ///
    /// # Shapes
    /// - `x`: `[..., d]` -> `[..., d]` (e.g. `[batch, seq, d_model]`, or
    ///   `[batch, heads, seq, head_dim]` for Gemma's q/k norms)
    ///
    /// An f16/bf16 `x` is normalised in f32 and returned in its dtype ([`super::precision`]).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        super::precision::in_f32(x, |x| {
            crate::kernels::norm::rms_norm(x, self.gamma.val(), self.eps, self.unit_offset)
        })
    }
}

/// LayerNorm with affine parameters: `(x - μ) / sqrt(σ² + ε) · γ + β`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale γ, `[d]`.
    pub gamma: Param<Tensor<1>>,
    /// Shift β, `[d]`.
    pub beta: Param<Tensor<1>>,
    /// ε added to the variance.
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm {
    /// Builds from the weight and bias values.
    pub fn new(gamma: Vec<f32>, beta: Vec<f32>, eps: f64, device: &Device) -> Self {
        let d = gamma.len();
        Self {
            gamma: Param::from_tensor(Tensor::from_data(TensorData::new(gamma, [d]), device))
                .set_require_grad(false),
            beta: Param::from_tensor(Tensor::from_data(TensorData::new(beta, [d]), device))
                .set_require_grad(false),
            eps,
        }
    }

    /// # Shapes
    /// - `x`: `[batch, seq, d]` -> `[batch, seq, d]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        crate::kernels::norm::layer_norm(x, self.gamma.val(), self.beta.val(), self.eps)
    }
}

/// Precomputed RoPE tables in HF's `rotate_half` convention (pairs `(i, i + d/2)`).
///
/// HF computes `inv_freq = 1 / θ^(2i/d)` and the angles `pos · inv_freq` in f32; we do the
/// same so that long positions round identically.
#[derive(Module, Debug)]
pub struct Rope {
    /// `cos(pos · inv_freq)` duplicated over both halves: `[max_pos, head_dim]`.
    pub cos: Tensor<2>,
    /// `sin(pos · inv_freq)` duplicated over both halves: `[max_pos, head_dim]`.
    pub sin: Tensor<2>,
}

impl Rope {
    /// Builds the tables for positions `0..max_pos`.
    pub fn new(head_dim: usize, theta: f64, max_pos: usize, device: &Device) -> Self {
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                1.0f32 / (theta as f32).powf(exponent)
            })
            .collect();
        let mut cos = Vec::with_capacity(max_pos * head_dim);
        let mut sin = Vec::with_capacity(max_pos * head_dim);
        for pos in 0..max_pos {
            let angles: Vec<f32> = inv_freq.iter().map(|f| pos as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [max_pos, head_dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_pos, head_dim]), device),
        }
    }

    /// Longest position covered by the tables.
    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Rotates queries or keys at the given positions.
    ///
    /// # Shapes
    /// - `x`: `[batch, heads, seq, head_dim]`
    /// - `positions`: `[batch, seq]`
    /// - returns `[batch, heads, seq, head_dim]`
    pub fn apply(&self, x: Tensor<4>, positions: &Tensor<2, Int>) -> Tensor<4> {
        let [b, _h, s, d] = x.dims();
        let flat = positions.clone().reshape([b * s]);
        let cos = self
            .cos
            .clone()
            .select(0, flat.clone())
            .reshape([b, 1, s, d]);
        let sin = self.sin.clone().select(0, flat).reshape([b, 1, s, d]);
        let half = d / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }

    /// Rotates queries or keys laid out as the projections produce them, heads after tokens
    /// (one pass on the CPU: [`kernels::rope`](crate::kernels::rope)).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, heads, head_dim]`
    /// - `positions`: `[batch, seq]`
    /// - returns `[batch, seq, heads, head_dim]`
    ///
    /// An f16/bf16 `x` is rotated in f32 and returned in its dtype ([`super::precision`]).
    pub fn apply_bshd(&self, x: Tensor<4>, positions: &Tensor<2, Int>) -> Tensor<4> {
        super::precision::in_f32(x, |x| {
            crate::kernels::rope::rope_bshd(x, &self.cos, &self.sin, positions)
        })
    }
}

/// Repeats each key/value head `groups` times (grouped-query attention).
///
/// # Shapes
/// - `x`: `[batch, kv_heads, seq, d]` -> `[batch, kv_heads · groups, seq, d]`
pub fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [b, h, s, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, h, groups, s, d])
        .reshape([b, h * groups, s, d])
}

/// How [`grouped_attention`] turns `q·kᵀ` into scores, beyond the mask.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AttentionScores {
    /// Scale of `q·kᵀ`; `None`: `head_dim^-½`.
    pub scale: Option<f64>,
    /// `cap · tanh(scores / cap)` before the softmax; `None`: off.
    pub softcap: Option<f64>,
}

/// Scaled dot-product attention with fewer key/value heads than query heads (GQA).
///
/// Backends whose attention kernel shares each key/value head among its query heads (burn's
/// CPU backend `flex`, outside autodiff) get the keys and values as they are; the others get
/// them repeated to one per query head ([`repeat_kv`]), which copies them.
///
/// # Shapes
/// - `q`: `[batch, heads, seq_q, d]`; `k`, `v`: `[batch, kv_heads, seq_k, d]`
/// - `mask`: `[batch, heads, seq_q, seq_k]`, `true` = hidden
/// - returns `[batch, heads, seq_q, d]`
pub fn grouped_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
    is_causal: bool,
    scores: AttentionScores,
) -> Tensor<4> {
    let groups = q.dims()[1] / k.dims()[1];
    let (k, v) = if groups > 1 && !shares_kv_heads(&q.device()) {
        (repeat_kv(k, groups), repeat_kv(v, groups))
    } else {
        (k, v)
    };
    attention(
        q,
        k,
        v,
        mask,
        None,
        AttentionModuleOptions {
            is_causal,
            scale: scores.scale,
            softcap: scores.softcap,
        },
    )
}

/// Whether the device's attention kernel accepts fewer key/value heads than query heads.
fn shares_kv_heads(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    {
        !device.is_autodiff() && *device == Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// GELU with the tanh approximation (PyTorch's `gelu(x, approximate="tanh")`, transformers'
/// `gelu_pytorch_tanh`): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
///
/// # Shapes
/// - `x`: any -> same
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::gelu_approximate(x)
}
