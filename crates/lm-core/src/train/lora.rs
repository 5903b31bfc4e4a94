//! The trainable LoRA weights, kept on the host as one flat vector so the optimiser, the
//! checkpoints and the export see a single, backend-independent buffer.
//!
//! Layout per module (burn layout, the transpose of PEFT's): `a: [d_in, r]` then
//! `b: [r, d_out]`; PEFT's `lora_A = aᵀ` (`[r, d_in]`) and `lora_B = bᵀ` (`[d_out, r]`).
//! Initialisation is PEFT's default: `A` Kaiming-uniform with `a = √5`, i.e. uniform in
//! `±1/√d_in`, and `B = 0`, so the adapted model starts equal to the base.

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::config::LoraTrainConfig;
use super::trainable::Trainable;
use crate::error::{LmError, Result};
use crate::model::{Decoder, ExpertMix, ExpertSet, HostFactors, LoraDropout, attach_expert_sets};

/// Where one module's factors live in the flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraSlot {
    /// HF module name, e.g. `model.layers.3.self_attn.q_proj`.
    pub name: String,
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// Offset of `a` (`d_in · r` values); `b` follows (`r · d_out` values).
    pub offset: usize,
}

/// LoRA factors of every target module of a decoder, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraWeights {
    /// The adapter's hyper-parameters (rank, alpha, targets, ...).
    pub config: LoraTrainConfig,
    /// One slot per adapted module, in the decoder's module order.
    pub slots: Vec<LoraSlot>,
    /// All factors, concatenated.
    pub values: Vec<f32>,
}

impl LoraWeights {
    /// Fresh factors for every target module of `decoder` (PEFT's default initialisation).
    pub fn init(decoder: &Decoder, config: &LoraTrainConfig, seed: u64) -> Result<Self> {
        if config.r == 0 {
            return Err(LmError::ZeroRank);
        }
        let r = config.r;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut slots = Vec::new();
        let mut values = Vec::new();
        for (name, lin) in decoder.adapted_linears() {
            if !config.target_rule().matches(&name) {
                continue;
            }
            let (d_in, d_out) = (lin.d_in(), lin.d_out());
            let bound = 1.0 / (d_in as f32).sqrt();
            slots.push(LoraSlot {
                name,
                d_in,
                d_out,
                offset: values.len(),
            });
            values.extend((0..d_in * r).map(|_| rng.random_range(-bound..bound)));
            values.extend(std::iter::repeat_n(0.0, r * d_out));
        }
        if slots.is_empty() {
            return Err(LmError::NoTargetModule {
                targets: config.target_modules.clone(),
                layers: config.layers.clone(),
                adaptable: crate::model::layout::BlockLinear::ALL
                    .iter()
                    .map(|l| l.target_name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(Self {
            config: config.clone(),
            slots,
            values,
        })
    }

    /// Number of trainable values.
    pub fn num_params(&self) -> usize {
        self.values.len()
    }

    /// The `a` factor of a slot, `[d_in, r]` row-major.
    pub fn a(&self, slot: &LoraSlot) -> &[f32] {
        &self.values[slot.offset..slot.offset + slot.d_in * self.config.r]
    }

    /// The `b` factor of a slot, `[r, d_out]` row-major.
    pub fn b(&self, slot: &LoraSlot) -> &[f32] {
        let start = slot.offset + slot.d_in * self.config.r;
        &self.values[start..start + self.config.r * slot.d_out]
    }

    /// Puts the factors into the decoder's adapted layers as a one-expert set on `device`
    /// (replacing any experts there), for inference.
    pub fn attach(&self, decoder: &mut Decoder, device: &Device) {
        self.attach_impl(decoder, device, None);
    }

    /// Like [`attach`](Self::attach) on an autodiff device, with every factor a fresh
    /// gradient-tracked leaf and LoRA dropout seeded from `dropout_seed` (one stream per
    /// module). Returns the leaves (slot order: `a`, `b`, `a`, `b`, ...) to read gradients from.
    pub fn attach_for_training(
        &self,
        decoder: &mut Decoder,
        device: &Device,
        dropout_seed: u64,
    ) -> Vec<Tensor<2>> {
        self.attach_impl(decoder, device, Some(dropout_seed))
    }

    fn attach_impl(
        &self,
        decoder: &mut Decoder,
        device: &Device,
        dropout_seed: Option<u64>,
    ) -> Vec<Tensor<2>> {
        let track = dropout_seed.is_some();
        let mut leaves = Vec::new();
        let mut sets = Vec::with_capacity(self.slots.len());
        for (k, slot) in self.slots.iter().enumerate() {
            let factors = self.factors(slot);
            let mut set =
                ExpertSet::from_host(&slot.name, slot.d_in, slot.d_out, &[Some(&factors)], device)
                    .expect("slots were laid out for this rank and these widths");
            if track {
                let (a, b) = (set.a.val().require_grad(), set.b.val().require_grad());
                leaves.push(a.clone());
                leaves.push(b.clone());
                (set.a, set.b) = (Param::from_tensor(a), Param::from_tensor(b));
            }
            set.dropout = dropout_seed
                .filter(|_| self.config.dropout > 0.0)
                .map(|seed| LoraDropout {
                    p: self.config.dropout as f32,
                    seed: seed ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                });
            sets.push((slot.name.clone(), set));
        }
        attach_expert_sets(decoder, sets)
            .expect("slots were taken from this decoder's module list");
        leaves
    }

    /// One slot's factors as the seam's [`HostFactors`] (rank and scale of this config).
    pub fn factors(&self, slot: &LoraSlot) -> HostFactors {
        HostFactors {
            a: self.a(slot).to_vec(),
            b: self.b(slot).to_vec(),
            rank: self.config.r,
            scale: self.config.scale(),
        }
    }

    /// Weights for `decoder` and `config` laid out exactly as [`init`](Self::init) lays them
    /// out (the decoder's module order, which the trainer's warm start and checkpoints rely on),
    /// with each module's factors taken from `factors(name)`: `(a [d_in, r], b [r, d_out])` in
    /// burn layout. This is how an adapter from anywhere (a PEFT directory, an earlier round)
    /// becomes the starting point of training.
    ///
    /// # Errors
    /// [`LmError::ExpertFactors`] when a targeted module has no factors or factors of another
    /// size, or when `factors` knows modules the config does not target (`extra` lists them).
    pub fn from_named_factors(
        decoder: &Decoder,
        config: &LoraTrainConfig,
        factors: impl Fn(&str) -> Option<(Vec<f32>, Vec<f32>)>,
        extra: &[String],
    ) -> Result<Self> {
        let mut weights = Self::init(decoder, config, 0)?;
        if let Some(name) = extra
            .iter()
            .find(|n| !weights.slots.iter().any(|s| &s.name == *n))
        {
            return Err(LmError::ExpertFactors {
                module: name.clone(),
                detail: format!(
                    "the adapter adapts this module but the training config (targets {:?}, layers {:?}) does not; train with the adapter's own targets",
                    config.target_modules, config.layers
                ),
            });
        }
        let r = config.r;
        for slot in &weights.slots {
            let (a, b) = factors(&slot.name).ok_or_else(|| LmError::ExpertFactors {
                module: slot.name.clone(),
                detail: "the training config adapts this module but the adapter has no factors for it; train with the adapter's own targets".into(),
            })?;
            if a.len() != slot.d_in * r || b.len() != r * slot.d_out {
                return Err(LmError::ExpertFactors {
                    module: slot.name.clone(),
                    detail: format!(
                        "expected rank {r} factors ({} and {} values), found {} and {}; warm-start with the adapter's own rank",
                        slot.d_in * r,
                        r * slot.d_out,
                        a.len(),
                        b.len()
                    ),
                });
            }
            let start = slot.offset;
            weights.values[start..start + a.len()].copy_from_slice(&a);
            weights.values[start + a.len()..start + a.len() + b.len()].copy_from_slice(&b);
        }
        Ok(weights)
    }
}

impl Trainable for LoraWeights {
    fn values(&self) -> &[f32] {
        &self.values
    }

    fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }

    fn slots(&self) -> Vec<LoraSlot> {
        self.slots.clone()
    }

    fn mix(&self) -> ExpertMix {
        ExpertMix::Static(vec![1.0])
    }

    fn attach(&self, decoder: &mut Decoder, device: &Device) {
        LoraWeights::attach(self, decoder, device);
    }

    fn attach_for_training(
        &self,
        decoder: &mut Decoder,
        device: &Device,
        dropout_seed: u64,
    ) -> Vec<Tensor<2>> {
        LoraWeights::attach_for_training(self, decoder, device, dropout_seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::tiny_language_model;

    #[test]
    fn init_targets_the_named_modules_with_zero_b() {
        let m = tiny_language_model(3, &Device::default());
        let cfg = LoraTrainConfig::new().with_r(4);
        let w = LoraWeights::init(&m.decoder, &cfg, 1).unwrap();
        assert!(!w.slots.is_empty());
        assert!(
            w.slots
                .iter()
                .all(|s| s.name.ends_with("q_proj") || s.name.ends_with("v_proj"))
        );
        for s in &w.slots {
            let bound = 1.0 / (s.d_in as f32).sqrt();
            assert!(w.a(s).iter().all(|x| x.abs() <= bound));
            assert!(w.a(s).iter().any(|x| *x != 0.0));
            assert!(w.b(s).iter().all(|x| *x == 0.0));
        }
        let only_layer0 = LoraTrainConfig::new().with_layers(Some(vec![0]));
        let w0 = LoraWeights::init(&m.decoder, &only_layer0, 1).unwrap();
        assert!(
            w0.slots
                .iter()
                .all(|s| s.name.starts_with("model.layers.0."))
        );
    }

    #[test]
    fn unknown_targets_and_rank_zero_are_refused() {
        let m = tiny_language_model(3, &Device::default());
        let bad = LoraTrainConfig::new().with_target_modules(vec!["lm_head".into()]);
        let err = LoraWeights::init(&m.decoder, &bad, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("q_proj"), "{err}");
        assert!(LoraWeights::init(&m.decoder, &LoraTrainConfig::new().with_r(0), 1).is_err());
    }
}
