//! [`Trainable`]: what the trainer can fine-tune. Host-side parameters (one flat `f32` vector
//! that AdamW updates and checkpoints store) that enter a decoder through the adapter seam as
//! gradient-tracked leaves, and the [`ExpertMix`] the forward uses. Implemented by
//! [`LoraWeights`](super::LoraWeights) (plain LoRA) and by moe-router's mixtures (routers, and
//! optionally the experts), so both train with the same loop, checkpoints and reports.

use burn::tensor::{Device, Tensor};

use super::data::Batch;
use super::lora::LoraSlot;
use crate::model::{Decoder, ExpertMix};

/// Parameters the trainer can fine-tune (see the module docs).
pub trait Trainable: Clone {
    /// All trainable values, flat, in a fixed order.
    fn values(&self) -> &[f32];

    /// The values, mutably (the optimiser updates them in place).
    fn values_mut(&mut self) -> &mut [f32];

    /// The layout of [`values`](Self::values): one slot per tensor group, in order. Two sets
    /// with equal slots can exchange values (checkpoints and warm starts are checked with it).
    fn slots(&self) -> Vec<LoraSlot>;

    /// The mix every forward pass uses (plain LoRA: `Static([1.0])`; a mixture: `Routed`).
    fn mix(&self) -> ExpertMix;

    /// Puts the values into `decoder` for inference (no gradients).
    fn attach(&self, decoder: &mut Decoder, device: &Device);

    /// Puts the values into `decoder` on an autodiff `device` as fresh gradient-tracked leaves
    /// (with dropout seeded from `dropout_seed` where the parameters use dropout). Returns the
    /// leaves in the order of [`values`](Self::values), for [`gather_grads`].
    fn attach_for_training(
        &self,
        decoder: &mut Decoder,
        device: &Device,
        dropout_seed: u64,
    ) -> Vec<Tensor<2>>;

    /// An extra loss term computed after the forward pass of a training micro-batch (e.g. a
    /// router balance loss, from statistics the forward recorded), already multiplied by its
    /// coefficient; `None` adds nothing. `batch` is the micro-batch just forwarded on the
    /// autodiff `device`; its [`Batch::token_weights`] (1 for real tokens, 0 for padding) let
    /// per-token terms leave padding out.
    ///
    /// # Shapes
    /// - returns `[1]`
    fn aux_loss(&self, _decoder: &Decoder, _batch: &Batch, _device: &Device) -> Option<Tensor<1>> {
        None
    }
}

/// Reads the gradients of `leaves` into one flat vector in leaf order (zeros where a leaf got
/// no gradient), the layout of [`Trainable::values`].
pub fn gather_grads(leaves: &[Tensor<2>], grads: &burn::tensor::Gradients) -> Vec<f32> {
    let mut out = Vec::new();
    for leaf in leaves {
        let expected: usize = leaf.dims().iter().product();
        match leaf.grad(grads) {
            Some(g) => {
                let v = g
                    .into_data()
                    .try_into_vec::<f32>()
                    .expect("gradients are f32");
                debug_assert_eq!(v.len(), expected);
                out.extend(v);
            }
            None => out.extend(std::iter::repeat_n(0.0, expected)),
        }
    }
    out
}
