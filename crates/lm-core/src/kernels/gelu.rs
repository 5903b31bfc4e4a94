//! GELU (erf form, BERT's `gelu`) in one vectorised pass.
//!
//! burn-flex evaluates `erf` one value at a time; the kernel uses a branch-free erf
//! (Abramowitz & Stegun 7.1.26, absolute error ≤ 1.5e-7, with the vectorised `exp`) that LLVM
//! vectorises ([`vecmath::gelu_erf_slice`]). Forward only: on the autodiff device burn's `gelu`
//! runs.

use burn::tensor::Tensor;
use burn::tensor::activation::gelu;

/// `0.5 · x · (1 + erf(x / √2))`.
///
/// # Shapes
/// - `x`: any -> same
pub fn gelu_erf<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if let Some(xf) = super::flex::plain_f32(&x) {
        use super::flex::{for_rows, values, wrap};
        let xv = values(&xf);
        let mut out = vec![0f32; xv.len()];
        for_rows([xv], &mut out, 1, |[x], o| {
            super::vecmath::gelu_erf_slice(x, o)
        });
        return wrap(out, x.dims());
    }
    gelu(x)
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn fused_gelu_equals_burn_gelu(rows in 1usize..40, d in 1usize..2000, sd in 0.1f64..8.0) {
            let dev = Device::flex();
            let x = Tensor::<2>::random([rows, d], Distribution::Normal(0.0, sd), &dev);
            let a = gelu_erf(x.clone()).into_data().try_to_vec::<f32>().unwrap();
            let w = gelu(x).into_data().try_to_vec::<f32>().unwrap();
            for (p, q) in a.iter().zip(&w) {
                prop_assert!((p - q).abs() <= 1e-6 + 2e-6 * q.abs(), "{p} vs {q}");
            }
        }
    }
}
