//! Distance kernels shared by every selector.
//!
//! # Exactness
//! Selection results hinge on comparisons of floating-point distances (argmax, ties to the lowest index), so every
//! pairwise value must be *the same bits* no matter which code path, tile position or thread computed it, and should
//! be as close as possible to what an `f32` reference computes. There is exactly one dot-product definition
//! ([`dot_tile`]; [`dot`] and [`dot4`] are its 1×1 and 1×4 shapes): exact `f32×f32` products summed in `f64` (8
//! lane-wise partial sums, fixed tail and reduction order), rounded once to `f32`. Since the products are exact in
//! `f64`, fused and unfused multiply-adds agree, so the AVX-512, AVX2 and portable builds (picked at run time) give
//! identical bits, and the result is the correctly rounded dot product except in astronomically rare cases.
//! Consequences: duplicate rows get bit-identical distances (exact ties, broken to the lowest index); results do not
//! depend on the thread count or CPU; and on a near-tie we agree with any `f32` implementation whose own rounding
//! error is below the gap (an `f32` BLAS reference is typically within a few ulps; gaps smaller than that cannot be
//! resolved the same way by two different `f32` summation orders — see docs/data-select.md).
//!
//! Euclidean distances follow DiverseEvol's formula and operation order in `f32`, `sqrt((-2 x·c + ||x||²) + ||c||²)`,
//! with the squared norms from the same [`dot`] (the reference uses the diagonal of the same Gram matrix). Where
//! rounding makes the squared value negative the reference takes `sqrt` of a negative number and gets NaN (which its
//! `min`/`argmax` then propagate, picking near-duplicates of labelled rows first); this crate clamps at zero instead.
//! Cosine distance is `1 - (x·c) / (max(||x||, 1e-8) max(||c||, 1e-8))`, so a zero vector is at distance 1 from
//! everything (including another zero vector).

use ndarray::{ArrayView2, CowArray, Ix2};
use rayon::prelude::*;

use crate::error::{Result, SelectError};

/// Number of partial sums per pair.
const LANES: usize = 8;

/// Which distance a selector uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Euclidean distance on raw vectors (DiverseEvol's choice).
    #[default]
    Euclidean,
    /// Cosine distance `1 - cos(x, c)`.
    Cosine,
}

crate::named_enum!(Metric, "metric", { Euclidean => "euclidean", Cosine => "cosine" });

/// The one dot-product definition: for every (row, column) pair of the tile, 8 lane-wise `f64` partial sums of exact
/// `f32×f32` products over the coordinates (the tail goes to lanes `0..rem`), then a fixed pairwise reduction, rounded
/// once to `f32`. Because each product is exact in `f64`, `madd` may be a fused or an unfused multiply-add with the
/// same result, and every tile shape gives every pair the same bits.
#[inline(always)]
fn tile_body<const R: usize, const C: usize>(
    rows: [&[f32]; R],
    cols: [&[f32]; C],
    madd: impl Fn(f64, f64, f64) -> f64,
) -> [[f32; C]; R] {
    let n = rows[0].len();
    let mut acc = [[[0.0f64; LANES]; C]; R];
    let full = n / LANES * LANES;
    let mut i = 0;
    while i < full {
        let mut x = [[0.0f64; LANES]; R];
        for r in 0..R {
            for l in 0..LANES {
                x[r][l] = rows[r][i + l] as f64;
            }
        }
        for c in 0..C {
            let mut y = [0.0f64; LANES];
            for l in 0..LANES {
                y[l] = cols[c][i + l] as f64;
            }
            for r in 0..R {
                for l in 0..LANES {
                    acc[r][c][l] = madd(x[r][l], y[l], acc[r][c][l]);
                }
            }
        }
        i += LANES;
    }
    for r in 0..R {
        for c in 0..C {
            for (l, k) in (full..n).enumerate() {
                acc[r][c][l] = madd(rows[r][k] as f64, cols[c][k] as f64, acc[r][c][l]);
            }
        }
    }
    let mut out = [[0.0f32; C]; R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = reduce(&acc[r][c]);
        }
    }
    out
}

/// Fixed pairwise reduction of the lanes, rounded once to `f32`.
#[inline(always)]
fn reduce(a: &[f64; LANES]) -> f32 {
    let q = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    ((q[0] + q[2]) + (q[1] + q[3])) as f32
}

#[inline(always)]
fn madd_plain(x: f64, y: f64, acc: f64) -> f64 {
    acc + x * y
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    #[inline(always)]
    fn madd_fused(x: f64, y: f64, acc: f64) -> f64 {
        x.mul_add(y, acc)
    }

    /// AVX-512 version of [`tile_body`]: one `__m512d` (8 lanes) per pair, same lane layout, same tail and reduction.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn tile_avx512<const R: usize, const C: usize>(
        rows: [&[f32]; R],
        cols: [&[f32]; C],
    ) -> [[f32; C]; R] {
        use std::arch::x86_64::*;
        let n = rows[0].len();
        let full = n / LANES * LANES;
        let mut acc = [[_mm512_setzero_pd(); C]; R];
        let mut i = 0;
        while i < full {
            let mut x = [_mm512_setzero_pd(); R];
            for r in 0..R {
                // SAFETY: i + 8 <= full <= rows[r].len(); unaligned load.
                x[r] = _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(rows[r].as_ptr().add(i)) });
            }
            for c in 0..C {
                // SAFETY: every column slice has at least n elements (checked by the caller).
                let y = _mm512_cvtps_pd(unsafe { _mm256_loadu_ps(cols[c].as_ptr().add(i)) });
                for r in 0..R {
                    acc[r][c] = _mm512_fmadd_pd(x[r], y, acc[r][c]);
                }
            }
            i += LANES;
        }
        let mut out = [[0.0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                let mut lanes = [0.0f64; LANES];
                // SAFETY: `lanes` holds 8 f64.
                unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), acc[r][c]) };
                for (l, k) in (full..n).enumerate() {
                    lanes[l] += rows[r][k] as f64 * cols[c][k] as f64;
                }
                out[r][c] = reduce(&lanes);
            }
        }
        out
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile_avx2<const R: usize, const C: usize>(
        rows: [&[f32]; R],
        cols: [&[f32]; C],
    ) -> [[f32; C]; R] {
        tile_body(rows, cols, madd_fused)
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
            if std::env::var_os("DATA_SELECT_GENERIC_KERNELS").is_none()
                && std::is_x86_feature_detected!("fma")
            {
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

/// All `R×C` dot products between `rows` and `cols`, each bit-identical to [`dot`].
///
/// # Shapes
/// each `rows[r]: [d]`, each `cols[c]: [d]` (at least `d`) `-> [R][C]`
#[inline]
pub fn dot_tile<const R: usize, const C: usize>(
    rows: [&[f32]; R],
    cols: [&[f32]; C],
) -> [[f32; C]; R] {
    let d = rows.iter().map(|r| r.len()).min().unwrap_or(0);
    let rows = rows.map(|s| &s[..d]);
    let cols = cols.map(|s| &s[..d]);
    match isa() {
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { x86::tile_avx512(rows, cols) },
        // SAFETY: the features were detected at run time.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::tile_avx2(rows, cols) },
        _ => tile_body(rows, cols, madd_plain),
    }
}

/// Dot product with the crate's fixed summation order (see the module docs): the correctly rounded `f32` of the
/// exact dot product in all but astronomically rare cases.
///
/// # Shapes
/// `a: [d]`, `b: [d]` (extra elements of the longer slice are ignored) `-> scalar`
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    dot_tile([&a[..n]], [&b[..n]])[0][0]
}

/// Four dot products `a · b[j]`, each bit-identical to [`dot`]; loads `a` once.
///
/// # Shapes
/// `a: [d]`, each `b[j]: [d]` `-> [4]`
#[inline]
pub fn dot4(a: &[f32], b: [&[f32]; 4]) -> [f32; 4] {
    dot_tile([a], b)[0]
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

/// A row-major matrix prepared for distance queries under one metric: the rows (borrowed when already in standard
/// layout, so no copy of a large matrix is made) plus one auxiliary value per row: the squared norm (Euclidean) or the
/// inverse norm `1 / max(||x||, 1e-8)` (cosine).
#[derive(Clone, Debug)]
pub struct Prepared<'a> {
    rows: CowArray<'a, f32, Ix2>,
    aux: Vec<f32>,
    metric: Metric,
}

impl<'a> Prepared<'a> {
    /// Prepares `m` for `metric`; rejects NaN/Inf.
    ///
    /// # Shapes
    /// `m: [n, d]`
    pub fn new(m: ArrayView2<'a, f32>, metric: Metric, what: &str) -> Result<Self> {
        check_finite(m, what)?;
        let rows: CowArray<'a, f32, Ix2> = if m.is_standard_layout() {
            CowArray::from(m)
        } else {
            CowArray::from(m.as_standard_layout().into_owned())
        };
        let d = rows.ncols();
        let aux: Vec<f32> = match rows.as_slice() {
            Some(s) if d > 0 => s
                .par_chunks(d)
                .map(|r| {
                    let sq = dot(r, r);
                    match metric {
                        Metric::Euclidean => sq,
                        Metric::Cosine => 1.0 / sq.sqrt().max(1e-8),
                    }
                })
                .collect(),
            _ => vec![
                if metric == Metric::Euclidean {
                    0.0
                } else {
                    1e8
                };
                rows.nrows()
            ],
        };
        Ok(Prepared { rows, aux, metric })
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

    /// Row `i` as a slice.
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.rows.ncols();
        &self.rows.as_slice().expect("standard layout")[i * d..(i + 1) * d]
    }

    /// Row `i`'s auxiliary value: squared norm (Euclidean) or inverse norm (cosine), as computed by [`dot`].
    pub fn aux(&self, i: usize) -> f32 {
        self.aux[i]
    }

    /// Turns the dot product of row `i` with a center whose auxiliary value is `caux` into a distance.
    #[inline]
    pub fn finish(&self, dotv: f32, i: usize, caux: f32) -> f32 {
        match self.metric {
            Metric::Euclidean => {
                // DiverseEvol's order: (-2 G + sq_row) + sq_col; clamp where the reference would produce NaN.
                let d2 = (-2.0 * dotv + self.aux[i]) + caux;
                d2.max(0.0).sqrt()
            }
            Metric::Cosine => (1.0 - (dotv * self.aux[i]) * caux).clamp(0.0, 2.0),
        }
    }

    /// Distance between rows `i` and `j` of this matrix.
    pub fn distance(&self, i: usize, j: usize) -> f32 {
        self.finish(dot(self.row(i), self.row(j)), i, self.aux[j])
    }

    /// Cosine similarity `(x_i · x_j) / (max(|x_i|, 1e-8) max(|x_j|, 1e-8))` (cosine-prepared matrices only).
    #[inline]
    pub fn similarity(&self, i: usize, j: usize) -> f32 {
        debug_assert_eq!(self.metric, Metric::Cosine);
        (dot(self.row(i), self.row(j)) * self.aux[i]) * self.aux[j]
    }

    /// The first of `candidates` (in order) whose cosine similarity with row `i` is above `threshold`, computed eight
    /// candidates at a time (same bits as [`Self::similarity`]). Cosine-prepared matrices only.
    pub fn first_similar(&self, i: usize, candidates: &[usize], threshold: f32) -> Option<usize> {
        debug_assert_eq!(self.metric, Metric::Cosine);
        let a = self.row(i);
        let ai = self.aux[i];
        let mut chunks = candidates.chunks_exact(8);
        for c in &mut chunks {
            let d8 = dot_tile([a], std::array::from_fn::<_, 8, _>(|j| self.row(c[j])))[0];
            for j in 0..8 {
                if (d8[j] * ai) * self.aux[c[j]] > threshold {
                    return Some(c[j]);
                }
            }
        }
        chunks
            .remainder()
            .iter()
            .copied()
            .find(|&j| self.similarity(i, j) > threshold)
    }

    /// Folds the distances from row `row` to `centers` (row indices of this matrix) into the running minimum `best`,
    /// recording in `arg` the center attaining it (first center on ties).
    pub fn min_into(&self, row: usize, centers: &[usize], best: &mut f32, arg: &mut usize) {
        let a = self.row(row);
        let mut chunks = centers.chunks_exact(4);
        for c in &mut chunks {
            let d4 = dot4(
                a,
                [
                    self.row(c[0]),
                    self.row(c[1]),
                    self.row(c[2]),
                    self.row(c[3]),
                ],
            );
            for j in 0..4 {
                let v = self.finish(d4[j], row, self.aux[c[j]]);
                if v < *best {
                    *best = v;
                    *arg = c[j];
                }
            }
        }
        for &c in chunks.remainder() {
            let v = self.finish(dot(a, self.row(c)), row, self.aux[c]);
            if v < *best {
                *best = v;
                *arg = c;
            }
        }
    }

    /// Running minima of many rows over the same centers, in 4×4 register tiles (same bits as [`Self::min_into`]).
    ///
    /// # Shapes
    /// `rows: [m]`, `best: [m]` (folded in place)
    pub fn min_block(&self, rows: &[usize], centers: &[usize], best: &mut [f32]) {
        let mut r = 0;
        while r + 4 <= rows.len() {
            let rs = [rows[r], rows[r + 1], rows[r + 2], rows[r + 3]];
            let rv = rs.map(|i| self.row(i));
            let mut cc = centers.chunks_exact(4);
            for c in &mut cc {
                let t = dot_tile(
                    rv,
                    [
                        self.row(c[0]),
                        self.row(c[1]),
                        self.row(c[2]),
                        self.row(c[3]),
                    ],
                );
                for i in 0..4 {
                    for j in 0..4 {
                        let v = self.finish(t[i][j], rs[i], self.aux[c[j]]);
                        if v < best[r + i] {
                            best[r + i] = v;
                        }
                    }
                }
            }
            for &c in cc.remainder() {
                let t = dot_tile(rv, [self.row(c)]);
                for i in 0..4 {
                    let v = self.finish(t[i][0], rs[i], self.aux[c]);
                    if v < best[r + i] {
                        best[r + i] = v;
                    }
                }
            }
            r += 4;
        }
        for (k, &q) in rows.iter().enumerate().skip(r) {
            let mut a = usize::MAX;
            self.min_into(q, centers, &mut best[k], &mut a);
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
            prop_assert_eq!(d.to_bits(), tile_body([&v[..]], [w], madd_plain)[0][0].to_bits());
            let four = dot4(&v, [w, w, &v, w]);
            prop_assert_eq!(four[0].to_bits(), d.to_bits());
            prop_assert_eq!(four[2].to_bits(), dot(&v, &v).to_bits());
            prop_assert_eq!(four[2].to_bits(), tile_body([&v[..]], [w, w, &v[..], w], madd_plain)[0][2].to_bits());
            let t = dot_tile([w, &v[..]], [&v[..], w, w]);
            prop_assert_eq!(t[1][1].to_bits(), d.to_bits());
            prop_assert_eq!(t[0][0].to_bits(), d.to_bits());
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
