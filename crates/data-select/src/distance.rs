//! Distance kernels shared by every selector.
//!
//! # Exactness
//! Selection results hinge on comparisons of floating-point distances (argmax, ties to the lowest index), so every
//! pairwise value must be *the same bits* no matter which code path, block position or thread computed it. This module
//! therefore has exactly one dot-product definition, [`dot`]: 16 lane-wise partial sums over the columns (separate
//! multiply and add, never fused), then a fixed pairwise reduction of the lanes. Rust never contracts `a * b + c` into an
//! FMA and LLVM never reassociates float math, so the SSE2, AVX2 and AVX-512 builds of the same source (chosen at
//! run time) produce identical bits; the multi-center micro-kernel [`dot4`] performs the same operations per pair.
//! Consequences: duplicate rows get bit-identical distances to every center (exact ties, broken to the lowest index),
//! and results do not depend on the thread count.
//!
//! Euclidean distances follow DiverseEvol's formula and operation order, `sqrt((-2 x·c + ||x||²) + ||c||²)`, with the
//! squared norms taken from the same [`dot`] (the reference uses the diagonal of the same Gram matrix). Where rounding
//! makes the squared value negative the reference takes `sqrt` of a negative number and gets NaN (which its `min`/`argmax`
//! then propagate, picking near-duplicates of labelled rows first); this crate clamps at zero instead. Cosine distance is
//! `1 - x̂·ĉ` on rows scaled by `1 / max(||x||, 1e-8)`, so a zero vector is at distance 1 from everything.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::{Result, SelectError};

/// Number of partial sums in [`dot`].
const LANES: usize = 16;

/// Which distance a selector uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Euclidean distance on raw vectors (DiverseEvol's choice).
    #[default]
    Euclidean,
    /// Cosine distance `1 - cos(x, c)`.
    Cosine,
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Metric::Euclidean => "euclidean",
            Metric::Cosine => "cosine",
        })
    }
}

/// Portable body of the dot product; see the module docs for why its shape is fixed.
#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        acc[l] += x * y;
    }
    reduce(acc)
}

/// Fixed pairwise reduction of the 16 lanes.
#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    let mut h = [0.0f32; 8];
    for l in 0..8 {
        h[l] = acc[l] + acc[l + 8];
    }
    let q = [h[0] + h[4], h[1] + h[5], h[2] + h[6], h[3] + h[7]];
    (q[0] + q[2]) + (q[1] + q[3])
}

/// Portable body of four dot products of `a` with `b0..b3`, bit-identical to four calls of [`dot_body`].
#[inline(always)]
fn dot4_body(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let n = a.len();
    let mut acc = [[0.0f32; LANES]; 4];
    let full = n / LANES * LANES;
    let mut i = 0;
    while i < full {
        let x = &a[i..i + LANES];
        for j in 0..4 {
            let y = &b[j][i..i + LANES];
            for l in 0..LANES {
                acc[j][l] += x[l] * y[l];
            }
        }
        i += LANES;
    }
    for j in 0..4 {
        for (l, k) in (full..n).enumerate() {
            acc[j][l] += a[k] * b[j][k];
        }
    }
    [reduce(acc[0]), reduce(acc[1]), reduce(acc[2]), reduce(acc[3])]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    #[target_feature(enable = "avx512f")]
    pub(super) fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        dot_body(a, b)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        dot_body(a, b)
    }
    #[target_feature(enable = "avx512f")]
    pub(super) fn dot4_avx512(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
        dot4_body(a, b)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn dot4_avx2(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
        dot4_body(a, b)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
    Generic,
}

fn isa() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("DATA_SELECT_GENERIC_KERNELS").is_none() {
                if std::is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                if std::is_x86_feature_detected!("avx2") {
                    return Isa::Avx2;
                }
            }
        }
        Isa::Generic
    })
}

/// Dot product with the crate's fixed summation order (see the module docs).
///
/// # Shapes
/// `a: [d]`, `b: [d]` (extra elements of the longer slice are ignored) `-> scalar`
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    match isa() {
        // SAFETY: the feature was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::dot_avx512(a, b) },
        // SAFETY: the feature was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::dot_avx2(a, b) },
        _ => dot_body(a, b),
    }
}

/// Four dot products `a · b[j]`, each bit-identical to [`dot`]; loads `a` once.
///
/// # Shapes
/// `a: [d]`, each `b[j]: [d]` `-> [4]`
#[inline]
pub fn dot4(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    let d = a.len();
    let b = b.map(|s| &s[..d]);
    match isa() {
        // SAFETY: the feature was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::dot4_avx512(a, b) },
        // SAFETY: the feature was detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::dot4_avx2(a, b) },
        _ => dot4_body(a, b),
    }
}

/// Checks that every value is finite; `what` names the matrix in the error.
pub fn check_finite(m: ArrayView2<'_, f32>, what: &str) -> Result<()> {
    for (r, row) in m.outer_iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            if !v.is_finite() {
                return Err(SelectError::NonFinite {
                    what: what.to_string(),
                    row: r,
                    col: c,
                    value: *v,
                });
            }
        }
    }
    Ok(())
}

/// A row-major matrix prepared for distance queries under one metric: contiguous rows plus squared norms
/// (Euclidean) or unit-scaled rows (cosine).
#[derive(Clone, Debug)]
pub struct Prepared {
    rows: Array2<f32>,
    sq: Array1<f32>,
    metric: Metric,
}

impl Prepared {
    /// Prepares `m` for `metric`; rejects NaN/Inf.
    ///
    /// # Shapes
    /// `m: [n, d]`
    pub fn new(m: ArrayView2<'_, f32>, metric: Metric, what: &str) -> Result<Self> {
        check_finite(m, what)?;
        let mut rows = m.as_standard_layout().into_owned();
        if metric == Metric::Cosine {
            rows.axis_iter_mut(Axis(0)).into_par_iter().for_each(|mut r| {
                let s = r.as_slice_mut().expect("standard layout");
                let norm = dot(s, s).sqrt();
                let scale = 1.0 / norm.max(1e-8);
                s.iter_mut().for_each(|v| *v *= scale);
            });
        }
        let sq: Vec<f32> = rows
            .axis_iter(Axis(0))
            .into_par_iter()
            .map(|r| {
                let s = r.to_slice().expect("standard layout");
                dot(s, s)
            })
            .collect();
        Ok(Prepared {
            rows,
            sq: Array1::from(sq),
            metric,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.nrows()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.nrows() == 0
    }

    /// Row width.
    pub fn dim(&self) -> usize {
        self.rows.ncols()
    }

    /// The metric this matrix was prepared for.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Row `i` as a slice (unit-scaled for cosine).
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.rows.ncols();
        &self.rows.as_slice().expect("standard layout")[i * d..(i + 1) * d]
    }

    /// Squared norm of row `i` as computed by [`dot`].
    pub fn sq_norm(&self, i: usize) -> f32 {
        self.sq[i]
    }

    /// Turns a dot product between rows `i` (this matrix) and a center with squared norm `csq` into a distance.
    #[inline]
    pub fn finish(&self, dotv: f32, i: usize, csq: f32) -> f32 {
        match self.metric {
            Metric::Euclidean => {
                // DiverseEvol's order: (-2 G + sq_row) + sq_col; clamp where the reference would produce NaN.
                let d2 = (-2.0 * dotv + self.sq[i]) + csq;
                d2.max(0.0).sqrt()
            }
            Metric::Cosine => (1.0 - dotv).clamp(0.0, 2.0),
        }
    }

    /// Distance between rows `i` and `j` of this matrix.
    pub fn distance(&self, i: usize, j: usize) -> f32 {
        self.finish(dot(self.row(i), self.row(j)), i, self.sq[j])
    }

    /// For each row `i` in `rows`, folds the distances to `centers` (row indices of this matrix) into `best[i]` as a
    /// running minimum, also recording which center attains it in `arg` (first center on ties).
    ///
    /// # Shapes
    /// `best: [rows.len()]`, `arg: [rows.len()]`
    pub fn min_into(&self, row: usize, centers: &[usize], best: &mut f32, arg: &mut usize) {
        let a = self.row(row);
        let mut chunks = centers.chunks_exact(4);
        for c in &mut chunks {
            let d4 = dot4(a, [self.row(c[0]), self.row(c[1]), self.row(c[2]), self.row(c[3])]);
            for j in 0..4 {
                let v = self.finish(d4[j], row, self.sq[c[j]]);
                if v < *best {
                    *best = v;
                    *arg = c[j];
                }
            }
        }
        for &c in chunks.remainder() {
            let v = self.finish(dot(a, self.row(c)), row, self.sq[c]);
            if v < *best {
                *best = v;
                *arg = c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    proptest! {
        #[test]
        fn dot_is_accurate_and_paths_agree(v in proptest::collection::vec(-10.0f32..10.0, 0..100), w in proptest::collection::vec(-10.0f32..10.0, 100)) {
            let n = v.len();
            let w = &w[..n];
            let d = dot(&v, w);
            prop_assert!((d as f64 - naive(&v, w)).abs() < 1e-3 * (1.0 + n as f64));
            // all code paths give the same bits
            prop_assert_eq!(d.to_bits(), dot_body(&v, w).to_bits());
            let four = dot4(&v, [w, w, &v, w]);
            prop_assert_eq!(four[0].to_bits(), d.to_bits());
            prop_assert_eq!(four[2].to_bits(), dot(&v, &v).to_bits());
            prop_assert_eq!(four[2].to_bits(), dot4_body(&v, [w, w, &v, w])[2].to_bits());
        }
    }

    #[test]
    fn euclidean_and_cosine_distances() {
        let m = ndarray::array![[3.0f32, 4.0], [0.0, 0.0], [6.0, 8.0], [3.0, 4.0]];
        let e = Prepared::new(m.view(), Metric::Euclidean, "m").unwrap();
        assert_eq!(e.distance(0, 1), 5.0);
        assert_eq!(e.distance(0, 2), 5.0);
        assert_eq!(e.distance(0, 3), 0.0);
        let c = Prepared::new(m.view(), Metric::Cosine, "m").unwrap();
        assert!(c.distance(0, 2).abs() < 1e-6);
        // zero vector: cosine similarity 0, distance 1
        assert_eq!(c.distance(0, 1), 1.0);
    }

    #[test]
    fn rejects_nan() {
        let m = ndarray::array![[1.0f32, f32::NAN]];
        let err = Prepared::new(m.view(), Metric::Euclidean, "emb").unwrap_err();
        assert!(matches!(err, SelectError::NonFinite { row: 0, col: 1, .. }));
    }
}
