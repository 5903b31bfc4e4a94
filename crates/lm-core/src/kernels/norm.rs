//! RMSNorm and LayerNorm over the last axis, one pass per row.
//!
//! burn's composition runs 7 ops for RMSNorm (`square`, `mean_dim`, `+ ε`, `sqrt`, `recip`,
//! two broadcast `mul`s) and 9 for LayerNorm; in batch-1 decoding, where a row is 576 values,
//! each op costs more in dispatch and allocation than in arithmetic. The kernels read each row
//! once for its statistics and once to write it ([`vecmath::rms_norm_rows`],
//! [`vecmath::layer_norm_rows`]), rows split over rayon's threads. Forward only: on the autodiff
//! device (training) the generic composition runs, with burn's backward.

use burn::tensor::Tensor;

#[cfg(feature = "flex")]
use super::vecmath;

/// `x · (mean(x²) + ε)^-½ · scale` over the last axis, where `scale` is `γ`, or `1 + γ` with
/// `unit_offset` (Gemma).
///
/// # Shapes
/// - `x`: `[..., d]`, `gamma`: `[d]` -> `[..., d]`
pub fn rms_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    eps: f64,
    unit_offset: bool,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let (Some(xf), Some(gf)) = (super::flex::plain_f32(&x), super::flex::plain_f32(&gamma)) {
        use super::flex::{for_rows, values, wrap};
        let (xv, gv) = (values(&xf), values(&gf));
        let scale: Vec<f32> = if unit_offset {
            gv.iter().map(|g| g + 1.0).collect()
        } else {
            gv.to_vec()
        };
        let d = scale.len();
        assert_eq!(x.dims()[D - 1], d, "rms_norm: gamma has {d} values");
        let mut out = vec![0f32; xv.len()];
        let eps = eps as f32;
        for_rows([xv], &mut out, d, |[x], o| {
            vecmath::rms_norm_rows(x, &scale, eps, o)
        });
        return wrap(out, x.dims());
    }
    rms_norm_reference(x, gamma, eps, unit_offset)
}

/// The generic composition of burn ops (the fallback off flex and the tests' reference).
///
/// # Shapes
/// - `x`: `[..., d]`, `gamma`: `[d]` -> `[..., d]`
pub fn rms_norm_reference<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    eps: f64,
    unit_offset: bool,
) -> Tensor<D> {
    let ms = x.clone().square().mean_dim(D - 1);
    let inv = (ms + eps).sqrt().recip();
    let scale = if unit_offset { gamma + 1.0 } else { gamma };
    x * inv * scale.unsqueeze::<D>()
}

/// `(x − μ) · (σ² + ε)^-½ · γ + β` over the last axis.
///
/// # Shapes
/// - `x`: `[..., d]`, `gamma`, `beta`: `[d]` -> `[..., d]`
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let (Some(xf), Some(gf), Some(bf)) = (
        super::flex::plain_f32(&x),
        super::flex::plain_f32(&gamma),
        super::flex::plain_f32(&beta),
    ) {
        use super::flex::{for_rows, values, wrap};
        let (xv, gv, bv) = (values(&xf), values(&gf), values(&bf));
        let d = gv.len();
        assert_eq!(x.dims()[D - 1], d, "layer_norm: gamma has {d} values");
        let mut out = vec![0f32; xv.len()];
        let eps = eps as f32;
        for_rows([xv], &mut out, d, |[x], o| {
            vecmath::layer_norm_rows(x, gv, bv, eps, o)
        });
        return wrap(out, x.dims());
    }
    layer_norm_reference(x, gamma, beta, eps)
}

/// The generic composition of burn ops (the fallback off flex and the tests' reference).
///
/// # Shapes
/// - `x`: `[..., d]`, `gamma`, `beta`: `[d]` -> `[..., d]`
pub fn layer_norm_reference<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<D> {
    let mean = x.clone().mean_dim(D - 1);
    let centered = x - mean;
    let var = centered.clone().square().mean_dim(D - 1);
    let normed = centered * (var + eps).sqrt().recip();
    normed * gamma.unsqueeze::<D>() + beta.unsqueeze::<D>()
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};
    use proptest::prelude::*;

    fn assert_close(a: TensorData, b: TensorData, tol: f32) {
        crate::testing::assert_data_close(a, b, tol, tol);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn rms_norm_equals_burn_reference(
            b in 1usize..4, s in 1usize..20, d in 1usize..400, offset in any::<bool>(), mean in -3f64..3.0
        ) {
            let dev = Device::flex();
            let x = Tensor::<3>::random([b, s, d], Distribution::Normal(mean, 2.0), &dev);
            let g = Tensor::<1>::random([d], Distribution::Normal(0.5, 0.5), &dev);
            let fused = rms_norm(x.clone(), g.clone(), 1e-6, offset).into_data();
            assert_close(fused, rms_norm_reference(x, g, 1e-6, offset).into_data(), 2e-5);
        }

        #[test]
        fn layer_norm_equals_burn_reference(
            b in 1usize..4, s in 1usize..20, d in 2usize..400, mean in -3f64..3.0
        ) {
            let dev = Device::flex();
            let x = Tensor::<3>::random([b, s, d], Distribution::Normal(mean, 2.0), &dev);
            let g = Tensor::<1>::random([d], Distribution::Normal(1.0, 0.5), &dev);
            let be = Tensor::<1>::random([d], Distribution::Normal(0.0, 0.5), &dev);
            let fused = layer_norm(x.clone(), g.clone(), be.clone(), 1e-12).into_data();
            assert_close(fused, layer_norm_reference(x, g, be, 1e-12).into_data(), 5e-5);
        }
    }

    #[test]
    fn four_dimensional_views_normalise_their_last_axis() {
        // Gemma's per-head q/k norms: `[batch, seq, heads, head_dim]` transposed.
        let dev = Device::flex();
        let x =
            Tensor::<4>::random([2, 3, 4, 8], Distribution::Normal(0.0, 1.0), &dev).swap_dims(1, 2);
        let g = Tensor::<1>::random([8], Distribution::Normal(0.0, 1.0), &dev);
        let fused = rms_norm(x.clone(), g.clone(), 1e-6, true).into_data();
        assert_close(
            fused,
            rms_norm_reference(x, g, 1e-6, true).into_data(),
            2e-5,
        );
    }
}
