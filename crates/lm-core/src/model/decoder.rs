//! The Llama / Qwen2 decoder: RMSNorm, RoPE (θ from the config), grouped-query attention,
//! SwiGLU feed-forward, optional q/k/v bias, tied or untied output head, and a KV cache.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::silu;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::adapted_linear::{AdaptedLinear, ExpertMix};
use super::config::DecoderConfig;
use super::kv_cache::KvCache;
use super::layers::{RmsNorm, Rope, grouped_attention};
use super::layout::{BlockLinear, module_name, parse_module_name};

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

/// SwiGLU feed-forward: `down(silu(gate(x)) · up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `gate_proj`: `[d_model] -> [d_ff]`.
    pub gate_proj: AdaptedLinear,
    /// `up_proj`: `[d_model] -> [d_ff]`.
    pub up_proj: AdaptedLinear,
    /// `down_proj`: `[d_ff] -> [d_model]`.
    pub down_proj: AdaptedLinear,
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// Feed-forward.
    pub mlp: Mlp,
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
    /// Rotary tables.
    pub rope: Rope,
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
        let q = self
            .q_proj
            .forward(x.clone(), mix)
            .reshape([b, s, h, d])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .forward(x.clone(), mix)
            .reshape([b, s, kvh, d])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward(x, mix)
            .reshape([b, s, kvh, d])
            .swap_dims(1, 2);
        let q = rope.apply(q, positions);
        let k = rope.apply(k, positions);
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
        let out = grouped_attention(q, k, v, mask, is_causal);
        let out = out.swap_dims(1, 2).reshape([b, s, h * d]);
        self.o_proj.forward(out, mix)
    }
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_model]`
    fn forward(&self, x: Tensor<3>, mix: &ExpertMix) -> Tensor<3> {
        let gate = silu(self.gate_proj.forward(x.clone(), mix));
        let up = self.up_proj.forward(x, mix);
        self.down_proj.forward(gate * up, mix)
    }
}

impl Decoder {
    /// Final hidden states (after the last norm).
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
        let mut x = self.embed_tokens.forward(tokens);
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| (c, i));
            let attn_in = layer.input_layernorm.forward(x.clone());
            x = x + layer
                .self_attn
                .forward(attn_in, &positions, &self.rope, mask, slot, mix);
            let mlp_in = layer.post_attention_layernorm.forward(x.clone());
            x = x + layer.mlp.forward(mlp_in, mix);
        }
        if let Some(c) = cache {
            c.advance(s);
        }
        self.norm.forward(x)
    }

    /// Logits of the output head.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, d_model]` -> `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.lm_head.forward(hidden)
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

/// Builds an embedding module from `[vocab, d]` values.
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
