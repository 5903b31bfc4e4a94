//! Applying adapters at run time, unmerged, through lm-core's [`AdaptedLinear`] seam.
//!
//! [`attach_adapters`] puts `E` adapters side by side into every targeted linear of a decoder
//! (expert `e` = adapter `e`; modules an adapter does not target get zero factors, which is
//! exact). Then an [`ExpertMix`] picks how they are used for a forward pass:
//!
//! - one adapter: `ExpertMix::Static(vec![1.0])` — the same output as PEFT's unmerged model;
//! - several with weights: `ExpertMix::Static(weights)` — `W + Σ_e w_e s_e B_e A_e`;
//! - a bank in shared batches: `ExpertMix::PerRow(indices)` — row `i` uses adapter `idx[i]`.
//!
//! PEFT stores `lora_A: [r, d_in]` and `lora_B: [d_out, r]` with `ΔW = s · B A` acting as
//! `x ΔWᵀ`; lm-core's layout is `A: [d_in, E·r]`, `B: [E·r, d_out]`, so expert `e`'s blocks are
//! `lora_Aᵀ` and `lora_Bᵀ`.
//!
//! [`AdaptedLinear`]: lm_core::model::AdaptedLinear
//! [`ExpertMix`]: lm_core::model::ExpertMix

use std::collections::BTreeSet;

use lm_core::burn::module::Param;
use lm_core::burn::tensor::{Tensor, TensorData};
use lm_core::model::{Decoder, ExpertSet};

use crate::adapter::LoraAdapter;
use crate::error::{LoraError, Result};

/// What [`attach_adapters`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachReport {
    /// Modules that received experts, sorted.
    pub modules: Vec<String>,
    /// Number of experts per module (the number of adapters).
    pub experts: usize,
    /// The common (zero-padded) rank per module, as `(module, rank)`.
    pub ranks: Vec<(String, usize)>,
}

/// The decoder's linear layer an adapter module `name` targets (HF name, e.g.
/// `model.layers.3.self_attn.q_proj`), or `UnknownTargetModule` naming the base.
pub(crate) fn target_layer<'a>(
    decoder: &'a mut Decoder,
    name: &str,
) -> Result<&'a mut lm_core::model::AdaptedLinear> {
    let base = format!("{:?} decoder", decoder.config.arch);
    decoder
        .adapted_linear_mut(name)
        .ok_or_else(|| LoraError::UnknownTargetModule {
            module: name.to_string(),
            base,
        })
}

/// Attaches `adapters` as experts `0..E` of every linear they target; experts attached before
/// (to any layer) are removed first. Fails, changing nothing, when a module is unknown to the decoder or its
/// factors do not fit the layer.
pub fn attach_adapters(decoder: &mut Decoder, adapters: &[&LoraAdapter]) -> Result<AttachReport> {
    if adapters.is_empty() {
        return Err(LoraError::InvalidCombine(
            "attach_adapters needs at least one adapter".into(),
        ));
    }
    let modules: BTreeSet<&String> = adapters.iter().flat_map(|a| a.modules.keys()).collect();
    let device = decoder.embed_tokens.weight.val().device();
    let e = adapters.len();
    // Build every expert set first, so that an error leaves the decoder untouched.
    let mut built = Vec::with_capacity(modules.len());
    for &name in &modules {
        let layer = target_layer(decoder, name)?;
        let (d_in, d_out) = (layer.d_in(), layer.d_out());
        let rank = adapters
            .iter()
            .filter_map(|a| a.modules.get(name))
            .map(|m| m.rank())
            .max()
            .unwrap_or(0);
        let mut a_cat = vec![0f32; d_in * e * rank];
        let mut b_cat = vec![0f32; e * rank * d_out];
        let mut scales = vec![0f32; e];
        for (ei, adapter) in adapters.iter().enumerate() {
            let Some(m) = adapter.modules.get(name) else {
                continue;
            };
            if m.d_in() != d_in || m.d_out() != d_out {
                return Err(LoraError::ShapeMismatch {
                    what: format!("adapter {ei} module {name}"),
                    expected: format!(
                        "lora_A [r, {d_in}] and lora_B [{d_out}, r] (the base layer)"
                    ),
                    found: vec![m.d_out(), m.rank(), m.d_in()],
                });
            }
            scales[ei] = m.scale;
            for k in 0..m.rank() {
                for i in 0..d_in {
                    a_cat[i * e * rank + ei * rank + k] = m.a[[k, i]];
                }
                for o in 0..d_out {
                    b_cat[(ei * rank + k) * d_out + o] = m.b[[o, k]];
                }
            }
        }
        built.push((
            name.clone(),
            rank,
            ExpertSet {
                a: Param::from_tensor(Tensor::from_data(
                    TensorData::new(a_cat, [d_in, e * rank]),
                    &device,
                )),
                b: Param::from_tensor(Tensor::from_data(
                    TensorData::new(b_cat, [e * rank, d_out]),
                    &device,
                )),
                router: None,
                scales,
                rank,
                dropout: None,
            },
        ));
    }
    let mut report = AttachReport {
        experts: e,
        ..Default::default()
    };
    // Expert `e` must mean adapter `e` in every layer: drop whatever was attached before.
    detach_all(decoder);
    for (name, rank, set) in built {
        decoder
            .adapted_linear_mut(&name)
            .expect("checked above")
            .experts = Some(set);
        report.ranks.push((name.clone(), rank));
        report.modules.push(name);
    }
    Ok(report)
}

/// Removes every attached expert (back to the base model).
pub fn detach_all(decoder: &mut Decoder) {
    let names: Vec<String> = decoder
        .adapted_linears()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for name in names {
        if let Some(layer) = decoder.adapted_linear_mut(&name) {
            layer.experts = None;
        }
    }
}
