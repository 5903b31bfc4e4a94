//! Arrow routing (Ostapenko et al. 2024, "Towards Modular LLMs by Building and Reusing a Library
//! of LoRAs"; PEFT `ArrowConfig`): training-free. In every module each expert's prototype is the
//! top right-singular vector `v_e` of its `ΔW = s · B · A`; a token `h` is routed by
//! `|⟨h, v_e⟩|` over experts, top-k, softmax over the kept scores (which is what the seam's
//! "softmax, keep top-k, renormalise" computes). The prototypes become the router rows and the
//! routers get `abs_logits`; the mixture is saved like any other.
//!
//! The SVD comes from the factors only (lora-zoo's `svd_of_product`: QR of `B` and `Aᵀ`, Jacobi
//! SVD of the `r × r` core), never forming the `d_out × d_in` product. PEFT uses 15 power
//! iterations; the exact decomposition gives the same vector up to sign, and the sign does not
//! matter under `|·|`. `h` is not normalised (as PEFT), so the softmax sharpness follows the
//! token norm.

use lora_zoo::LoraModule;
use lora_zoo::linalg::svd_of_product;

/// The top right-singular vector of `ΔW = s · B · A` (`[d_in]`, unit norm), or zeros when `ΔW = 0`.
///
/// # Shapes
/// `module.a: [r, d_in]`, `module.b: [d_out, r]` -> `[d_in]`
pub fn prototype(module: &LoraModule) -> Vec<f32> {
    let svd = svd_of_product(
        module.b.mapv(f64::from).view(),
        module.a.mapv(f64::from).view(),
    );
    if svd.s.is_empty() || svd.s[0] <= 0.0 {
        return vec![0.0; module.d_in()];
    }
    svd.vt.row(0).iter().map(|&v| v as f32).collect()
}

/// Router weights of one module in PyTorch layout `[E, d_in]` (row-major): expert `e`'s prototype,
/// zeros for an expert absent from the module.
pub fn router_rows(modules: &[Option<&LoraModule>], d_in: usize) -> Vec<f32> {
    modules
        .iter()
        .flat_map(|m| m.map_or_else(|| vec![0.0; d_in], prototype))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn prototype_is_the_top_right_singular_vector() {
        // ΔW = u vᵀ · 3 + u2 v2ᵀ · 1 with orthonormal v, v2: the top right vector is ±v.
        let v = [0.6f32, 0.8, 0.0];
        let v2 = [0.0f32, 0.0, 1.0];
        let a = Array2::from_shape_fn((2, 3), |(i, j)| if i == 0 { v[j] } else { v2[j] });
        let b = Array2::from_shape_fn((4, 2), |(o, k)| match (o, k) {
            (0, 0) => 3.0,
            (1, 1) => 1.0,
            _ => 0.0,
        });
        let m = LoraModule::new(a, b, 2.0, 0.5).unwrap();
        let p = prototype(&m);
        let dot: f32 = p.iter().zip(v).map(|(x, y)| x * y).sum();
        assert!((dot.abs() - 1.0).abs() < 1e-6, "{p:?}");
        let zero = LoraModule::new(Array2::zeros((2, 3)), Array2::zeros((4, 2)), 1.0, 1.0).unwrap();
        assert_eq!(prototype(&zero), vec![0.0; 3]);
        assert_eq!(router_rows(&[Some(&m), None], 3).len(), 6);
    }
}
