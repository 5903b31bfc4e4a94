//! Fused projections: q/k/v, and gate/up with the SwiGLU, as one matmul each.
//!
//! At load ([`fuse_columns`]) the weights of linears that read the same input (`q_proj`,
//! `k_proj`, `v_proj`; `gate_proj`, `up_proj`) are concatenated column-wise into one
//! `[d_in, Σ d_out]` buffer, and each layer's weight becomes a zero-copy column view of it, so
//! the model holds each value once and every other user of a layer (LoRA, export, merging,
//! flex's strided gemm) sees the same `[d_in, d_out]` weight as before. The forward
//! ([`fused_forward`], [`gate_up_swiglu`]) recognises such views and multiplies once by the
//! whole buffer: one gemm call instead of three (or two), wider and better packed
//! (`examples/op_timing.rs`: gate|up 2048 × 576 × 3072 in one call against two 2048 × 576 ×
//! 1536), and in batch-1 decoding two fewer ops per block for q/k/v and one for gate/up. The
//! SwiGLU then reads the two halves of each output row ([`vecmath::silu_mul`]).
//!
//! Plain flex device only; on other devices (GPU, autodiff), for layers with active LoRA
//! experts, or for weights that are not adjacent views of one buffer (e.g. replaced by a
//! merge), the callers use the layers one by one.

use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

/// Concatenates the weights of `linears` (same `d_in`) into one buffer and makes each weight a
/// column view of it. Does nothing off the plain flex device or for non-f32 weights.
///
/// # Shapes
/// - each weight `[d_in, d_out_i]` -> a view `[d_in, d_out_i]` of `[d_in, Σ d_out_i]`
pub fn fuse_columns(linears: &mut [&mut Linear], device: &Device) {
    #[cfg(feature = "flex")]
    flex::fuse(linears, device);
    #[cfg(not(feature = "flex"))]
    let _ = (linears, device);
}

/// `[x · W_1 + b_1, …, x · W_N + b_N]` in one matmul when the weights are adjacent column
/// views of one buffer ([`fuse_columns`]) on the plain flex device; `None` otherwise.
///
/// # Shapes
/// - `x`: `[batch, seq, d_in]` -> `N × [batch, seq, d_out_i]`
pub fn fused_forward<const N: usize>(
    x: &Tensor<3>,
    linears: [&Linear; N],
) -> Option<[Tensor<3>; N]> {
    #[cfg(feature = "flex")]
    {
        flex::forward(x, linears)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, linears);
        None
    }
}

/// `silu(x · W_gate) ⊙ (x · W_up)` with one matmul and one pass when `gate` and `up` are
/// adjacent views of one buffer (gate first) without bias, on the plain flex device; `None`
/// otherwise.
///
/// # Shapes
/// - `x`: `[batch, seq, d_model]` -> `[batch, seq, d_ff]`
pub fn gate_up_swiglu(x: &Tensor<3>, gate: &Linear, up: &Linear) -> Option<Tensor<3>> {
    #[cfg(feature = "flex")]
    {
        flex::gate_up_swiglu(x, gate, up)
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, gate, up);
        None
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::{FlexTensor, Layout};
    use burn::backend::ops::FloatTensorOps;
    use burn::module::Param;
    use burn::nn::Linear;
    use burn::tensor::{DType, Device, Shape, Tensor};

    use super::super::flex::{plain_f32, values, wrap};
    use super::super::vecmath;

    pub(super) fn fuse(linears: &mut [&mut Linear], device: &Device) {
        if linears.len() < 2 || device.is_autodiff() || *device != Device::flex() {
            return;
        }
        let mut parts = Vec::with_capacity(linears.len());
        for l in linears.iter() {
            let Ok(w) = l.weight.val().try_into_primitive::<Flex>() else {
                return;
            };
            if w.dtype() != DType::F32 {
                return;
            }
            parts.push(w);
        }
        let d_in = parts[0].layout().shape()[0];
        if parts.iter().any(|w| w.layout().shape()[0] != d_in) {
            return;
        }
        let widths: Vec<usize> = parts.iter().map(|w| w.layout().shape()[1]).collect();
        let total: usize = widths.iter().sum();
        let mut data = vec![0f32; d_in * total];
        let mut start = 0;
        for (w, &width) in parts.iter().zip(&widths) {
            let w = super::super::flex::contiguous(w.clone());
            for (dst, src) in data
                .chunks_exact_mut(total)
                .zip(values(&w).chunks_exact(width))
            {
                dst[start..start + width].copy_from_slice(src);
            }
            start += width;
        }
        drop(parts);
        let full = super::super::flex::flex_tensor(data, [d_in, total]);
        let mut start = 0;
        for (l, &width) in linears.iter_mut().zip(&widths) {
            let view = full.narrow(1, start, width);
            l.weight =
                Param::from_tensor(Tensor::from_primitive::<Flex>(view)).set_require_grad(false);
            start += width;
        }
    }

    /// The whole buffer when `weights` are adjacent column views of it, in order.
    fn whole(weights: &[FlexTensor]) -> Option<FlexTensor> {
        let first = weights.first()?;
        let d_in = first.layout().shape()[0];
        let total: usize = weights.iter().map(|w| w.layout().shape()[1]).sum();
        let mut offset = 0;
        for w in weights {
            let l = w.layout();
            let adjacent = w.bytes().as_ptr() == first.bytes().as_ptr()
                && l.shape()[0] == d_in
                && l.strides() == [total as isize, 1]
                && l.start_offset() == offset;
            if !adjacent {
                return None;
            }
            offset += l.shape()[1];
        }
        if first.bytes().len() < d_in * total * std::mem::size_of::<f32>() {
            return None;
        }
        Some(FlexTensor::from_arc(
            first.data_arc(),
            Layout::contiguous(Shape::from(vec![d_in, total])),
            DType::F32,
        ))
    }

    /// `x · [W_1 | … | W_N]` as `[rows, Σ d_out]`, with the widths.
    fn matmul_whole(x: &Tensor<3>, linears: &[&Linear]) -> Option<(FlexTensor, Vec<usize>)> {
        let xf = plain_f32(x)?;
        let mut weights = Vec::with_capacity(linears.len());
        for l in linears {
            weights.push(plain_f32_view(&l.weight.val())?);
        }
        let w = whole(&weights)?;
        let [b, s, d_in] = x.dims();
        if w.layout().shape()[0] != d_in {
            return None;
        }
        let widths = weights.iter().map(|w| w.layout().shape()[1]).collect();
        let x2 = xf.reshape(Shape::from(vec![b * s, d_in]));
        Some((Flex::float_matmul(x2, w), widths))
    }

    /// The flex tensor behind a plain f32 tensor, as it is (views stay views).
    fn plain_f32_view(t: &Tensor<2>) -> Option<FlexTensor> {
        if !super::super::enabled() || t.device().is_autodiff() || t.dtype() != DType::F32 {
            return None;
        }
        t.clone().try_into_primitive::<Flex>().ok()
    }

    pub(super) fn forward<const N: usize>(
        x: &Tensor<3>,
        linears: [&Linear; N],
    ) -> Option<[Tensor<3>; N]> {
        let (y, widths) = matmul_whole(x, &linears)?;
        let [b, s, _] = x.dims();
        let mut start = 0;
        Some(std::array::from_fn(|i| {
            let part = y.narrow(1, start, widths[i]);
            start += widths[i];
            let t = Tensor::<2>::from_primitive::<Flex>(part).reshape([b, s, widths[i]]);
            match &linears[i].bias {
                Some(bias) => t + bias.val().unsqueeze::<3>(),
                None => t,
            }
        }))
    }

    pub(super) fn gate_up_swiglu(x: &Tensor<3>, gate: &Linear, up: &Linear) -> Option<Tensor<3>> {
        if gate.bias.is_some() || up.bias.is_some() {
            return None;
        }
        let (y, widths) = matmul_whole(x, &[gate, up])?;
        let d_ff = widths[0];
        if widths[1] != d_ff {
            return None;
        }
        let y = super::super::flex::contiguous(y);
        let yv = values(&y);
        let [b, s, _] = x.dims();
        let mut out = vec![0f32; b * s * d_ff];
        // Rows in parallel: output row r reads input row r's two halves.
        use rayon::prelude::*;
        let rows_per = if out.len() < super::super::PARALLEL_MIN {
            b * s
        } else {
            (b * s)
                .div_ceil(rayon::current_num_threads().max(1) * 4)
                .max(1)
        };
        out.par_chunks_mut(rows_per * d_ff)
            .zip(yv.par_chunks(rows_per * 2 * d_ff))
            .for_each(|(o, yr)| {
                for (orow, yrow) in o.chunks_exact_mut(d_ff).zip(yr.chunks_exact(2 * d_ff)) {
                    let (g, u) = yrow.split_at(d_ff);
                    vecmath::silu_mul(g, u, orow);
                }
            });
        Some(wrap(out, [b, s, d_ff]))
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::{Distribution, TensorData};
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
        let (a, b) = (
            a.try_to_vec::<f32>().unwrap(),
            b.try_to_vec::<f32>().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4 + 1e-5 * y.abs(), "{x} vs {y}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn fused_projections_equal_the_separate_layers(
            b in 1usize..3, s in 1usize..20, d_in in 1usize..60,
            dq in 1usize..60, dk in 1usize..30, bias in any::<bool>()
        ) {
            let dev = Device::flex();
            let (q, k, v) = (linear(d_in, dq, bias, &dev), linear(d_in, dk, bias, &dev), linear(d_in, dk, bias, &dev));
            let x = Tensor::<3>::random([b, s, d_in], Distribution::Normal(0.0, 1.0), &dev);
            let want = [q.forward(x.clone()), k.forward(x.clone()), v.forward(x.clone())];
            let (mut fq, mut fk, mut fv) = (q.clone(), k.clone(), v.clone());
            fuse_columns(&mut [&mut fq, &mut fk, &mut fv], &dev);
            // The views are the same weights.
            assert_close(fq.weight.val().into_data(), q.weight.val().into_data());
            assert_close(fv.weight.val().into_data(), v.weight.val().into_data());
            let got = fused_forward(&x, [&fq, &fk, &fv]).expect("fused views");
            for (g, w) in got.into_iter().zip(want) {
                assert_close(g.into_data(), w.into_data());
            }
            // Each layer alone still computes its own projection from its view.
            assert_close(fk.forward(x.clone()).into_data(), k.forward(x).into_data());
        }

        #[test]
        fn fused_gate_up_swiglu_equals_the_burn_composition(
            b in 1usize..3, s in 1usize..40, d in 1usize..50, ff in 1usize..90
        ) {
            let dev = Device::flex();
            let (gate, up) = (linear(d, ff, false, &dev), linear(d, ff, false, &dev));
            let x = Tensor::<3>::random([b, s, d], Distribution::Normal(0.0, 1.0), &dev);
            let want = crate::kernels::swiglu::reference(gate.forward(x.clone()), up.forward(x.clone()));
            let (mut g, mut u) = (gate.clone(), up.clone());
            fuse_columns(&mut [&mut g, &mut u], &dev);
            let got = gate_up_swiglu(&x, &g, &u).expect("fused views");
            assert_close(got.into_data(), want.into_data());
        }
    }

    #[test]
    fn separate_weights_are_not_fused() {
        let dev = Device::flex();
        let (gate, up) = (linear(8, 6, false, &dev), linear(8, 6, false, &dev));
        let x = Tensor::<3>::random([1, 2, 8], Distribution::Normal(0.0, 1.0), &dev);
        assert!(gate_up_swiglu(&x, &gate, &up).is_none());
        // Views of one buffer in the wrong order are not adjacent either.
        let (mut g, mut u) = (gate, up);
        fuse_columns(&mut [&mut g, &mut u], &dev);
        assert!(gate_up_swiglu(&x, &u, &g).is_none());
        assert!(fused_forward(&x, [&g, &u]).is_some());
    }

    #[test]
    fn the_autodiff_device_is_left_alone() {
        let dev = Device::flex().autodiff();
        let (mut gate, mut up) = (linear(8, 6, false, &dev), linear(8, 6, false, &dev));
        fuse_columns(&mut [&mut gate, &mut up], &dev);
        let x = Tensor::<3>::random([1, 2, 8], Distribution::Normal(0.0, 1.0), &dev);
        assert!(gate_up_swiglu(&x, &gate, &up).is_none());
    }
}
