//! [`BaseModelSpec`]: the linear layers of a base model, by name, with their shapes, derived from
//! lm-core's one decoder layout ([`lm_core::model::layout`]): [`BaseModelSpec::from_config`] for
//! any decoder config, [`BaseModelSpec::from_decoder`] for a loaded model, and
//! [`BaseModelSpec::llama`] as a shorthand from the Llama-family dimensions.

use std::collections::BTreeMap;

use lm_core::model::layout::adaptable_linears;
use lm_core::model::{Decoder, DecoderArch, DecoderConfig};

/// The adaptable linear layers of a base model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseModelSpec {
    /// A human-readable name, used in error messages (`"SmolLM2-135M"`).
    pub name: String,
    /// Module name (`model.layers.3.self_attn.q_proj`) to `(d_in, d_out)`.
    pub modules: BTreeMap<String, (usize, usize)>,
}

impl BaseModelSpec {
    /// The adaptable linear layers of a decoder with config `config`.
    pub fn from_config(name: impl Into<String>, config: &DecoderConfig) -> Self {
        BaseModelSpec {
            name: name.into(),
            modules: adaptable_linears(config)
                .into_iter()
                .map(|l| (l.name, (l.d_in, l.d_out)))
                .collect(),
        }
    }

    /// The adaptable linear layers of a loaded decoder.
    pub fn from_decoder(name: impl Into<String>, decoder: &Decoder) -> Self {
        Self::from_config(name, &decoder.config)
    }

    /// The linear layers of a Llama-family decoder with HF module names.
    ///
    /// # Shapes
    /// per layer `l`: `q_proj: hidden -> n_heads*head_dim`, `k_proj`/`v_proj: hidden -> n_kv_heads*head_dim`,
    /// `o_proj: n_heads*head_dim -> hidden`, `gate_proj`/`up_proj: hidden -> intermediate`,
    /// `down_proj: intermediate -> hidden`; each entry is `(d_in, d_out)`.
    pub fn llama(
        name: impl Into<String>,
        n_layers: usize,
        hidden: usize,
        intermediate: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        let config = DecoderConfig {
            arch: DecoderArch::Llama,
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_layers: n_layers,
            num_heads: n_heads,
            num_kv_heads: n_kv_heads,
            head_dim,
            ..DecoderConfig::tiny(1)
        };
        Self::from_config(name, &config)
    }

    /// SmolLM2-135M(-Instruct): 30 layers, hidden 576, intermediate 1536, 9 heads, 3 KV heads, head_dim 64.
    pub fn smollm2_135m() -> Self {
        Self::llama("SmolLM2-135M", 30, 576, 1536, 9, 3, 64)
    }

    /// `(d_in, d_out)` of a module, if it exists.
    pub fn shape(&self, module: &str) -> Option<(usize, usize)> {
        self.modules.get(module).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_shapes() {
        let s = BaseModelSpec::smollm2_135m();
        assert_eq!(s.modules.len(), 30 * 7);
        assert_eq!(s.shape("model.layers.0.self_attn.q_proj"), Some((576, 576)));
        assert_eq!(
            s.shape("model.layers.29.self_attn.v_proj"),
            Some((576, 192))
        );
        assert_eq!(s.shape("model.layers.5.mlp.down_proj"), Some((1536, 576)));
        assert_eq!(s.shape("model.layers.30.mlp.down_proj"), None);
    }
}
