//! The SwiGLU gate `silu(gate) ⊙ up` in one vectorised pass, with its own backward on the
//! autodiff device.
//!
//! burn computes it as `silu` (scalar `exp` per value) then `mul`: two passes over the
//! `[tokens, d_ff]` activations and a scalar transcendental. Here one pass reads `gate` and
//! `up` and writes the product ([`vecmath::silu_mul`]). On the autodiff device over flex the
//! backward is one pass too: `d_up = grad · silu(gate)`,
//! `d_gate = grad · up · σ(gate) · (1 + gate · (1 − σ(gate)))`
//! ([`vecmath::swiglu_backward`]), with `gate` and `up` kept for it (burn's composition keeps
//! the same two tensors plus `silu(gate)`).

use burn::tensor::Tensor;
use burn::tensor::activation::silu;

#[cfg(feature = "flex")]
use super::vecmath;

/// `silu(gate) ⊙ up`.
///
/// # Shapes
/// - `gate`, `up`: `[..., d]` (the same shape) -> `[..., d]`
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    assert_eq!(gate.dims(), up.dims(), "swiglu: gate and up shapes differ");
    #[cfg(feature = "flex")]
    {
        if let (Some(g), Some(u)) = (super::flex::plain_f32(&gate), super::flex::plain_f32(&up)) {
            let out = forward(&g, &u);
            return super::flex::wrap(out, gate.dims());
        }
        if let Some(out) = autodiff::swiglu(&gate, &up) {
            return out;
        }
    }
    reference(gate, up)
}

/// The generic composition of burn ops: the fallback off flex, and the tests' reference.
///
/// # Shapes
/// - `gate`, `up`: `[..., d]` -> `[..., d]`
pub fn reference<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    silu(gate) * up
}

#[cfg(feature = "flex")]
fn forward(
    gate: &burn::backend::flex::FlexTensor,
    up: &burn::backend::flex::FlexTensor,
) -> Vec<f32> {
    use super::flex::{for_rows, values};
    let (g, u) = (values(gate), values(up));
    let mut out = vec![0f32; g.len()];
    for_rows([g, u], &mut out, 1, |[g, u], o| vecmath::silu_mul(g, u, o));
    out
}

#[cfg(feature = "flex")]
mod autodiff {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::FlexTensor;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{DType, Tensor};

    use super::super::flex::{contiguous, flex_tensor, values};
    use super::super::vecmath;

    #[derive(Debug)]
    struct SwiGluBackward;

    impl Backward<Flex, 2> for SwiGluBackward {
        /// `gate` and `up`, contiguous, and the output shape.
        type State = (FlexTensor, FlexTensor, Vec<usize>);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let (gate, up, shape) = ops.state;
            let grad = contiguous(grads.consume::<Flex>(&ops.node));
            let (g, u, dy) = (values(&gate), values(&up), values(&grad));
            let n = g.len();
            let mut d_gate = vec![0f32; n];
            let mut d_up = vec![0f32; n];
            backward_into(g, u, dy, &mut d_gate, &mut d_up);
            let [parent_gate, parent_up] = ops.parents;
            let as_tensor = |v: Vec<f32>| {
                FlexTensor::from_data(burn::tensor::TensorData::new(v, shape.clone()))
            };
            if let Some(node) = parent_gate {
                grads.register::<Flex>(node.id, as_tensor(d_gate));
            }
            if let Some(node) = parent_up {
                grads.register::<Flex>(node.id, as_tensor(d_up));
            }
        }
    }

    /// Both gradients, in parallel over chunks.
    fn backward_into(g: &[f32], u: &[f32], dy: &[f32], d_gate: &mut [f32], d_up: &mut [f32]) {
        use rayon::prelude::*;
        let n = g.len();
        if n < super::super::PARALLEL_MIN {
            vecmath::swiglu_backward(g, u, dy, d_gate, d_up);
            return;
        }
        let chunk = n.div_ceil(rayon::current_num_threads().max(1) * 4);
        d_gate
            .par_chunks_mut(chunk)
            .zip(d_up.par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(i, (dg, du))| {
                let r = i * chunk..i * chunk + dg.len();
                vecmath::swiglu_backward(&g[r.clone()], &u[r.clone()], &dy[r], dg, du);
            });
    }

    /// The tracked SwiGLU on the autodiff device over flex (burn's default checkpointing);
    /// `None` on any other device.
    pub(super) fn swiglu<const D: usize>(gate: &Tensor<D>, up: &Tensor<D>) -> Option<Tensor<D>> {
        let device = gate.device();
        if !super::super::enabled_kernel("swiglu_backward")
            || !device.is_autodiff()
            || gate.dtype() != DType::F32
            || up.dtype() != DType::F32
        {
            return None;
        }
        let g = gate.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        let u = up.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        let gp = contiguous(g.primitive().clone());
        let up_p = contiguous(u.primitive().clone());
        let out = super::forward(&gp, &up_p);
        let shape = gate.dims().to_vec();
        let out = flex_tensor(out, gate.dims());
        let tensor = match SwiGluBackward
            .prepare::<burn::backend::autodiff::checkpoint::strategy::NoCheckpointing>([
                g.node(),
                u.node(),
            ])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((gp, up_p, shape), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        Some(Tensor::from_primitive::<Autodiff<Flex>>(tensor))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tensor, TensorData};
    use proptest::prelude::*;

    fn assert_close(a: TensorData, b: TensorData) {
        crate::testing::assert_data_close(a, b, 1e-5, 1e-5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn fused_forward_equals_burn_reference(b in 1usize..4, s in 1usize..40, d in 1usize..300) {
            let dev = Device::flex();
            let gate = Tensor::<3>::random([b, s, d], Distribution::Normal(0.0, 4.0), &dev);
            let up = Tensor::<3>::random([b, s, d], Distribution::Normal(0.0, 1.0), &dev);
            let fused = swiglu(gate.clone(), up.clone()).into_data();
            assert_close(fused, reference(gate, up).into_data());
        }

        #[test]
        fn fused_backward_equals_burn_reference(s in 1usize..30, d in 1usize..200) {
            let dev = Device::flex().autodiff();
            let gate = Tensor::<2>::random([s, d], Distribution::Normal(0.0, 3.0), &dev).require_grad();
            let up = Tensor::<2>::random([s, d], Distribution::Normal(0.0, 1.0), &dev).require_grad();
            let w = Tensor::<2>::random([s, d], Distribution::Normal(0.0, 1.0), &dev);
            let grads = (swiglu(gate.clone(), up.clone()) * w.clone()).sum().backward();
            let (fg, fu) = (gate.grad(&grads).unwrap(), up.grad(&grads).unwrap());
            let grads = (reference(gate.clone(), up.clone()) * w).sum().backward();
            let (rg, ru) = (gate.grad(&grads).unwrap(), up.grad(&grads).unwrap());
            assert_close(fg.into_data(), rg.into_data());
            assert_close(fu.into_data(), ru.into_data());
        }
    }

    #[test]
    fn a_strided_view_is_read_in_logical_order() {
        let dev = Device::flex();
        let gate = Tensor::<3>::random([2, 5, 3], Distribution::Normal(0.0, 2.0), &dev);
        let up = Tensor::<3>::random([2, 3, 5], Distribution::Normal(0.0, 1.0), &dev);
        let (gt, ut) = (gate.swap_dims(1, 2), up);
        let fused = swiglu(gt.clone(), ut.clone()).into_data();
        assert_close(fused, reference(gt, ut).into_data());
    }

    #[test]
    fn untracked_autodiff_inputs_give_no_gradient_and_the_same_values() {
        let dev = Device::flex().autodiff();
        let gate = Tensor::<2>::random([4, 9], Distribution::Normal(0.0, 2.0), &dev);
        let up = Tensor::<2>::random([4, 9], Distribution::Normal(0.0, 1.0), &dev);
        let fused = swiglu(gate.clone(), up.clone()).into_data();
        assert_close(fused, reference(gate, up).into_data());
    }
}
