//! Filling the adapter seam: LoRA factors on the host become the [`ExpertSet`]s of a decoder's
//! [`AdaptedLinear`]s. Every client goes through here: the trainer
//! ([`LoraWeights`](crate::train::LoraWeights)), lora-zoo's PEFT adapters
//! (`lora_zoo::attach_adapters`) and mixtures of experts (moe-router adds a router to the sets
//! built here). The LoRA rules written once live here too: the scale ([`lora_scale`]) and PEFT's
//! list rule for `target_modules` / `layers_to_transform` ([`TargetRule`]).
//!
//! Factors use burn's layout, the transpose of PEFT's: `a: [d_in, r]` (`= lora_Aᵀ`) and
//! `b: [r, d_out]` (`= lora_Bᵀ`), so `ΔW·x = s · x a b`.

use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};

use super::adapted_linear::{AdaptedLinear, ExpertSet};
use super::decoder::Decoder;
use super::layout;
use crate::error::{LmError, Result};

/// The LoRA scale `s` of `ΔW = s · B A`: `alpha / r`, or `alpha / √r` with rsLoRA
/// (PEFT `LoraLayer.update_layer`; rsLoRA: Kalajdzievski 2023).
pub fn lora_scale(rank: usize, alpha: f64, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    }
}

/// PEFT's rule for a list of `target_modules` plus optional `layers_to_transform`: module `name`
/// is targeted when it equals an entry or ends with `.{entry}`, and (when layers are given) its
/// block index (the number after `model.layers.`) is one of them
/// (PEFT `check_target_module_exists` with the default `layers_pattern`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRule<'a> {
    /// Module names or suffixes (`q_proj`, `self_attn.v_proj`, a full name).
    pub targets: &'a [String],
    /// Block indices to adapt; all blocks when `None`.
    pub layers: Option<&'a [usize]>,
}

impl TargetRule<'_> {
    /// Whether `name` (an HF module name) is a target.
    pub fn matches(&self, name: &str) -> bool {
        let named = self.targets.iter().any(|t| {
            name == t
                || name
                    .strip_suffix(t.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        });
        named
            && self
                .layers
                .is_none_or(|ls| layout::layer_index(name).is_some_and(|i| ls.contains(&i)))
    }
}

/// One expert's LoRA factors for one module, on the host, in burn layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFactors {
    /// Down projection `[d_in, r]`, row-major.
    pub a: Vec<f32>,
    /// Up projection `[r, d_out]`, row-major.
    pub b: Vec<f32>,
    /// Rank `r`.
    pub rank: usize,
    /// The scale `s` applied to this expert's `x a b`.
    pub scale: f32,
}

impl ExpertSet {
    /// Packs `E` experts' factors for one `d_in → d_out` module into an [`ExpertSet`]: expert
    /// `e` occupies columns `e·r..(e+1)·r` of `A` and rows `e·r..(e+1)·r` of `B`, where `r` is
    /// the largest rank (smaller ranks are zero-padded, which is exact); `None` is an expert that
    /// does not adapt this module (zero factors, scale 0). The set has no router and no dropout;
    /// its factors are not trainable (`require_grad` is off).
    ///
    /// # Shapes
    /// - each `a`: `[d_in, r_e]`, each `b`: `[r_e, d_out]` (row-major)
    /// - result: `A [d_in, E·r]`, `B [E·r, d_out]`
    ///
    /// # Errors
    /// [`LmError::ExpertFactors`] naming `module` when there are no experts, every expert is
    /// `None`, or factor lengths do not match their rank and the layer's widths.
    pub fn from_host(
        module: &str,
        d_in: usize,
        d_out: usize,
        experts: &[Option<&HostFactors>],
        device: &Device,
    ) -> Result<ExpertSet> {
        let bad = |detail: String| LmError::ExpertFactors {
            module: module.to_string(),
            detail,
        };
        let e = experts.len();
        let rank = experts.iter().flatten().map(|f| f.rank).max();
        let Some(rank) = rank.filter(|&r| r > 0) else {
            return Err(bad(format!(
                "expected at least one expert of rank >= 1 among {e}, found none"
            )));
        };
        let mut a_cat = vec![0f32; d_in * e * rank];
        let mut b_cat = vec![0f32; e * rank * d_out];
        let mut scales = vec![0f32; e];
        for (ei, f) in experts.iter().enumerate() {
            let Some(f) = f else { continue };
            if f.a.len() != d_in * f.rank || f.b.len() != f.rank * d_out {
                return Err(bad(format!(
                    "expert {ei}: expected a [{d_in}, {r}] ({}) and b [{r}, {d_out}] ({}) values for rank {r}, found {} and {}",
                    d_in * f.rank,
                    f.rank * d_out,
                    f.a.len(),
                    f.b.len(),
                    r = f.rank
                )));
            }
            scales[ei] = f.scale;
            let col0 = ei * rank;
            for i in 0..d_in {
                let dst = i * e * rank + col0;
                a_cat[dst..dst + f.rank].copy_from_slice(&f.a[i * f.rank..(i + 1) * f.rank]);
            }
            b_cat[col0 * d_out..(col0 + f.rank) * d_out].copy_from_slice(&f.b);
        }
        let frozen = |t: Tensor<2>| Param::from_tensor(t).set_require_grad(false);
        Ok(ExpertSet {
            a: frozen(Tensor::from_data(
                TensorData::new(a_cat, [d_in, e * rank]),
                device,
            )),
            b: frozen(Tensor::from_data(
                TensorData::new(b_cat, [e * rank, d_out]),
                device,
            )),
            router: None,
            scales,
            rank,
            dropout: None,
        })
    }
}

/// Puts `sets` (HF module name → expert set) into `decoder`, after removing every expert
/// attached before, so that expert `e` means the same thing in every layer. Checks every name
/// first: on error the decoder is unchanged.
///
/// # Errors
/// [`LmError::UnknownModule`] for a name that is not an adaptable linear of `decoder`;
/// [`LmError::ExpertFactors`] when a set's widths do not fit its layer or sets disagree on `E`.
pub fn attach_expert_sets(decoder: &mut Decoder, sets: Vec<(String, ExpertSet)>) -> Result<()> {
    let arch = format!("{:?}", decoder.config.arch);
    let num_experts = sets.first().map(|(_, s)| s.num_experts());
    for (name, set) in &sets {
        let layer: &AdaptedLinear = decoder
            .adapted_linears()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l)
            .ok_or_else(|| LmError::UnknownModule {
                module: name.clone(),
                arch: arch.clone(),
            })?;
        let [a_in, a_cols] = set.a.val().dims();
        let [b_rows, b_out] = set.b.val().dims();
        if a_in != layer.d_in() || b_out != layer.d_out() || a_cols != b_rows {
            return Err(LmError::ExpertFactors {
                module: name.clone(),
                detail: format!(
                    "expected A [{}, E·r] and B [E·r, {}], found A [{a_in}, {a_cols}] and B [{b_rows}, {b_out}]",
                    layer.d_in(),
                    layer.d_out()
                ),
            });
        }
        if Some(set.num_experts()) != num_experts {
            return Err(LmError::ExpertFactors {
                module: name.clone(),
                detail: format!(
                    "expected {} experts like the other modules, found {}",
                    num_experts.unwrap_or(0),
                    set.num_experts()
                ),
            });
        }
    }
    detach_experts(decoder);
    for (name, set) in sets {
        decoder
            .adapted_linear_mut(&name)
            .expect("names were checked above")
            .experts = Some(set);
    }
    Ok(())
}

/// Removes every attached expert (back to the base model).
pub fn detach_experts(decoder: &mut Decoder) {
    for layer in &mut decoder.layers {
        for lin in layout::BlockLinear::ALL {
            layer.linear_mut(lin).experts = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExpertMix;
    use crate::model::random::tiny_language_model;
    use burn::tensor::Int;

    #[test]
    fn scale_rules() {
        assert_eq!(lora_scale(8, 16.0, false), 2.0);
        assert_eq!(lora_scale(16, 16.0, true), 4.0);
    }

    #[test]
    fn target_rule_is_peft_list_rule() {
        let t = vec!["q_proj".to_string(), "mlp.up_proj".to_string()];
        let all = TargetRule {
            targets: &t,
            layers: None,
        };
        assert!(all.matches("model.layers.3.self_attn.q_proj"));
        assert!(all.matches("model.layers.0.mlp.up_proj"));
        assert!(!all.matches("model.layers.0.self_attn.xq_proj"));
        assert!(!all.matches("model.layers.0.self_attn.v_proj"));
        let layers = [0usize];
        let first = TargetRule {
            targets: &t,
            layers: Some(&layers),
        };
        assert!(first.matches("model.layers.0.self_attn.q_proj"));
        assert!(!first.matches("model.layers.1.self_attn.q_proj"));
    }

    #[test]
    fn absent_experts_and_rank_padding_change_nothing() {
        let device = Device::default();
        let mut model = tiny_language_model(5, &device);
        let name = "model.layers.1.self_attn.q_proj";
        let (d_in, d_out) = (32, 32);
        let f = |rank: usize, seed: f32, scale: f32| HostFactors {
            a: (0..d_in * rank)
                .map(|i| ((i as f32 + seed) * 0.37).sin() * 0.2)
                .collect(),
            b: (0..rank * d_out)
                .map(|i| ((i as f32 + seed) * 0.11).cos() * 0.2)
                .collect(),
            rank,
            scale,
        };
        let (f0, f1) = (f(2, 1.0, 0.5), f(4, 7.0, 2.0));
        let set = ExpertSet::from_host(name, d_in, d_out, &[Some(&f0), None, Some(&f1)], &device)
            .unwrap();
        assert_eq!((set.rank, set.num_experts()), (4, 3));
        attach_expert_sets(&mut model.decoder, vec![(name.into(), set)]).unwrap();
        let tokens =
            Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 5, 9], [1, 3]), &device);
        let mixed = model
            .decoder
            .forward(tokens.clone(), &ExpertMix::Static(vec![1.0, 3.0, 1.0]));
        // The absent expert (zero factors, scale 0) contributes nothing whatever its weight, and
        // rank padding is exact: the same as packing only the two real experts.
        let both =
            ExpertSet::from_host(name, d_in, d_out, &[Some(&f0), Some(&f1)], &device).unwrap();
        attach_expert_sets(&mut model.decoder, vec![(name.into(), both)]).unwrap();
        let same = model
            .decoder
            .forward(tokens, &ExpertMix::Static(vec![1.0, 1.0]));
        let diff: f32 = (mixed - same).abs().max().into_scalar();
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn bad_names_and_lengths_are_errors_and_leave_the_decoder_alone() {
        let device = Device::default();
        let mut model = tiny_language_model(5, &device);
        let f = HostFactors {
            a: vec![0.0; 32 * 2],
            b: vec![0.0; 2 * 32],
            rank: 2,
            scale: 1.0,
        };
        let set = |name: &str| ExpertSet::from_host(name, 32, 32, &[Some(&f)], &device).unwrap();
        attach_expert_sets(
            &mut model.decoder,
            vec![("model.layers.0.self_attn.q_proj".into(), set("q"))],
        )
        .unwrap();
        let err = attach_expert_sets(
            &mut model.decoder,
            vec![("model.layers.9.self_attn.q_proj".into(), set("q"))],
        )
        .unwrap_err();
        assert!(matches!(err, LmError::UnknownModule { .. }), "{err}");
        assert!(
            model
                .decoder
                .adapted_linear_mut("model.layers.0.self_attn.q_proj")
                .unwrap()
                .experts
                .is_some()
        );
        let short = HostFactors {
            a: vec![0.0; 5],
            ..f.clone()
        };
        let err = ExpertSet::from_host("m", 32, 32, &[Some(&short)], &device).unwrap_err();
        assert!(err.to_string().contains("expected a [32, 2]"), "{err}");
        assert!(ExpertSet::from_host("m", 32, 32, &[None], &device).is_err());
    }
}
