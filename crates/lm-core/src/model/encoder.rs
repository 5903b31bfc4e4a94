//! The BERT encoder (as in all-MiniLM-L6-v2): learned absolute positions, post-norm blocks,
//! GELU (erf) feed-forward, and sentence embeddings by masked mean pooling + L2 normalisation.

use burn::module::Module;
use burn::nn::Embedding;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor};

use crate::kernels::gelu::gelu_erf;

use super::adapted_linear::{AdaptedLinear, ExpertMix};
use super::config::EncoderConfig;
use super::layers::LayerNorm;

/// The linear layers of one BERT block that adapters may target, by their HF names.
pub const ENCODER_TARGETS: [&str; 6] = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
];

/// One post-norm BERT block.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Query projection.
    pub query: AdaptedLinear,
    /// Key projection.
    pub key: AdaptedLinear,
    /// Value projection.
    pub value: AdaptedLinear,
    /// Attention output projection.
    pub attn_out: AdaptedLinear,
    /// Norm after attention + residual.
    pub attn_norm: LayerNorm,
    /// Feed-forward up projection.
    pub intermediate: AdaptedLinear,
    /// Feed-forward down projection.
    pub output: AdaptedLinear,
    /// Norm after feed-forward + residual.
    pub out_norm: LayerNorm,
}

/// A BERT encoder.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Token embedding `[vocab, d]`.
    pub word_embeddings: Embedding,
    /// Position embedding `[max_pos, d]`.
    pub position_embeddings: Embedding,
    /// Segment embedding `[type_vocab, d]`.
    pub token_type_embeddings: Embedding,
    /// Norm over the summed embeddings.
    pub embed_norm: LayerNorm,
    /// The blocks.
    pub layers: Vec<EncoderLayer>,
    /// The configuration it was built from.
    #[module(skip)]
    pub config: EncoderConfig,
}

impl Encoder {
    /// Last hidden states.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]`, `key_padding`: `[batch, seq]` (`true` = padding)
    /// - returns `[batch, seq, d]`
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        key_padding: Tensor<2, Bool>,
        mix: &ExpertMix,
    ) -> Tensor<3> {
        let [b, s] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..s as i64, &device)
            .reshape([1, s])
            .expand([b, s]);
        let types = Tensor::<2, Int>::zeros([b, s], &device);
        let x = self.word_embeddings.forward(tokens)
            + self.position_embeddings.forward(positions)
            + self.token_type_embeddings.forward(types);
        let mut x = self.embed_norm.forward(x);
        let h = self.config.num_heads;
        let d = self.config.head_dim();
        let mask = key_padding.reshape([b, 1, 1, s]).expand([b, h, s, s]);
        for layer in &self.layers {
            let split = |t: Tensor<3>| t.reshape([b, s, h, d]).swap_dims(1, 2);
            let q = split(layer.query.forward(x.clone(), mix));
            let k = split(layer.key.forward(x.clone(), mix));
            let v = split(layer.value.forward(x.clone(), mix));
            let ctx = attention(
                q,
                k,
                v,
                Some(mask.clone()),
                None,
                AttentionModuleOptions::default(),
            )
            .swap_dims(1, 2)
            .reshape([b, s, h * d]);
            x = layer
                .attn_norm
                .forward(layer.attn_out.forward(ctx, mix) + x);
            let ff = layer
                .output
                .forward(gelu_erf(layer.intermediate.forward(x.clone(), mix)), mix);
            x = layer.out_norm.forward(ff + x);
        }
        x
    }

    /// Sentence embeddings: mean of the hidden states over real tokens, then L2 normalised
    /// (sentence-transformers' `Pooling(mean)` + `Normalize`).
    ///
    /// # Shapes
    /// - `tokens`, `key_padding`: `[batch, seq]` -> `[batch, d]`
    pub fn embed(&self, tokens: Tensor<2, Int>, key_padding: Tensor<2, Bool>) -> Tensor<2> {
        let [b, s] = tokens.dims();
        let hidden = self.forward(tokens, key_padding.clone(), &ExpertMix::Base);
        let keep = key_padding.bool_not().float().reshape([b, s, 1]);
        let summed = (hidden * keep.clone())
            .sum_dim(1)
            .reshape([b, self.config.hidden_size]);
        let count = keep.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
        let mean = summed / count;
        let norm = mean.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
        mean / norm
    }
}
