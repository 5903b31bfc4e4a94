//! A frozen linear layer whose backward multiplies by a contiguous `Wᵀ`.
//!
//! In LoRA training every base weight is frozen, so the only gradient a base linear passes back
//! is the input's, `dX = dY · Wᵀ`. burn-autodiff computes it with `Wᵀ` as a transposed view of
//! `W`, which gemm reads with the wrong stride: 5.95 ms against 4.63 ms with a contiguous copy
//! (512 × 1536 × 576, `examples/op_timing.rs`). This op keeps a contiguous `Wᵀ` per weight
//! (made once, on the first backward pass that needs it) and registers its own backward, which
//! multiplies by it.
//!
//! The copies live in a process-wide cache keyed by the weight's buffer and layout (views of
//! one buffer, as the fused q/k/v and gate/up weights are, share an entry). An entry holds a
//! reference to the buffer, so the buffer cannot be freed and reused while the entry exists
//! (no stale hits), and since flex copies a shared buffer before writing it, a weight changed in
//! place gets a new buffer (a miss, not a stale hit). Buffers only the cache still holds are
//! dropped whenever a new one is added, so dropping a model frees its copies at the next miss.
//!
//! Used on the autodiff device over flex when the weight and bias do not require gradients;
//! elsewhere (plain devices, GPU backends, trainable weights) it is burn's `Linear::forward`.

use burn::nn::Linear;
use burn::tensor::Tensor;

/// `x · W + b` for a linear layer whose parameters are frozen.
///
/// # Shapes
/// - `x`: `[..., d_in]` -> `[..., d_out]`
pub fn frozen_linear<const D: usize>(x: Tensor<D>, linear: &Linear) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(y) = autodiff::forward(&x, linear) {
        return y;
    }
    #[cfg(feature = "flex")]
    if let Some(y) = f16_single_row(&x, linear) {
        return y;
    }
    linear.forward(x)
}

/// flex's f16 product of a single row (`gemm`'s matrix-vector path) does not accumulate in f32:
/// on a 576-deep product its error against f32 accumulation is ~0.07, against ~0.005 from two
/// rows up, enough to flip near ties in batch-1 decoding. The row is therefore multiplied as a
/// pair (itself twice: the matrix path, f32 accumulation) and one copy kept. `None` for any
/// other dtype, device or row count.
///
/// # Shapes
/// - `x`: `[..., d_in]` with one row in all -> `[..., d_out]`
#[cfg(feature = "flex")]
fn f16_single_row<const D: usize>(x: &Tensor<D>, linear: &Linear) -> Option<Tensor<D>> {
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let device = x.device();
    if x.dtype() != burn::tensor::DType::F16
        || rows != 1
        || device.is_autodiff()
        || device != burn::tensor::Device::flex()
    {
        return None;
    }
    let row = x.clone().reshape([1, dims[D - 1]]);
    let pair = Tensor::cat(vec![row.clone(), row], 0);
    let y = linear.forward(pair).narrow(0, 0, 1);
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    Some(y.reshape(out))
}

#[cfg(feature = "flex")]
mod autodiff {
    use std::sync::Mutex;

    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::backend::ops::FloatTensorOps;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::Linear;
    use burn::tensor::{DType, Shape, Tensor};

    /// One weight buffer (held by `holder`, one of the tensors on it) and the contiguous
    /// transposes of the weights that are views of it (q/k/v and gate/up share a buffer).
    struct Buffer {
        holder: FlexTensor,
        transposes: Vec<(Layout, FlexTensor)>,
    }

    static CACHE: Mutex<Vec<Buffer>> = Mutex::new(Vec::new());

    /// The contiguous `Wᵀ` of `w` (`[d_in, d_out]` -> `[d_out, d_in]`), cached.
    pub(super) fn transposed(w: &FlexTensor) -> FlexTensor {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let ptr = w.bytes().as_ptr();
        let index = match cache.iter().position(|b| b.holder.bytes().as_ptr() == ptr) {
            Some(i) => i,
            None => {
                // Buffers only the cache still holds belong to dropped models.
                cache.retain(|b| !b.holder.is_unique());
                cache.push(Buffer {
                    holder: w.clone(),
                    transposes: Vec::new(),
                });
                cache.len() - 1
            }
        };
        let buffer = &mut cache[index];
        if let Some((_, t)) = buffer.transposes.iter().find(|(l, _)| l == w.layout()) {
            return t.clone();
        }
        let t = w.transpose(0, 1).to_contiguous();
        buffer.transposes.push((w.layout().clone(), t.clone()));
        t
    }

    /// Whether the cache holds an entry for a weight at `ptr` of `shape` (tests).
    #[cfg(test)]
    pub(super) fn holds(ptr: *const u8, shape: &[usize]) -> bool {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.iter().any(|b| {
            b.holder.bytes().as_ptr() == ptr
                && b.transposes
                    .iter()
                    .any(|(l, _)| l.shape().as_slice() == shape)
        })
    }

    #[derive(Debug)]
    struct FrozenLinearBackward;

    impl Backward<Flex, 1> for FrozenLinearBackward {
        /// The weight `[d_in, d_out]` and the input's shape.
        type State = (FlexTensor, Vec<usize>);

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let (weight, x_shape) = ops.state;
            let grad = grads.consume::<Flex>(&ops.node);
            let [parent] = ops.parents;
            if let Some(node) = parent {
                let [d_in, d_out] = [weight.layout().shape()[0], weight.layout().shape()[1]];
                let rows = x_shape.iter().product::<usize>() / d_in;
                let grad = grad.reshape(Shape::from(vec![rows, d_out]));
                let dx = Flex::float_matmul(grad, transposed(&weight));
                grads.register::<Flex>(node.id, dx.reshape(Shape::from(x_shape)));
            }
        }
    }

    /// The tracked op on the autodiff device over flex with frozen parameters; `None` elsewhere.
    pub(super) fn forward<const D: usize>(x: &Tensor<D>, linear: &Linear) -> Option<Tensor<D>> {
        if !super::super::enabled_kernel("frozen_linear")
            || !x.device().is_autodiff()
            || x.dtype() != DType::F32
            || linear.weight.is_require_grad()
            || linear.bias.as_ref().is_some_and(|b| b.is_require_grad())
        {
            return None;
        }
        // Frozen parameters of a module moved to the autodiff device are plain flex tensors
        // (constants); ones built on it are untracked autodiff tensors.
        let inner = |t: Tensor<2>| -> Option<FlexTensor> {
            match t.clone().try_into_primitive::<Autodiff<Flex>>() {
                Ok(a) => Some(a.into_primitive()),
                Err(_) => t.try_into_primitive::<Flex>().ok(),
            }
        };
        let weight = inner(linear.weight.val())?;
        if weight.dtype() != DType::F32 {
            return None;
        }
        let bias = match &linear.bias {
            Some(b) => Some(inner(b.val().unsqueeze::<2>())?),
            None => None,
        };
        let xa = x.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
        let dims = x.dims();
        let (d_in, d_out) = (dims[D - 1], weight.layout().shape()[1]);
        assert_eq!(
            weight.layout().shape()[0],
            d_in,
            "frozen_linear: input of width {d_in} for a weight of {:?}",
            weight.layout().shape()
        );
        let rows = dims.iter().product::<usize>() / d_in;
        let x2 = xa.primitive().reshape(Shape::from(vec![rows, d_in]));
        let mut y = Flex::float_matmul(x2, weight.clone());
        if let Some(b) = bias {
            y = Flex::float_add(y, b);
        }
        let mut out_dims = dims.to_vec();
        out_dims[D - 1] = d_out;
        let y = y.reshape(Shape::from(out_dims));
        let out = match FrozenLinearBackward
            .prepare::<NoCheckpointing>([xa.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((weight, dims.to_vec()), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Device, Distribution, TensorData};
    use proptest::prelude::*;

    fn linear(d_in: usize, d_out: usize, bias: bool, dev: &Device) -> Linear {
        Linear {
            weight: Param::from_tensor(Tensor::random(
                [d_in, d_out],
                Distribution::Normal(0.0, 1.0),
                dev,
            ))
            .set_require_grad(false),
            bias: bias.then(|| {
                Param::from_tensor(Tensor::random([d_out], Distribution::Normal(0.0, 1.0), dev))
                    .set_require_grad(false)
            }),
        }
    }

    fn assert_close(a: TensorData, b: TensorData) {
        crate::testing::assert_data_close(a, b, 1e-4, 1e-5);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn values_and_input_gradient_equal_burn_linear(
            b in 1usize..3, s in 1usize..20, d_in in 1usize..70, d_out in 1usize..70, bias in any::<bool>()
        ) {
            let dev = Device::flex().autodiff();
            let lin = linear(d_in, d_out, bias, &dev);
            // A tracked leaf upstream of the layer, as the LoRA factors are in training.
            let leaf = Tensor::<3>::random([b, s, d_in], Distribution::Normal(0.0, 1.0), &dev).require_grad();
            let w = Tensor::<3>::random([b, s, d_out], Distribution::Normal(0.0, 1.0), &dev);
            // One graph per backward pass (burn does not retain graphs).
            let fused = frozen_linear(leaf.clone() * 2.0, &lin);
            let reference = lin.forward(leaf.clone() * 2.0);
            assert_close(fused.clone().into_data(), reference.clone().into_data());
            let g_fused = leaf.grad(&(fused * w.clone()).sum().backward()).unwrap();
            let g_ref = leaf.grad(&(reference * w).sum().backward()).unwrap();
            assert_close(g_fused.into_data(), g_ref.into_data());
        }
    }

    #[test]
    fn transposes_are_cached_per_weight_and_dropped_with_it() {
        use burn::backend::flex::FlexTensor;
        let values: Vec<f32> = (0..40).map(|i| i as f32).collect();
        let w = FlexTensor::from_data(TensorData::new(values, [8, 5]));
        let (t1, t2) = (autodiff::transposed(&w), autodiff::transposed(&w));
        assert_eq!(
            t1.bytes().as_ptr(),
            t2.bytes().as_ptr(),
            "the second call is a hit"
        );
        let t: &[f32] = t1.as_slice().unwrap();
        assert_eq!(t1.layout().shape().as_slice(), &[5, 8]);
        assert_eq!((t[0], t[1], t[8]), (0.0, 5.0, 1.0));
        let ptr = w.bytes().as_ptr();
        assert!(autodiff::holds(ptr, &[8, 5]));
        drop((w, t1, t2));
        // The next miss drops entries whose weight only the cache holds.
        let other = FlexTensor::from_data(TensorData::new(vec![0f32; 6], [2, 3]));
        let _ = autodiff::transposed(&other);
        assert!(!autodiff::holds(ptr, &[8, 5]));
        assert!(autodiff::holds(other.bytes().as_ptr(), &[2, 3]));
    }

    #[test]
    fn training_reuses_the_cached_transpose() {
        let dev = Device::flex().autodiff();
        let lin = linear(12, 7, false, &dev);
        let leaf =
            Tensor::<2>::random([3, 12], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let _ = frozen_linear(leaf.clone(), &lin).sum().backward();
        let w = lin
            .weight
            .val()
            .try_into_primitive::<burn::backend::Autodiff<burn::backend::Flex>>()
            .unwrap()
            .into_primitive();
        assert!(
            autodiff::holds(w.bytes().as_ptr(), &[12, 7]),
            "the weight's buffer is cached"
        );
    }

    #[test]
    fn a_layer_moved_to_the_autodiff_device_takes_the_fused_backward() {
        use burn::module::Module;
        // As the trainer does: built on the plain device, moved, parameters frozen.
        let lin = linear(10, 6, true, &Device::flex());
        let dev = Device::flex().autodiff();
        let lin = lin.to_device(&dev).no_grad();
        let leaf =
            Tensor::<2>::random([3, 10], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let fused = autodiff::forward(&leaf, &lin);
        assert!(
            fused.is_some(),
            "the custom op applies to a moved, frozen layer"
        );
    }

    #[test]
    fn a_plain_device_uses_burn_linear() {
        let dev = Device::flex();
        let lin = linear(6, 4, true, &dev);
        let x = Tensor::<2>::random([5, 6], Distribution::Normal(0.0, 1.0), &dev);
        assert_close(
            frozen_linear(x.clone(), &lin).into_data(),
            lin.forward(x).into_data(),
        );
    }
}
