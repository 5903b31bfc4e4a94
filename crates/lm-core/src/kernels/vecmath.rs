//! Vectorised element-wise math for the fused kernels: `exp`, SiLU, the SwiGLU forward and
//! backward, GELU (erf), and the loops of RMSNorm and LayerNorm.
//!
//! burn-flex computes `exp`, `sigmoid`, `silu` and `erf` one value at a time with the C library
//! (`silu` on 3.1M values cost as much as a 2048 × 576 × 1536 matmul). Here each loop body is
//! written once, branch-free and with a polynomial `exp` (Cephes' `expf`: range reduction to
//! `|r| ≤ ln2/2`, a degree-6 polynomial, `2ⁿ` built in the exponent bits; ≤ 2 ulp on the
//! range used), so that LLVM vectorises it, and compiled three times on x86-64: for AVX-512
//! (`avx512f`), for AVX2 + FMA, and for the x86-64 baseline (SSE2). [`level`] picks one at run
//! time with `is_x86_feature_detected!`, so the build needs no `target-cpu` flag and one binary
//! runs on AVX2-only and AVX-512 machines. Other architectures get the baseline body, which LLVM
//! vectorises for their default features (NEON on aarch64).
//!
//! `OPENEXPERT_SIMD=avx2|baseline` caps the level (tests run every path this way; benchmarks
//! compare them).

use std::sync::OnceLock;

/// The instruction set a kernel runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// x86-64 baseline (SSE2), or the default features of another architecture.
    Baseline,
    /// AVX2 and FMA (Haswell, Zen 1 and later).
    Avx2,
    /// AVX-512 F (Skylake-X, Ice Lake, Zen 4 and later).
    Avx512,
}

/// Environment variable that caps [`level`]: `baseline`, `avx2` or `avx512`.
pub const SIMD_ENV: &str = "OPENEXPERT_SIMD";

/// The best level this CPU supports, capped by [`SIMD_ENV`]; detected once.
pub fn level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var(SIMD_ENV).as_deref() {
            Ok("baseline") => SimdLevel::Baseline,
            Ok("avx2") => SimdLevel::Avx2,
            _ => SimdLevel::Avx512,
        };
        detected().min(cap)
    })
}

/// The best level this CPU supports (no cap), detected once.
#[cfg(target_arch = "x86_64")]
pub fn detected() -> SimdLevel {
    static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> SimdLevel {
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
        SimdLevel::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        SimdLevel::Avx2
    } else {
        SimdLevel::Baseline
    }
}

/// The best level this CPU supports: the baseline off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn detected() -> SimdLevel {
    SimdLevel::Baseline
}

/// Defines `pub fn $name(args)`, which runs `$body` compiled for the CPU's [`level`], and
/// `pub fn $at(level, args)`, which runs it at a given level (at most the detected one: tests
/// compare the levels with each other).
macro_rules! multiversion {
    ($(#[$meta:meta])* pub fn $name:ident / $at:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:ident;) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            $at(level(), $($arg),*)
        }

        #[doc = concat!("[`", stringify!($name), "`] at a given [`SimdLevel`], capped at the detected one.")]
        pub fn $at(level: SimdLevel, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                match level.min(detected()) {
                    // SAFETY: `detected` reports AVX-512 F and FMA only when the CPU has them.
                    SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `detected` reports AVX2 and FMA only when the CPU has them.
                    SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    SimdLevel::Baseline => {}
                }
            }
            let _ = level;
            $body($($arg),*)
        }
    };
}

const EXP_HI: f32 = 88.376_26;
const EXP_LO: f32 = -87.336_55;
const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so that `n · LN2_HI` is exact (Cephes).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
// 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `eˣ` for `x` clamped to `[-87.34, 88.38]` (so `eˣ` stays a normal float), branch-free.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_LO, EXP_HI);
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // n sits in the low bits of t's mantissa (two's complement); 2ⁿ = (n + 127) << 23.
    let bits = t
        .to_bits()
        .wrapping_sub(ROUND_MAGIC.to_bits())
        .wrapping_add(127)
        << 23;
    er * f32::from_bits(bits)
}

/// `x · σ(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// `erf(x)`, Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7), branch-free.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let mut p = 1.061_405_4_f32;
    p = p * t - 1.453_152_1;
    p = p * t + 1.421_413_8;
    p = p * t - 0.284_496_74;
    p = p * t + 0.254_829_6;
    let y = 1.0 - p * t * exp(-a * a);
    y.copysign(x)
}

/// GELU with the exact (erf) form: `0.5 · x · (1 + erf(x / √2))`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn silu_mul_body(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

#[inline(always)]
fn swiglu_backward_body(
    gate: &[f32],
    up: &[f32],
    grad: &[f32],
    d_gate: &mut [f32],
    d_up: &mut [f32],
) {
    let it = d_gate.iter_mut().zip(d_up.iter_mut()).zip(gate).zip(up);
    for ((((dg, du), &g), &u), &dy) in it.zip(grad) {
        let s = 1.0 / (1.0 + exp(-g));
        let silu = g * s;
        *du = dy * silu;
        *dg = dy * u * (s + silu * (1.0 - s));
    }
}

#[inline(always)]
fn gelu_erf_body(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = gelu_erf(v);
    }
}

#[inline(always)]
fn exp_body(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = exp(v);
    }
}

/// Sum of squares with 16 independent partial sums (vectorisable without reassociation).
#[inline(always)]
fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i] * c[i];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for &v in tail {
        s += v * v;
    }
    s
}

/// Sum with 16 independent partial sums.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

#[inline(always)]
fn rms_norm_rows_body(x: &[f32], scale: &[f32], eps: f32, out: &mut [f32]) {
    let d = scale.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let inv = 1.0 / (sum_squares(xr) / d as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(scale) {
            *o = v * inv * g;
        }
    }
}

#[inline(always)]
fn layer_norm_rows_body(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let d = gamma.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = sum(xr) / d as f32;
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = v - mean;
        }
        let inv = 1.0 / (sum_squares(or) / d as f32 + eps).sqrt();
        for ((o, &g), &b) in or.iter_mut().zip(gamma).zip(beta) {
            *o = *o * inv * g + b;
        }
    }
}

#[inline(always)]
fn log_sum_exp_body(row: &[f32]) -> f32 {
    let mut mx = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            mx[i] = mx[i].max(c[i]);
        }
    }
    let max = tail
        .iter()
        .chain(&mx)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        // All -inf (log 0), or a +inf / NaN that the sum would turn into NaN anyway.
        return if max == f32::NEG_INFINITY {
            max
        } else {
            max + f32::NAN
        };
    }
    // f32 partial sums over blocks of 1024 values, blocks added in f64.
    let mut total = 0f64;
    for block in row.chunks(1024) {
        let mut acc = [0f32; 16];
        let chunks = block.chunks_exact(16);
        let tail = chunks.remainder();
        for c in chunks {
            for i in 0..16 {
                acc[i] += exp(c[i] - max);
            }
        }
        let mut s = acc.iter().map(|&a| a as f64).sum::<f64>();
        for &v in tail {
            s += exp(v - max) as f64;
        }
        total += s;
    }
    max + total.ln() as f32
}

multiversion! {
    /// `log Σ exp(row)`, stable (the maximum subtracted), blocks of partial sums added in f64.
    pub fn log_sum_exp / log_sum_exp_at(row: &[f32]) -> f32 => log_sum_exp_body;
}

multiversion! {
    /// `out[i] = silu(gate[i]) · up[i]` (the SwiGLU gate). Slices of equal length.
    pub fn silu_mul / silu_mul_at(gate: &[f32], up: &[f32], out: &mut [f32]) => silu_mul_body;
}

multiversion! {
    /// Gradients of `silu(gate) · up` given the output gradient `grad`:
    /// `d_up = grad · silu(gate)`, `d_gate = grad · up · σ(gate) · (1 + gate · (1 − σ(gate)))`.
    pub fn swiglu_backward / swiglu_backward_at(
        gate: &[f32],
        up: &[f32],
        grad: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
    ) => swiglu_backward_body;
}

multiversion! {
    /// `out[i] = gelu_erf(x[i])`.
    pub fn gelu_erf_slice / gelu_erf_slice_at(x: &[f32], out: &mut [f32]) => gelu_erf_body;
}

multiversion! {
    /// `out[i] = exp(x[i])` (see [`exp`] for the range).
    pub fn exp_slice / exp_slice_at(x: &[f32], out: &mut [f32]) => exp_body;
}

multiversion! {
    /// RMSNorm of each row of `x` (rows of `scale.len()` values):
    /// `out = x · (mean(x²) + eps)^-½ · scale`.
    pub fn rms_norm_rows / rms_norm_rows_at(x: &[f32], scale: &[f32], eps: f32, out: &mut [f32]) => rms_norm_rows_body;
}

multiversion! {
    /// LayerNorm of each row of `x` (rows of `gamma.len()` values):
    /// `out = (x − mean) · (var + eps)^-½ · gamma + beta`.
    pub fn layer_norm_rows / layer_norm_rows_at(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [f32],
    ) => layer_norm_rows_body;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f32, b: f32, rel: f32, abs: f32) -> bool {
        (a - b).abs() <= abs + rel * b.abs()
    }

    #[test]
    fn exp_matches_std_over_its_range() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exp_saturates_instead_of_overflowing() {
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
        assert!(exp(-1000.0) >= 0.0 && exp(-1000.0) < 1e-37);
    }

    #[test]
    fn log_sum_exp_of_infinite_rows() {
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
        assert!(log_sum_exp(&[0.0, f32::INFINITY]).is_nan());
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY, 0.0]), 0.0);
    }

    #[test]
    fn erf_matches_known_values() {
        // erf(0.5), erf(1), erf(2) from tables.
        for (x, want) in [
            (0.5f32, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
        ] {
            assert!(close(erf(x), want, 0.0, 2e-7), "erf({x}) = {}", erf(x));
            assert!(close(erf(-x), -want, 0.0, 2e-7));
        }
    }

    const LEVELS: [SimdLevel; 3] = [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512];

    proptest! {
        #[test]
        fn every_level_computes_the_same_values(
            v in prop::collection::vec((-90f32..90.0, -4f32..4.0), 0..300)
        ) {
            let (g, u): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            let run = |level| {
                let mut a = vec![0f32; g.len()];
                let mut b = vec![0f32; g.len()];
                let mut c = vec![0f32; g.len()];
                let (mut dg, mut du) = (vec![0f32; g.len()], vec![0f32; g.len()]);
                silu_mul_at(level, &g, &u, &mut a);
                gelu_erf_slice_at(level, &g, &mut b);
                exp_slice_at(level, &g, &mut c);
                swiglu_backward_at(level, &g, &u, &u, &mut dg, &mut du);
                (a, b, c, dg, du)
            };
            let base = run(SimdLevel::Baseline);
            for level in LEVELS {
                let other = run(level);
                // Vector and scalar code may differ by FMA contraction only: a few ulp.
                for (x, y) in [(&base.0, &other.0), (&base.1, &other.1), (&base.2, &other.2), (&base.3, &other.3), (&base.4, &other.4)] {
                    for (p, q) in x.iter().zip(y) {
                        prop_assert!(close(*p, *q, 1e-6, 1e-30), "{level:?}: {p} vs {q}");
                    }
                }
            }
        }

        #[test]
        fn silu_mul_matches_scalar_formula(
            v in prop::collection::vec((-30f32..30.0, -4f32..4.0), 0..300)
        ) {
            let (g, u): (Vec<f32>, Vec<f32>) = v.into_iter().unzip();
            let mut out = vec![0f32; g.len()];
            silu_mul(&g, &u, &mut out);
            for i in 0..g.len() {
                let want = g[i] / (1.0 + (-g[i]).exp()) * u[i];
                prop_assert!(close(out[i], want, 2e-6, 1e-7), "{} vs {}", out[i], want);
            }
        }

        #[test]
        fn swiglu_backward_matches_finite_differences(g in -6f32..6.0, u in -3f32..3.0, dy in -2f32..2.0) {
            let (mut dg, mut du) = ([0f32], [0f32]);
            swiglu_backward(&[g], &[u], &[dy], &mut dg, &mut du);
            let f = |g: f64, u: f64| g / (1.0 + (-g).exp()) * u;
            let h = 1e-4;
            let (g64, u64_, dy64) = (g as f64, u as f64, dy as f64);
            let want_dg = dy64 * (f(g64 + h, u64_) - f(g64 - h, u64_)) / (2.0 * h);
            let want_du = dy64 * (f(g64, u64_ + h) - f(g64, u64_ - h)) / (2.0 * h);
            prop_assert!(close(dg[0], want_dg as f32, 1e-4, 1e-5), "{} vs {}", dg[0], want_dg);
            prop_assert!(close(du[0], want_du as f32, 1e-4, 1e-5), "{} vs {}", du[0], want_du);
        }

        #[test]
        fn rms_norm_rows_matches_scalar_formula(
            d in 1usize..70, rows in 1usize..5, seed in any::<u64>()
        ) {
            let x: Vec<f32> = (0..d * rows).map(|i| (((i as u64 ^ seed) % 97) as f32 - 48.0) / 7.0).collect();
            let scale: Vec<f32> = (0..d).map(|i| 0.5 + (i % 5) as f32 / 4.0).collect();
            let mut out = vec![0f32; x.len()];
            rms_norm_rows(&x, &scale, 1e-5, &mut out);
            for r in 0..rows {
                let row = &x[r * d..(r + 1) * d];
                let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
                let inv = 1.0 / (ms + 1e-5).sqrt();
                for i in 0..d {
                    let want = (row[i] as f64 * inv * scale[i] as f64) as f32;
                    prop_assert!(close(out[r * d + i], want, 1e-5, 1e-6));
                }
            }
        }
    }
}
