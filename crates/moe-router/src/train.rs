//! Fine-tuning a mixture (Rocket stage 7) with the project's trainer: [`MoeTrainable`] makes a
//! built [`Moe`]'s routers — and, unless `router_only`, its experts' factors — the
//! [`Trainable`] parameters of `lm_core::train::LoraTrainer::fit_trainable`, so a mixture trains
//! with the same data convention (response-only loss, packed batches), host AdamW, schedule and
//! exact-resume checkpoints as a plain LoRA. The balance and z-losses of the config are added to
//! the task loss from the router logits each training forward records.
//!
//! Layout of the values, module by module in [`Moe::modules`] order: the router `W_g`
//! (`[d_in, E]`, burn layout), then — when experts train — `A` (`[d_in, E·r]`) and `B`
//! (`[E·r, d_out]`) of the module's expert set (ranks zero-padded; the padding and the experts
//! a module lacks have zero scale, so they get no gradient and stay zero).
//!
//! ```no_run
//! # fn demo(model: &mut lm_core::model::LanguageModel, moe: &moe_router::Moe,
//! #         data: &[lm_core::train::TrainExample]) -> Result<(), Box<dyn std::error::Error>> {
//! use lm_core::train::{LoraTrainConfig, LoraTrainer, TrainConfig};
//! use moe_router::train::MoeTrainable;
//! let params = MoeTrainable::new(moe, &model.decoder, false)?;
//! let config = TrainConfig::new(LoraTrainConfig::new()).with_lr(5e-5);
//! let (trained, report) = LoraTrainer::new(model, config).fit_trainable(params, data, &[])?;
//! trained.apply(&mut model.decoder)?;
//! moe.save(&model.decoder, "out/moe-trained".as_ref())?;
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};

use lm_core::burn::module::Param;
use lm_core::burn::tensor::{Device, Tensor, TensorData};
use lm_core::model::adapted_linear::RouteRecorder;
use lm_core::model::{Decoder, ExpertMix};
use lm_core::train::data::Batch;
use lm_core::train::{LoraSlot, Trainable};

use crate::error::{MoeError, Result};
use crate::moe::{Moe, RouteRecorders};

/// Where one module's tensors sit in the flat values.
#[derive(Debug, Clone, PartialEq)]
struct ModuleLayout {
    name: String,
    d_in: usize,
    d_out: usize,
    /// Columns of `A` (= rows of `B`): `E · r`.
    cols: usize,
    /// Offset of the router `[d_in, E]`.
    router: usize,
    /// Offset of `A` then `B`, when experts train.
    experts: Option<usize>,
}

/// A mixture's trainable parameters (see the module docs).
#[derive(Debug, Clone)]
pub struct MoeTrainable {
    moe: Moe,
    layout: Vec<ModuleLayout>,
    values: Vec<f32>,
    router_only: bool,
    /// Recorders installed by the last `attach_for_training`, read by `aux_loss`.
    recorders: Arc<Mutex<Option<RouteRecorders>>>,
}

fn host(t: Tensor<2>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

impl MoeTrainable {
    /// The parameters of `moe` as they are now in `decoder` (built or loaded on it): routers
    /// always, experts too unless `router_only` (the authors' `train_router_only`).
    ///
    /// # Errors
    /// [`MoeError::NotAttached`] when a module of the mixture has no experts or router in
    /// `decoder`.
    pub fn new(moe: &Moe, decoder: &Decoder, router_only: bool) -> Result<Self> {
        let mut layout = Vec::with_capacity(moe.modules.len());
        let mut values = Vec::new();
        let linears = decoder.adapted_linears();
        for name in &moe.modules {
            let not_attached = || MoeError::NotAttached {
                module: name.clone(),
            };
            let lin = linears
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, l)| *l)
                .ok_or_else(not_attached)?;
            let set = lin.experts.as_ref().ok_or_else(not_attached)?;
            let router = set.router.as_ref().ok_or_else(not_attached)?;
            let (d_in, d_out) = (lin.d_in(), lin.d_out());
            let cols = set.a.val().dims()[1];
            let router_at = values.len();
            values.extend(host(router.linear.weight.val()));
            let experts = (!router_only).then(|| {
                let at = values.len();
                values.extend(host(set.a.val()));
                values.extend(host(set.b.val()));
                at
            });
            layout.push(ModuleLayout {
                name: name.clone(),
                d_in,
                d_out,
                cols,
                router: router_at,
                experts,
            });
        }
        Ok(Self {
            moe: moe.clone(),
            layout,
            values,
            router_only,
            recorders: Arc::new(Mutex::new(None)),
        })
    }

    /// Whether only the routers train.
    pub fn router_only(&self) -> bool {
        self.router_only
    }

    /// Writes the (trained) values into `decoder`'s routers and experts, for inference and
    /// [`Moe::save`].
    ///
    /// # Errors
    /// [`MoeError::NotAttached`] when `decoder` does not hold the mixture.
    pub fn apply(&self, decoder: &mut Decoder) -> Result<()> {
        let device = decoder.embed_tokens.weight.val().device();
        self.put(decoder, &device, false, None)
            .map(|_| ())
            .ok_or_else(|| MoeError::NotAttached {
                module: self
                    .layout
                    .first()
                    .map(|l| l.name.clone())
                    .unwrap_or_default(),
            })
    }

    /// Puts the values into `decoder` (as gradient-tracked leaves when `track`), installing
    /// `recorders` on the routers when given. `None` when a module is missing.
    fn put(
        &self,
        decoder: &mut Decoder,
        device: &Device,
        track: bool,
        recorders: Option<&mut RouteRecorders>,
    ) -> Option<Vec<Tensor<2>>> {
        let mut leaves = Vec::new();
        let mut recorders = recorders;
        for l in &self.layout {
            let e = self.moe.experts.len();
            let tensor = |at: usize, shape: [usize; 2]| {
                let n = shape[0] * shape[1];
                let t = Tensor::<2>::from_data(
                    TensorData::new(self.values[at..at + n].to_vec(), shape),
                    device,
                );
                if track { t.require_grad() } else { t }
            };
            let set = decoder.adapted_linear_mut(&l.name)?.experts.as_mut()?;
            let w = tensor(l.router, [l.d_in, e]);
            if track {
                leaves.push(w.clone());
            }
            let router = set.router.as_mut()?;
            router.linear.weight = Param::from_tensor(w).set_require_grad(track);
            router.recorder = None;
            if let Some(recs) = recorders.as_deref_mut() {
                let rec = RouteRecorder::new(false, true);
                router.recorder = Some(rec.clone());
                recs.modules.push((l.name.clone(), rec));
            }
            if let Some(at) = l.experts {
                let a = tensor(at, [l.d_in, l.cols]);
                let b = tensor(at + l.d_in * l.cols, [l.cols, l.d_out]);
                if track {
                    leaves.push(a.clone());
                    leaves.push(b.clone());
                }
                set.a = Param::from_tensor(a).set_require_grad(track);
                set.b = Param::from_tensor(b).set_require_grad(track);
            }
        }
        Some(leaves)
    }

    fn wants_aux(&self) -> bool {
        self.moe.config.balance_loss != 0.0 || self.moe.config.z_loss != 0.0
    }
}

impl Trainable for MoeTrainable {
    fn values(&self) -> &[f32] {
        &self.values
    }

    fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }

    fn slots(&self) -> Vec<LoraSlot> {
        let e = self.moe.experts.len();
        let mut out = Vec::new();
        for l in &self.layout {
            out.push(LoraSlot {
                name: format!("{}.router", l.name),
                d_in: l.d_in,
                d_out: e,
                offset: l.router,
            });
            if let Some(at) = l.experts {
                out.push(LoraSlot {
                    name: format!("{}.experts[{}]", l.name, l.cols),
                    d_in: l.d_in,
                    d_out: l.d_out,
                    offset: at,
                });
            }
        }
        out
    }

    fn mix(&self) -> ExpertMix {
        self.moe.mix()
    }

    fn attach(&self, decoder: &mut Decoder, device: &Device) {
        self.put(decoder, device, false, None)
            .expect("the trainer's decoder holds the mixture the parameters were taken from");
    }

    fn attach_for_training(
        &self,
        decoder: &mut Decoder,
        device: &Device,
        _dropout_seed: u64,
    ) -> Vec<Tensor<2>> {
        let mut recorders = self.wants_aux().then(RouteRecorders::default);
        let leaves = self
            .put(decoder, device, true, recorders.as_mut())
            .expect("the trainer's decoder holds the mixture the parameters were taken from");
        *self.recorders.lock().expect("recorder lock") = recorders;
        leaves
    }

    fn aux_loss(&self, _decoder: &Decoder, batch: &Batch, device: &Device) -> Option<Tensor<1>> {
        let recorders = self.recorders.lock().expect("recorder lock").take()?;
        // Padding is not routed traffic: balance and z-losses average over real tokens only.
        let token_weights = Tensor::<1>::from_data(
            TensorData::new(batch.token_weights(), [batch.batch * batch.seq]),
            device,
        );
        self.moe
            .aux_losses(&recorders, Some(&token_weights))
            .map(|a| a.total)
    }
}
