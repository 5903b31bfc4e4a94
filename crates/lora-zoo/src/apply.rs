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

use lm_core::model::{Decoder, ExpertSet, HostFactors, attach_expert_sets};

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
    // Build every expert set first, so that an error leaves the decoder untouched.
    let mut sets = Vec::with_capacity(modules.len());
    let mut report = AttachReport {
        experts: adapters.len(),
        ..Default::default()
    };
    for &name in &modules {
        let layer = target_layer(decoder, name)?;
        let (d_in, d_out) = (layer.d_in(), layer.d_out());
        let mut factors = Vec::with_capacity(adapters.len());
        for (ei, adapter) in adapters.iter().enumerate() {
            let Some(m) = adapter.modules.get(name) else {
                factors.push(None);
                continue;
            };
            if m.d_in() != d_in {
                return Err(LoraError::ShapeMismatch {
                    what: format!("adapter {ei} module {name} lora_A"),
                    expected: format!(
                        "[r, {d_in}] ({d_in} = the base layer's input width; the adapter was made for another base model?)"
                    ),
                    found: vec![m.rank(), m.d_in()],
                });
            }
            if m.d_out() != d_out {
                return Err(LoraError::ShapeMismatch {
                    what: format!("adapter {ei} module {name} lora_B"),
                    expected: format!(
                        "[{d_out}, r] ({d_out} = the base layer's output width; the adapter was made for another base model?)"
                    ),
                    found: vec![m.d_out(), m.rank()],
                });
            }
            factors.push(Some(m.host_factors()));
        }
        let refs: Vec<Option<&HostFactors>> = factors.iter().map(Option::as_ref).collect();
        let set = ExpertSet::from_host(name, d_in, d_out, &refs, &device)?;
        report.ranks.push((name.clone(), set.rank));
        report.modules.push(name.clone());
        sets.push((name.clone(), set));
    }
    // Expert `e` means adapter `e` in every layer: whatever was attached before is dropped.
    attach_expert_sets(decoder, sets)?;
    Ok(report)
}

/// Removes every attached expert (back to the base model).
pub fn detach_all(decoder: &mut Decoder) {
    lm_core::model::detach_experts(decoder);
}
