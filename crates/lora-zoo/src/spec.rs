//! [`BaseModelSpec`]: the linear layers of a base model, by name, with their shapes. The lead fills it
//! from lm-core's model; [`BaseModelSpec::llama`] builds it for the Llama family (SmolLM2, Llama 2/3,
//! Mistral without sliding-window specifics).

use std::collections::BTreeMap;

/// The adaptable linear layers of a base model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseModelSpec {
    /// A human-readable name, used in error messages (`"SmolLM2-135M"`).
    pub name: String,
    /// Module name (`model.layers.3.self_attn.q_proj`) to `(d_in, d_out)`.
    pub modules: BTreeMap<String, (usize, usize)>,
}

impl BaseModelSpec {
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
        let q = n_heads * head_dim;
        let kv = n_kv_heads * head_dim;
        let mut modules = BTreeMap::new();
        for l in 0..n_layers {
            let p = format!("model.layers.{l}");
            for (m, shape) in [
                ("self_attn.q_proj", (hidden, q)),
                ("self_attn.k_proj", (hidden, kv)),
                ("self_attn.v_proj", (hidden, kv)),
                ("self_attn.o_proj", (q, hidden)),
                ("mlp.gate_proj", (hidden, intermediate)),
                ("mlp.up_proj", (hidden, intermediate)),
                ("mlp.down_proj", (intermediate, hidden)),
            ] {
                modules.insert(format!("{p}.{m}"), shape);
            }
        }
        BaseModelSpec {
            name: name.into(),
            modules,
        }
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
