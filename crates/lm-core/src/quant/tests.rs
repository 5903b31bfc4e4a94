//! The kernels against dequantise-then-f32: every format, both kernels, random shapes.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::format::{GROUP, QuantType, quantize_activations};
use super::{Kernel, QuantMatrix};

/// Random blocks of `ty` with sane f16 scales (random bytes elsewhere: every quant value,
/// packed scale and high bit pattern is reachable).
fn random_matrix(
    ty: QuantType,
    rows: usize,
    blocks_per_row: usize,
    rng: &mut StdRng,
) -> QuantMatrix {
    let bb = ty.block_bytes();
    let mut data = vec![0u8; rows * blocks_per_row * bb];
    rng.fill(&mut data[..]);
    let put = |b: &mut [u8], at: usize, v: f32| {
        b[at..at + 2].copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
    };
    for b in data.chunks_exact_mut(bb) {
        let d = rng.random_range(-0.05f32..0.05);
        match ty {
            QuantType::Q8_0 | QuantType::Q5_0 => put(b, 0, d),
            QuantType::Q4_1 | QuantType::Q4_K => {
                put(b, 0, d);
                put(b, 2, rng.random_range(-0.05f32..0.05));
            }
            QuantType::Q6_K => put(b, 208, d),
        }
    }
    QuantMatrix::from_raw(ty, rows, blocks_per_row * ty.block_elems(), data)
        .expect("sizes match by construction")
}

/// `x · Wᵀ` in f64 from the dequantised weights, and the bound on the error the i8
/// activations may add: `Σ |w| · d_a / 2` per output (rounding to the nearest step).
fn reference(w: &QuantMatrix, x: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let dense = w.dequantize().expect("every kernel format dequantises");
    let (rows, cols) = (w.rows(), w.cols());
    let mut act = Vec::new();
    quantize_activations(x, &mut act);
    let mut y = Vec::new();
    let mut bound = Vec::new();
    for xi in 0..x.len() / cols {
        for r in 0..rows {
            let (mut s, mut e) = (0f64, 0f64);
            for c in 0..cols {
                let wv = dense[r * cols + c] as f64;
                s += wv * x[xi * cols + c] as f64;
                e += wv.abs() * (act[(xi * cols + c) / GROUP].d as f64) / 2.0;
            }
            y.push(s);
            bound.push(e);
        }
    }
    (y, bound)
}

fn check(
    ty: QuantType,
    rows: usize,
    blocks: usize,
    n: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let w = random_matrix(ty, rows, blocks, &mut rng);
    let x: Vec<f32> = (0..n * w.cols())
        .map(|_| rng.random_range(-2f32..2.0))
        .collect();
    let (want, bound) = reference(&w, &x);
    for kernel in [Kernel::Scalar, Kernel::Avx2] {
        if !kernel.is_available() {
            continue;
        }
        let got = w.matmul_with(&x, kernel);
        prop_assert_eq!(got.len(), want.len());
        for (i, ((&g, &y), &b)) in got.iter().zip(&want).zip(&bound).enumerate() {
            // The activation rounding bound, plus f32 summation slack.
            let tol = b * 1.001 + 1e-4 * (1.0 + y.abs());
            prop_assert!(
                (g as f64 - y).abs() <= tol,
                "{ty} {kernel:?} output {i}: {g} vs {y} (tolerance {tol})"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn kernels_match_dequantised_f32(
        ty in prop::sample::select(QuantType::ALL.to_vec()),
        rows in 1usize..40,
        blocks in 1usize..4,
        n in 1usize..4,
        seed in any::<u64>(),
    ) {
        check(ty, rows, blocks, n, seed)?;
    }

    #[test]
    fn avx2_and_scalar_agree(
        ty in prop::sample::select(QuantType::ALL.to_vec()),
        rows in 1usize..20,
        blocks in 1usize..3,
        seed in any::<u64>(),
    ) {
        prop_assume!(Kernel::Avx2.is_available());
        let mut rng = StdRng::seed_from_u64(seed);
        let w = random_matrix(ty, rows, blocks, &mut rng);
        let x: Vec<f32> = (0..w.cols()).map(|_| rng.random_range(-2f32..2.0)).collect();
        let a = w.matmul_with(&x, Kernel::Scalar);
        let b = w.matmul_with(&x, Kernel::Avx2);
        let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            // Same integer sums; only the f32 accumulation order differs.
            prop_assert!((p - q).abs() <= 1e-5 * scale, "{ty} output {i}: {p} vs {q}");
        }
    }
}

#[test]
fn large_parallel_product_matches_reference() {
    // Enough work to take the rayon path, and more output rows than a task.
    for ty in QuantType::ALL {
        check(ty, 300, 2, 2, 7).unwrap();
    }
}

#[test]
fn q8_0_requantisation_round_trips_within_half_a_step() {
    let mut rng = StdRng::seed_from_u64(3);
    let (rows, cols) = (5, 64);
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-1f32..1.0))
        .collect();
    let q = QuantMatrix::quantize_q8_0(&w, rows, cols).unwrap();
    let back = q.dequantize().unwrap();
    for (blk_w, blk_b) in w.chunks(32).zip(back.chunks(32)) {
        let step = blk_w.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        for (a, b) in blk_w.iter().zip(blk_b) {
            // Half a step, plus the f16 rounding of the scale (2^-11 relative) times |q| ≤ 127.
            assert!((a - b).abs() <= step * (0.5 + 128.0 / 2048.0), "{a} vs {b}");
        }
    }
    assert!(
        QuantMatrix::quantize_q8_0(&w, rows * 4, cols / 4).is_err(),
        "16 columns"
    );
    assert!(
        QuantMatrix::quantize_q8_0(&w, rows + 1, cols).is_err(),
        "too few values"
    );
}

#[test]
fn bad_shapes_are_errors() {
    assert!(QuantMatrix::from_raw(QuantType::Q4_K, 1, 32, vec![0; 18]).is_err());
    assert!(QuantMatrix::from_raw(QuantType::Q4_1, 2, 32, vec![0; 20]).is_err());
    assert!(QuantMatrix::from_raw(QuantType::Q4_1, 2, 32, vec![0; 40]).is_ok());
}

#[test]
fn activation_blocks_hold_their_sums() {
    let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.1).collect();
    let mut act = Vec::new();
    quantize_activations(&x, &mut act);
    assert_eq!(act.len(), 2);
    for (a, c) in act.iter().zip(x.chunks(32)) {
        let lo: i32 = a.qs[..16].iter().map(|&q| q as i32).sum();
        assert_eq!(
            a.half_sums,
            [lo, a.qs.iter().map(|&q| q as i32).sum::<i32>() - lo]
        );
        assert!(a.qs.iter().any(|&q| q.unsigned_abs() == 127));
        for (q, v) in a.qs.iter().zip(c) {
            assert!((*q as f32 * a.d - v).abs() <= a.d / 2.0 + 1e-6);
        }
    }
}
