//! The decoder of the Llama family (Llama, Qwen2) and of Gemma 3: RMSNorm, RoPE (θ from the
//! config), grouped-query attention, gated feed-forward, optional q/k/v bias, tied or untied
//! output head, and a KV cache.
//!
//! What Gemma 3 does differently (transformers' `modeling_gemma3.py`) is switched on by
//! [`DecoderArch`](super::config::DecoderArch) and the config's numbers, each in one place:
//!
//! - the embedding is multiplied by `√hidden_size` ([`Decoder::embed`]);
//! - RMSNorm scales by `1 + w` ([`RmsNorm`]'s `unit_offset`);
//! - a block normalises the attention and MLP outputs too ([`DecoderLayer::forward`]);
//! - queries and keys are RMS-normalised per head before RoPE ([`Attention`]'s `q_norm` / `k_norm`);
//! - the MLP gate is GELU (tanh) instead of SiLU ([`Mlp`]);
//! - local layers see only the last `sliding_window` keys, with their own RoPE base, and global
//!   layers everything ([`Decoder::forward_hidden`], [`sliding_window_mask`]);
//! - scores are scaled by `query_pre_attn_scalar^-½`, and attention scores and output logits are
//!   soft-capped when the config says so ([`Decoder::logits`]).

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

use crate::kernels::swiglu::swiglu;

use super::adapted_linear::{AdaptedLinear, ExpertMix};
use super::config::{DecoderConfig, GateActivation};
use super::kv_cache::KvCache;
use super::layers::{AttentionScores, RmsNorm, Rope, gelu_tanh, grouped_attention};
use super::layout::{BlockLinear, module_name, parse_module_name};
use super::precision::Precision;
use crate::quant::QuantLinear;

/// Self-attention of one decoder block.
#[derive(Module, Debug)]
pub struct Attention {
    /// `q_proj`: `[d_model] -> [heads · head_dim]`.
    pub q_proj: AdaptedLinear,
    /// `k_proj`: `[d_model] -> [kv_heads · head_dim]`.
    pub k_proj: AdaptedLinear,
    /// `v_proj`: `[d_model] -> [kv_heads · head_dim]`.
    pub v_proj: AdaptedLinear,
    /// `o_proj`: `[heads · head_dim] -> [d_model]`.
    pub o_proj: AdaptedLinear,
    /// Gemma 3: RMSNorm of each query head (`[head_dim]`), before RoPE.
    pub q_norm: Option<RmsNorm>,
    /// Gemma 3: RMSNorm of each key head (`[head_dim]`), before RoPE.
    pub k_norm: Option<RmsNorm>,
    /// Scale of `q·kᵀ` (`None`: `head_dim^-½`).
    #[module(skip)]
    pub scale: Option<f64>,
    /// Soft-cap of the attention scores (`None`: off).
    #[module(skip)]
    pub softcap: Option<f64>,
    /// Query heads.
    #[module(skip)]
    pub num_heads: usize,
    /// Key/value heads.
    #[module(skip)]
    pub num_kv_heads: usize,
    /// Width of one head.
    #[module(skip)]
    pub head_dim: usize,
}

/// Gated feed-forward: `down(act(gate(x)) · up(x))`, SwiGLU (`act = silu`) or GeGLU
/// (`act = gelu_tanh`, Gemma).
#[derive(Module, Debug)]
pub struct Mlp {
    /// `gate_proj`: `[d_model] -> [d_ff]`.
    pub gate_proj: AdaptedLinear,
    /// `up_proj`: `[d_model] -> [d_ff]`.
    pub up_proj: AdaptedLinear,
    /// `down_proj`: `[d_ff] -> [d_model]`.
    pub down_proj: AdaptedLinear,
    /// The gate's activation.
    #[module(skip)]
    pub activation: GateActivation,
}

/// One pre-norm decoder block (Llama), or Gemma's block with norms around both sub-layers.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: Attention,
    /// Llama / Qwen2: the norm before the MLP. Gemma: the norm of the attention output.
    pub post_attention_layernorm: RmsNorm,
    /// Gemma: the norm before the MLP (`None` for Llama / Qwen2).
    pub pre_feedforward_layernorm: Option<RmsNorm>,
    /// Gemma: the norm of the MLP output (`None` for Llama / Qwen2).
    pub post_feedforward_layernorm: Option<RmsNorm>,
    /// Feed-forward.
    pub mlp: Mlp,
    /// Whether this block attends within the sliding window only (a local layer).
    #[module(skip)]
    pub local: bool,
}

/// A causal language model of the Llama family.
#[derive(Module, Debug)]
pub struct Decoder {
    /// Token embedding `[vocab, d_model]`.
    pub embed_tokens: Embedding,
    /// The blocks.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output head `[d_model, vocab]` (a transposed copy of the embedding when tied).
    pub lm_head: Linear,
    /// A quantised copy of the head that decode steps multiply by ([`crate::quant`]).
    #[module(skip)]
    pub lm_head_quant: Option<QuantLinear>,
    /// Rotary tables (of global layers, and of local ones without `rope_local`).
    pub rope: Rope,
    /// Rotary tables of local (sliding-window) layers when their θ differs (Gemma 3).
    pub rope_local: Option<Rope>,
    /// The configuration it was built from.
    #[module(skip)]
    pub config: DecoderConfig,
}

/// Which keys each query may see, beyond causality.
#[derive(Debug, Clone)]
pub enum AttentionMask {
    /// Plain causal attention (no padding before real tokens).
    Causal,
    /// An explicit mask, `true` = hidden: `[batch, 1, q_len, k_len]`.
    Explicit(Box<Tensor<4, Bool>>),
}

impl Attention {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `positions`: `[batch, seq]`
    /// - returns `[batch, seq, d_model]`
    fn forward(
        &self,
        x: Tensor<3>,
        positions: &Tensor<2, Int>,
        rope: &Rope,
        mask: &AttentionMask,
        cache: Option<(&mut KvCache, usize)>,
        mix: &ExpertMix,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        // Per-head norms and RoPE run on `[batch, seq, heads, head_dim]`, the layout the
        // projections produce, before the heads are moved in front of the tokens.
        let q = self.q_proj.forward(x.clone(), mix);
        let k = self.k_proj.forward(x.clone(), mix);
        let v = self.v_proj.forward(x, mix);
        let q = q.reshape([b, s, h, d]);
        let k = k.reshape([b, s, kvh, d]);
        let v = v.reshape([b, s, kvh, d]).swap_dims(1, 2);
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(q), kn.forward(k)),
            _ => (q, k),
        };
        let q = rope.apply_bshd(q, positions).swap_dims(1, 2);
        let k = rope.apply_bshd(k, positions).swap_dims(1, 2);
        let (k, v) = match cache {
            // Written into the cache; a first call (prefill) attends to its own keys only,
            // later calls to the whole buffer, whose unwritten tail the mask hides.
            Some((cache, layer)) if cache.is_empty() => {
                cache.append(layer, k.clone(), v.clone());
                (k, v)
            }
            Some((cache, layer)) => cache.append(layer, k, v),
            None => (k, v),
        };
        let kl = k.dims()[2];
        let (mask, is_causal) = match mask {
            AttentionMask::Causal => (None, s > 1),
            AttentionMask::Explicit(m) => (Some((**m).clone().expand([b, h, s, kl])), false),
        };
        let scores = AttentionScores {
            scale: self.scale,
            softcap: self.softcap,
        };
        let out = grouped_attention(q, k, v, mask, is_causal, scores);
        let out = out.swap_dims(1, 2).reshape([b, s, h * d]);
        self.o_proj.forward(out, mix)
    }
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    fn forward(&self, x: Tensor<3>, mix: &ExpertMix) -> Tensor<3> {
        let gate = self.gate_proj.forward(x.clone(), mix);
        let up = self.up_proj.forward(x, mix);
        let hidden = match self.activation {
            GateActivation::Silu => swiglu(gate, up),
            GateActivation::GeluTanh => gelu_tanh(gate) * up,
        };
        self.down_proj.forward(hidden, mix)
    }
}

impl Decoder {
    /// Final hidden states (after the last norm), in f32 whatever the
    /// [`precision`](Self::precision).
    ///
    /// `positions` are the RoPE positions of the tokens (for left-padded rows they start at 0
    /// at the first real token). With a cache, the new keys/values are appended to it, and
    /// when it already holds `past` positions the mask is `Causal` (every row sees all of them)
    /// or `Explicit` of shape `[batch, 1, seq, past + seq]`.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`, `positions`: `[batch, seq]`
    /// - returns `[batch, seq, d_model]`
    pub fn forward_hidden(
        &self,
        tokens: Tensor<2, Int>,
        positions: Tensor<2, Int>,
        mask: &AttentionMask,
        mut cache: Option<&mut KvCache>,
        mix: &ExpertMix,
    ) -> Tensor<3> {
        let s = tokens.dims()[1];
        let extended;
        let mask = match cache.as_deref_mut() {
            Some(c) => {
                let past = c.len();
                c.reserve(past + s);
                if past == 0 {
                    mask
                } else {
                    extended = AttentionMask::Explicit(Box::new(cache_mask(
                        mask,
                        s,
                        past,
                        c.capacity(),
                        &tokens.device(),
                    )));
                    &extended
                }
            }
            None => mask,
        };
        let local_mask = self.local_mask(mask, s, cache.as_deref(), &tokens.device());
        let mut x = self.embed(tokens);
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| (c, i));
            let (rope, mask) = match (&local_mask, layer.local) {
                (Some(local), true) => (self.rope_local.as_ref().unwrap_or(&self.rope), local),
                (None, true) => (self.rope_local.as_ref().unwrap_or(&self.rope), mask),
                (_, false) => (&self.rope, mask),
            };
            x = layer.forward(x, &positions, rope, mask, slot, mix);
        }
        if let Some(c) = cache {
            c.advance(s);
        }
        self.norm.forward(to_f32(x))
    }

    /// Token embeddings, times `√hidden_size` for Gemma (transformers'
    /// `Gemma3TextScaledWordEmbedding`, the scale rounded to f32 as there).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` -> `[batch, seq, d_model]`
    pub fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let x = self.embed_tokens.forward(tokens);
        if self.config.arch.scales_embedding() {
            x * ((self.config.hidden_size as f64).sqrt() as f32)
        } else {
            x
        }
    }

    /// The mask of local layers for a call of `seq` queries, when the sliding window hides
    /// keys the call's `mask` shows; `None` when no key is out of any query's window (the
    /// global mask serves) or no layer is local. `mask` is the call's effective mask: over the
    /// call's own keys without a cache or on its first call, over the cache's capacity after.
    fn local_mask(
        &self,
        mask: &AttentionMask,
        seq: usize,
        cache: Option<&KvCache>,
        device: &Device,
    ) -> Option<AttentionMask> {
        let window = self.config.sliding_window?;
        if !self.layers.iter().any(|l| l.local) {
            return None;
        }
        let (past, keys) = match cache {
            Some(c) if !c.is_empty() => (c.len(), c.capacity()),
            _ => (0, seq),
        };
        if past + seq <= window {
            return None;
        }
        let band = sliding_window_mask(seq, keys, past, window, device);
        Some(AttentionMask::Explicit(Box::new(match mask {
            AttentionMask::Causal => {
                let causal: Vec<bool> = (0..seq)
                    .flat_map(|q| (0..keys).map(move |k| k > past + q))
                    .collect();
                Tensor::<4, Bool>::from_data(TensorData::new(causal, [1, 1, seq, keys]), device)
                    .bool_or(band)
            }
            AttentionMask::Explicit(m) => {
                let dims = m.dims();
                (**m).clone().bool_or(band.expand(dims))
            }
        })))
    }

    /// Logits of the output head.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, d_model]` -> `[batch, seq, vocab]`
    ///
    /// With `final_logit_softcapping = cap`: `cap · tanh(logits / cap)` (Gemma 2).
    ///
    /// The head multiplies in the decoder's [`precision`](Self::precision); the logits are
    /// returned in f32.
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let logits = match self.lm_head_quant.as_ref().and_then(|q| q.forward(&hidden)) {
            Some(l) => l,
            None => {
                let head = self.lm_head.weight.val().dtype();
                let hidden = if hidden.dtype() == head {
                    hidden
                } else {
                    hidden.cast(head)
                };
                to_f32(crate::kernels::frozen_linear::frozen_linear(
                    hidden,
                    &self.lm_head,
                ))
            }
        };
        match self.config.final_logit_softcapping {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
    }

    /// The dtype of the frozen weights and block activations (that of the embedding).
    pub fn precision(&self) -> Precision {
        Precision::from_dtype(self.embed_tokens.weight.val().dtype()).unwrap_or_default()
    }

    /// Casts the embedding, the base weights and biases of every projection, and the output
    /// head to `precision`; norms, rotary tables, LoRA experts and routers stay f32
    /// ([`super::precision`] says where each computation runs). Casts from the current
    /// weights: call it once on a decoder loaded in f32 (casting bf16 to f16 rounds twice).
    /// Quantised decode copies ([`crate::quant`]) are not touched; they serve f32 inputs only.
    pub fn set_precision(&mut self, precision: Precision) {
        let dtype = precision.dtype();
        cast_param(&mut self.embed_tokens.weight, dtype);
        cast_linear(&mut self.lm_head, dtype);
        for layer in &mut self.layers {
            for which in BlockLinear::ALL {
                cast_linear(&mut layer.linear_mut(which).base, dtype);
            }
        }
    }

    /// Positions `0..seq` for every row.
    ///
    /// # Shapes
    /// - returns `[batch, seq]`
    pub fn default_positions(
        batch: usize,
        seq: usize,
        offset: usize,
        device: &Device,
    ) -> Tensor<2, Int> {
        let pos: Vec<i64> = (0..batch)
            .flat_map(|_| (offset..offset + seq).map(|p| p as i64))
            .collect();
        Tensor::from_data(TensorData::new(pos, [batch, seq]), device)
    }

    /// Logits for a batch of equal-length (or right-padded) sequences with no cache.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` -> `[batch, seq, vocab]`
    pub fn forward(&self, tokens: Tensor<2, Int>, mix: &ExpertMix) -> Tensor<3> {
        let [b, s] = tokens.dims();
        let positions = Self::default_positions(b, s, 0, &tokens.device());
        let hidden = self.forward_hidden(tokens, positions, &AttentionMask::Causal, None, mix);
        self.logits(hidden)
    }

    /// The adaptable linear layers of the model, with their HF module names
    /// (`model.layers.{i}.self_attn.q_proj`, ...), block by block in HF order
    /// ([`layout::adaptable_linears`](super::layout::adaptable_linears) gives the same names
    /// from a config alone).
    pub fn adapted_linears(&self) -> Vec<(String, &AdaptedLinear)> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                BlockLinear::ALL
                    .into_iter()
                    .map(move |lin| (module_name(i, lin), l.linear(lin)))
            })
            .collect()
    }

    /// Mutable access to an adaptable linear by its HF module name.
    pub fn adapted_linear_mut(&mut self, name: &str) -> Option<&mut AdaptedLinear> {
        let (idx, lin) = parse_module_name(name)?;
        Some(self.layers.get_mut(idx)?.linear_mut(lin))
    }
}

impl DecoderLayer {
    /// The block: `x + attn(norm(x))` then `x + mlp(norm(x))` (Llama), or with the outputs of
    /// attention and MLP normalised too, `x + norm(attn(norm(x)))` then
    /// `x + norm(mlp(norm(x)))` (Gemma).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]`, `positions`: `[batch, seq]`
    /// - returns `[batch, seq, d_model]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        positions: &Tensor<2, Int>,
        rope: &Rope,
        mask: &AttentionMask,
        cache: Option<(&mut KvCache, usize)>,
        mix: &ExpertMix,
    ) -> Tensor<3> {
        let attn_in = self.input_layernorm.forward(x.clone());
        let attn = self
            .self_attn
            .forward(attn_in, positions, rope, mask, cache, mix);
        match (
            &self.pre_feedforward_layernorm,
            &self.post_feedforward_layernorm,
        ) {
            (Some(pre), Some(post)) => {
                let x = x + self.post_attention_layernorm.forward(attn);
                let mlp = self.mlp.forward(pre.forward(x.clone()), mix);
                x + post.forward(mlp)
            }
            _ => {
                let x = x + attn;
                let mlp_in = self.post_attention_layernorm.forward(x.clone());
                x + self.mlp.forward(mlp_in, mix)
            }
        }
    }

    /// One of the block's linear layers.
    pub fn linear(&self, which: BlockLinear) -> &AdaptedLinear {
        let (a, m) = (&self.self_attn, &self.mlp);
        match which {
            BlockLinear::Q => &a.q_proj,
            BlockLinear::K => &a.k_proj,
            BlockLinear::V => &a.v_proj,
            BlockLinear::O => &a.o_proj,
            BlockLinear::Gate => &m.gate_proj,
            BlockLinear::Up => &m.up_proj,
            BlockLinear::Down => &m.down_proj,
        }
    }

    /// One of the block's linear layers, mutably.
    pub fn linear_mut(&mut self, which: BlockLinear) -> &mut AdaptedLinear {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        match which {
            BlockLinear::Q => &mut a.q_proj,
            BlockLinear::K => &mut a.k_proj,
            BlockLinear::V => &mut a.v_proj,
            BlockLinear::O => &mut a.o_proj,
            BlockLinear::Gate => &mut m.gate_proj,
            BlockLinear::Up => &mut m.up_proj,
            BlockLinear::Down => &mut m.down_proj,
        }
    }
}

/// The keys outside the sliding window of each query: key `k` is hidden from query `q` (at
/// absolute position `past + q`) when `k ≤ past + q - window`, i.e. visible when
/// `past + q - window < k` (transformers' `sliding_window_overlay`, on cache positions).
///
/// # Shapes
/// - returns `[1, 1, seq, keys]` (`true` = hidden)
pub fn sliding_window_mask(
    seq: usize,
    keys: usize,
    past: usize,
    window: usize,
    device: &Device,
) -> Tensor<4, Bool> {
    let hidden: Vec<bool> = (0..seq)
        .flat_map(|q| (0..keys).map(move |k| k + window <= past + q))
        .collect();
    Tensor::from_data(TensorData::new(hidden, [1, 1, seq, keys]), device)
}

/// The mask of a call on a cache holding `past` positions, widened to the cache's `capacity`:
/// the caller's mask over the `past + seq` written positions, then hidden columns for the
/// buffer's unwritten tail.
///
/// # Shapes
/// - `mask`: `Causal`, or `Explicit` `[batch, 1, seq, past + seq]`
/// - returns `[batch or 1, 1, seq, capacity]` (`true` = hidden)
fn cache_mask(
    mask: &AttentionMask,
    seq: usize,
    past: usize,
    capacity: usize,
    device: &Device,
) -> Tensor<4, Bool> {
    let written = past + seq;
    let tail = capacity - written;
    match mask {
        AttentionMask::Causal => {
            let hidden: Vec<bool> = (0..seq)
                .flat_map(|q| (0..capacity).map(move |k| k > past + q))
                .collect();
            Tensor::from_data(TensorData::new(hidden, [1, 1, seq, capacity]), device)
        }
        AttentionMask::Explicit(m) => {
            let dims = m.dims();
            assert_eq!(
                (dims[2], dims[3]),
                (seq, written),
                "expected a mask over the {written} cached + new positions for {seq} queries"
            );
            if tail == 0 {
                return (**m).clone();
            }
            let rows = dims[0];
            let hidden = Tensor::<4, Bool>::from_data(
                TensorData::new(vec![true; rows * seq * tail], [rows, 1, seq, tail]),
                device,
            );
            Tensor::cat(vec![(**m).clone(), hidden], 3)
        }
    }
}

/// `x` in f32 (itself when it already is).
fn to_f32<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if x.dtype() == DType::F32 {
        x
    } else {
        x.cast(DType::F32)
    }
}

/// Casts a parameter's value in place, keeping its id and whether it requires a gradient.
fn cast_param<const D: usize>(param: &mut Param<Tensor<D>>, dtype: DType) {
    if param.val().dtype() != dtype {
        *param = param.clone().map(|t| t.cast(dtype));
    }
}

/// Casts a linear layer's weight and bias.
fn cast_linear(linear: &mut Linear, dtype: DType) {
    cast_param(&mut linear.weight, dtype);
    if let Some(bias) = &mut linear.bias {
        cast_param(bias, dtype);
    }
}

/// Builds an embedding module from `[vocab, d]` values.
pub(crate) fn embedding_from(
    values: Vec<f32>,
    vocab: usize,
    d: usize,
    device: &Device,
) -> Embedding {
    Embedding {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(values, [vocab, d]),
            device,
        ))
        .set_require_grad(false),
    }
}
