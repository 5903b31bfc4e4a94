//! The decoder's tensor layout, written once: HF tensor names, PyTorch shapes, and which
//! linear layers adapters may target.
//!
//! Everything that names or shapes a decoder tensor derives from this module: the loader
//! ([`build_decoder`](super::loader::build_decoder)), the module lookup used by adapters
//! ([`Decoder::adapted_linears`](super::Decoder::adapted_linears)), random test models, the
//! HF exporter and lora-zoo's `BaseModelSpec`. Adding an architecture with another layout means
//! editing this file, and a missed case fails to compile (the `match`es are exhaustive).
//!
//! HF names (Llama / Qwen2): `model.embed_tokens.weight`, per block
//! `model.layers.{i}.input_layernorm.weight`, `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight`
//! (+ `.bias` on q/k/v when the config has attention bias),
//! `model.layers.{i}.post_attention_layernorm.weight`,
//! `model.layers.{i}.mlp.{gate,up,down}_proj.weight`, then `model.norm.weight` and
//! `lm_head.weight` unless the head is tied to the embedding.
//!
//! Gemma 3 has the same linears (so adapters target the same names) and more norms per block:
//! `self_attn.{q,k}_norm.weight` (`[head_dim]`), and `pre_feedforward_layernorm.weight` /
//! `post_feedforward_layernorm.weight` besides `input_layernorm` and `post_attention_layernorm`
//! ([`BlockNorm`]). Its norm weights are stored as HF does, as the offset from 1.

use super::config::DecoderConfig;

/// Prefix of every block's module names.
pub const LAYER_PREFIX: &str = "model.layers.";
/// The token embedding `[vocab, hidden]`.
pub const EMBED_TOKENS: &str = "model.embed_tokens.weight";
/// The final RMSNorm `[hidden]`.
pub const FINAL_NORM: &str = "model.norm.weight";
/// The output head `[vocab, hidden]` (absent when tied).
pub const LM_HEAD: &str = "lm_head.weight";

/// One linear layer of a decoder block. Every one of them is a possible adapter target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockLinear {
    /// Attention query projection.
    Q,
    /// Attention key projection.
    K,
    /// Attention value projection.
    V,
    /// Attention output projection.
    O,
    /// SwiGLU gate projection.
    Gate,
    /// SwiGLU up projection.
    Up,
    /// SwiGLU down projection.
    Down,
}

impl BlockLinear {
    /// Every block linear, in HF's module order.
    pub const ALL: [BlockLinear; 7] = [
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::Gate,
        Self::Up,
        Self::Down,
    ];

    /// PEFT's short target name (`target_modules` entry): `q_proj`, ..., `down_proj`.
    pub fn target_name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    /// The module's path inside a block: `self_attn.q_proj`, ..., `mlp.down_proj`.
    pub fn path(self) -> &'static str {
        match self {
            Self::Q => "self_attn.q_proj",
            Self::K => "self_attn.k_proj",
            Self::V => "self_attn.v_proj",
            Self::O => "self_attn.o_proj",
            Self::Gate => "mlp.gate_proj",
            Self::Up => "mlp.up_proj",
            Self::Down => "mlp.down_proj",
        }
    }

    /// The block linear at a block path (`self_attn.q_proj`), if any.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.path() == path)
    }

    /// `(d_in, d_out)` of this linear for a config.
    ///
    /// # Shapes
    /// `q: hidden -> heads·head_dim`, `k`/`v: hidden -> kv_heads·head_dim`,
    /// `o: heads·head_dim -> hidden`, `gate`/`up: hidden -> intermediate`,
    /// `down: intermediate -> hidden`.
    pub fn shape(self, c: &DecoderConfig) -> (usize, usize) {
        let (d, ff) = (c.hidden_size, c.intermediate_size);
        let (qd, kvd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        match self {
            Self::Q => (d, qd),
            Self::K | Self::V => (d, kvd),
            Self::O => (qd, d),
            Self::Gate | Self::Up => (d, ff),
            Self::Down => (ff, d),
        }
    }

    /// Whether this linear carries a bias under `c` (q/k/v with `attention_bias`, as Qwen2).
    pub fn has_bias(self, c: &DecoderConfig) -> bool {
        c.attention_bias && matches!(self, Self::Q | Self::K | Self::V)
    }
}

/// The HF module name of a block linear: `model.layers.{layer}.self_attn.q_proj`.
pub fn module_name(layer: usize, linear: BlockLinear) -> String {
    format!("{LAYER_PREFIX}{layer}.{}", linear.path())
}

/// The block and linear a module name denotes (`model.layers.3.mlp.up_proj` → `(3, Up)`).
pub fn parse_module_name(name: &str) -> Option<(usize, BlockLinear)> {
    let rest = name.strip_prefix(LAYER_PREFIX)?;
    let (idx, path) = rest.split_once('.')?;
    Some((idx.parse().ok()?, BlockLinear::from_path(path)?))
}

/// The block index in a module or tensor name (`model.layers.3.…` → 3), PEFT's default
/// `layers_pattern` for Llama-family models.
pub fn layer_index(name: &str) -> Option<usize> {
    name.strip_prefix(LAYER_PREFIX)?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// One RMSNorm of a decoder block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockNorm {
    /// Before attention (every architecture).
    Input,
    /// Llama / Qwen2: before the MLP. Gemma: on the attention output.
    PostAttention,
    /// Gemma: before the MLP.
    PreFeedforward,
    /// Gemma: on the MLP output.
    PostFeedforward,
    /// Gemma 3: on each query head, `[head_dim]`.
    Query,
    /// Gemma 3: on each key head, `[head_dim]`.
    Key,
}

impl BlockNorm {
    /// Every block norm, in HF's module order.
    pub const ALL: [BlockNorm; 6] = [
        Self::Query,
        Self::Key,
        Self::Input,
        Self::PostAttention,
        Self::PreFeedforward,
        Self::PostFeedforward,
    ];

    /// The module's path inside a block: `input_layernorm`, ..., `self_attn.q_norm`.
    pub fn path(self) -> &'static str {
        match self {
            Self::Input => "input_layernorm",
            Self::PostAttention => "post_attention_layernorm",
            Self::PreFeedforward => "pre_feedforward_layernorm",
            Self::PostFeedforward => "post_feedforward_layernorm",
            Self::Query => "self_attn.q_norm",
            Self::Key => "self_attn.k_norm",
        }
    }

    /// Whether blocks of config `c` have this norm.
    pub fn exists(self, c: &DecoderConfig) -> bool {
        match self {
            Self::Input | Self::PostAttention => true,
            Self::PreFeedforward | Self::PostFeedforward => c.arch.has_sandwich_norms(),
            Self::Query | Self::Key => c.arch.has_qk_norm(),
        }
    }

    /// Width of the norm's weight: `head_dim` for q/k norms, `hidden_size` otherwise.
    pub fn width(self, c: &DecoderConfig) -> usize {
        match self {
            Self::Query | Self::Key => c.head_dim,
            _ => c.hidden_size,
        }
    }
}

/// The norms a block of config `c` has, in HF's module order.
pub fn block_norms(c: &DecoderConfig) -> impl Iterator<Item = BlockNorm> + '_ {
    BlockNorm::ALL.into_iter().filter(|n| n.exists(c))
}

/// The HF weight name of a block norm: `model.layers.{layer}.input_layernorm.weight`.
pub fn norm_name(layer: usize, norm: BlockNorm) -> String {
    format!("{LAYER_PREFIX}{layer}.{}.weight", norm.path())
}

/// What a tensor of the plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// The token embedding.
    Embedding,
    /// An RMSNorm weight (a block's or the final one).
    Norm,
    /// A block linear's weight.
    LinearWeight(BlockLinear),
    /// A block linear's bias.
    LinearBias(BlockLinear),
    /// The untied output head.
    LmHead,
}

/// One tensor of a checkpoint: HF name, PyTorch-layout shape, kind and block (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderTensor {
    /// HF tensor name.
    pub name: String,
    /// PyTorch layout: linear weights `[d_out, d_in]`, norms and biases `[d]`.
    pub shape: Vec<usize>,
    /// What the tensor is.
    pub kind: TensorKind,
    /// The block it belongs to, `None` for embedding, final norm and head.
    pub layer: Option<usize>,
}

impl DecoderTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The tensors of a decoder checkpoint in HF's module order (embedding, each block's norms,
/// attention and MLP, final norm, then `lm_head` unless tied).
///
/// # Shapes
/// linear weights `[d_out, d_in]`; norms and biases `[d]` (q/k norms `[head_dim]`); embedding
/// and head `[vocab, hidden]`.
pub fn decoder_tensor_plan(c: &DecoderConfig) -> Vec<DecoderTensor> {
    let (d, v) = (c.hidden_size, c.vocab_size);
    let entry = |name: String, shape: Vec<usize>, kind, layer| DecoderTensor {
        name,
        shape,
        kind,
        layer,
    };
    let mut plan = vec![entry(
        EMBED_TOKENS.into(),
        vec![v, d],
        TensorKind::Embedding,
        None,
    )];
    for i in 0..c.num_layers {
        let norm = |plan: &mut Vec<DecoderTensor>, n: BlockNorm| {
            if n.exists(c) {
                plan.push(entry(
                    norm_name(i, n),
                    vec![n.width(c)],
                    TensorKind::Norm,
                    Some(i),
                ));
            }
        };
        // Llama order: input norm, q k v o, post-attention norm, gate up down; Gemma's extra
        // norms next to the module they wrap.
        norm(&mut plan, BlockNorm::Input);
        for lin in BlockLinear::ALL {
            if lin == BlockLinear::Gate {
                norm(&mut plan, BlockNorm::Query);
                norm(&mut plan, BlockNorm::Key);
                norm(&mut plan, BlockNorm::PostAttention);
                norm(&mut plan, BlockNorm::PreFeedforward);
            }
            let (d_in, d_out) = lin.shape(c);
            let name = module_name(i, lin);
            plan.push(entry(
                format!("{name}.weight"),
                vec![d_out, d_in],
                TensorKind::LinearWeight(lin),
                Some(i),
            ));
            if lin.has_bias(c) {
                plan.push(entry(
                    format!("{name}.bias"),
                    vec![d_out],
                    TensorKind::LinearBias(lin),
                    Some(i),
                ));
            }
        }
        norm(&mut plan, BlockNorm::PostFeedforward);
    }
    plan.push(entry(FINAL_NORM.into(), vec![d], TensorKind::Norm, None));
    if !c.tie_word_embeddings {
        plan.push(entry(LM_HEAD.into(), vec![v, d], TensorKind::LmHead, None));
    }
    plan
}

/// One adaptable linear of a decoder: its HF module name, block, kind and `(d_in, d_out)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearSpec {
    /// HF module name (`model.layers.3.self_attn.q_proj`).
    pub name: String,
    /// Block index.
    pub layer: usize,
    /// Which linear of the block.
    pub linear: BlockLinear,
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
}

/// Every adaptable linear of a decoder with config `c`, block by block in HF order.
pub fn adaptable_linears(c: &DecoderConfig) -> Vec<LinearSpec> {
    (0..c.num_layers)
        .flat_map(|layer| {
            BlockLinear::ALL.into_iter().map(move |linear| {
                let (d_in, d_out) = linear.shape(c);
                LinearSpec {
                    name: module_name(layer, linear),
                    layer,
                    linear,
                    d_in,
                    d_out,
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for lin in BlockLinear::ALL {
            let n = module_name(7, lin);
            assert_eq!(parse_module_name(&n), Some((7, lin)));
            assert!(n.ends_with(lin.target_name()));
            assert_eq!(layer_index(&n), Some(7));
        }
        assert_eq!(parse_module_name("model.layers.x.mlp.up_proj"), None);
        assert_eq!(parse_module_name("model.layers.1.mlp.act"), None);
        assert_eq!(layer_index("lm_head.weight"), None);
    }

    #[test]
    fn plan_matches_smollm2_shapes_and_counts() {
        let mut c = DecoderConfig::tiny(100);
        c.num_layers = 3;
        let plan = decoder_tensor_plan(&c);
        // embedding + 3 × (2 norms + 7 linears) + final norm; tied head.
        assert_eq!(plan.len(), 1 + 3 * 9 + 1);
        assert_eq!(plan[0].name, EMBED_TOKENS);
        let q = plan
            .iter()
            .find(|t| t.name == "model.layers.1.self_attn.q_proj.weight")
            .unwrap();
        assert_eq!(q.shape, vec![32, 32]);
        let k = plan
            .iter()
            .find(|t| t.name == "model.layers.1.self_attn.k_proj.weight")
            .unwrap();
        assert_eq!(k.shape, vec![16, 32]);
        c.attention_bias = true;
        c.tie_word_embeddings = false;
        let plan = decoder_tensor_plan(&c);
        assert_eq!(plan.len(), 1 + 3 * 12 + 2);
        assert_eq!(plan.last().unwrap().kind, TensorKind::LmHead);
        assert_eq!(adaptable_linears(&c).len(), 21);
    }

    #[test]
    fn gemma3_plan_has_sandwich_and_qk_norms() {
        let c = DecoderConfig::tiny_gemma3(100);
        let plan = decoder_tensor_plan(&c);
        // embedding + 2 × (7 linears + 6 norms) + final norm; tied head.
        assert_eq!(plan.len(), 1 + 2 * 13 + 1);
        let q_norm = plan
            .iter()
            .find(|t| t.name == "model.layers.1.self_attn.q_norm.weight")
            .unwrap();
        assert_eq!(q_norm.shape, vec![c.head_dim]);
        assert!(
            plan.iter()
                .any(|t| t.name == "model.layers.0.post_feedforward_layernorm.weight")
        );
        // The same adapter targets as Llama.
        assert_eq!(
            adaptable_linears(&c),
            adaptable_linears(&DecoderConfig::tiny(100))
        );
        assert_eq!(block_norms(&DecoderConfig::tiny(100)).count(), 2);
    }
}
