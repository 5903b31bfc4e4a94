//! Small dense linear algebra on `ndarray`, in f64: thin Householder QR, one-sided Jacobi SVD, the
//! SVD of a low-rank product `B · A` from its factors, and a truncated SVD of a large matrix by
//! subspace iteration.
//!
//! Everything the adapter algebra needs and nothing more: adapter ranks are small, so the expensive
//! parts are QRs of tall-skinny factor stacks and SVDs of `R × R` cores.

use ndarray::{Array1, Array2, ArrayView2, Axis, s};

/// A thin singular value decomposition `M = U · diag(s) · Vᵀ`, singular values descending.
#[derive(Debug, Clone)]
pub struct Svd {
    /// Left singular vectors, `[m, k]`.
    pub u: Array2<f64>,
    /// Singular values, `[k]`, descending, non-negative.
    pub s: Array1<f64>,
    /// Right singular vectors transposed, `[k, n]`.
    pub vt: Array2<f64>,
}

impl Svd {
    /// Keeps the `k` leading triplets (all of them if `k` is larger).
    pub fn truncate(mut self, k: usize) -> Self {
        let k = k.min(self.s.len());
        self.u = self.u.slice(s![.., ..k]).to_owned();
        self.s = self.s.slice(s![..k]).to_owned();
        self.vt = self.vt.slice(s![..k, ..]).to_owned();
        self
    }

    /// `U · diag(s) · Vᵀ`.
    ///
    /// # Shapes
    /// returns `[m, n]`.
    pub fn reconstruct(&self) -> Array2<f64> {
        let mut us = self.u.clone();
        for (mut col, &sv) in us.axis_iter_mut(Axis(1)).zip(self.s.iter()) {
            col *= sv;
        }
        us.dot(&self.vt)
    }

    /// Balanced factors `(B, A) = (U · diag(√s), diag(√s) · Vᵀ)` with `B · A = U · diag(s) · Vᵀ`.
    ///
    /// # Shapes
    /// returns `B: [m, k]`, `A: [k, n]`.
    pub fn balanced_factors(&self) -> (Array2<f64>, Array2<f64>) {
        let mut b = self.u.clone();
        let mut a = self.vt.clone();
        for (i, &sv) in self.s.iter().enumerate() {
            let r = sv.sqrt();
            b.column_mut(i).mapv_inplace(|x| x * r);
            a.row_mut(i).mapv_inplace(|x| x * r);
        }
        (b, a)
    }
}

/// Thin Householder QR: `M = Q · R` with `Q` having orthonormal columns.
///
/// # Shapes
/// `m: [rows, cols]` -> `Q: [rows, k]`, `R: [k, cols]` with `k = min(rows, cols)`; `R` is upper
/// triangular (upper trapezoidal when `cols > rows`).
pub fn qr(m: ArrayView2<'_, f64>) -> (Array2<f64>, Array2<f64>) {
    let (rows, cols) = m.dim();
    let k = rows.min(cols);
    // Work on the transpose so that each column of M is a contiguous row.
    let mut w: Array2<f64> = m.t().to_owned(); // [cols, rows]
    let mut vs: Vec<Array1<f64>> = Vec::with_capacity(k);
    for j in 0..k {
        let mut v = w.slice(s![j, j..]).to_owned();
        let norm = v.dot(&v).sqrt();
        if norm == 0.0 {
            vs.push(Array1::zeros(rows - j));
            continue;
        }
        let alpha = if v[0] >= 0.0 { -norm } else { norm };
        v[0] -= alpha;
        let vnorm2 = v.dot(&v);
        if vnorm2 == 0.0 {
            vs.push(Array1::zeros(rows - j));
            continue;
        }
        // Apply H = I - 2 v vᵀ / (vᵀ v) to columns j.. of M (rows j.. of w).
        for c in j..cols {
            let mut col = w.slice_mut(s![c, j..]);
            let f = 2.0 * col.dot(&v) / vnorm2;
            col.scaled_add(-f, &v);
        }
        vs.push(v / vnorm2.sqrt());
    }
    let mut r = Array2::<f64>::zeros((k, cols));
    for i in 0..k {
        for c in i..cols {
            r[[i, c]] = w[[c, i]];
        }
    }
    // Q = H_0 H_1 ... H_{k-1} applied to the first k columns of the identity.
    let mut qt = Array2::<f64>::zeros((k, rows)); // rows of qt are columns of Q
    for i in 0..k {
        qt[[i, i]] = 1.0;
    }
    for j in (0..k).rev() {
        let v = &vs[j];
        for i in 0..k {
            let mut col = qt.slice_mut(s![i, j..]);
            let f = 2.0 * col.dot(v);
            if f != 0.0 {
                col.scaled_add(-f, v);
            }
        }
    }
    (qt.reversed_axes(), r)
}

/// Thin SVD by one-sided (Hestenes) Jacobi rotations: accurate to working precision, O(n²·m) per
/// sweep; meant for small or skinny matrices. Tall matrices are first reduced by QR.
///
/// # Shapes
/// `m: [rows, cols]` -> `U: [rows, k]`, `s: [k]`, `Vᵀ: [k, cols]`, `k = min(rows, cols)`.
pub fn svd(m: ArrayView2<'_, f64>) -> Svd {
    let (rows, cols) = m.dim();
    if rows < cols {
        let t = svd(m.t());
        return Svd {
            u: t.vt.reversed_axes(),
            s: t.s,
            vt: t.u.reversed_axes(),
        };
    }
    if cols == 0 {
        return Svd {
            u: Array2::zeros((rows, 0)),
            s: Array1::zeros(0),
            vt: Array2::zeros((0, cols)),
        };
    }
    if rows > cols + cols / 2 {
        let (q, r) = qr(m);
        let inner = svd_jacobi_square_or_tall(r.view());
        return Svd {
            u: q.dot(&inner.u),
            s: inner.s,
            vt: inner.vt,
        };
    }
    svd_jacobi_square_or_tall(m)
}

fn svd_jacobi_square_or_tall(m: ArrayView2<'_, f64>) -> Svd {
    let (rows, n) = m.dim();
    let mut ut: Array2<f64> = m.t().to_owned(); // [n, rows]: row i = column i of M
    let mut vt: Array2<f64> = Array2::eye(n); // row i = column i of V
    let eps = f64::EPSILON;
    for _sweep in 0..80 {
        let mut rotated = false;
        for p in 0..n {
            for q in (p + 1)..n {
                let (alpha, beta, gamma) = {
                    let up = ut.row(p);
                    let uq = ut.row(q);
                    (up.dot(&up), uq.dot(&uq), up.dot(&uq))
                };
                if gamma == 0.0 || gamma.abs() <= eps * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let sn = c * t;
                rotate_rows(&mut ut, p, q, c, sn);
                rotate_rows(&mut vt, p, q, c, sn);
            }
        }
        if !rotated {
            break;
        }
    }
    let mut s: Vec<f64> = ut.outer_iter().map(|r| r.dot(&r).sqrt()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| s[b].partial_cmp(&s[a]).expect("finite singular values"));
    let mut u = Array2::<f64>::zeros((rows, n));
    let mut v_t = Array2::<f64>::zeros((n, n));
    for (dst, &src) in order.iter().enumerate() {
        let sv = s[src];
        if sv > 0.0 {
            u.column_mut(dst).assign(&(&ut.row(src) / sv));
        }
        v_t.row_mut(dst).assign(&vt.row(src));
    }
    s = order.iter().map(|&i| s[i]).collect();
    Svd {
        u,
        s: Array1::from(s),
        vt: v_t,
    }
}

fn rotate_rows(m: &mut Array2<f64>, p: usize, q: usize, c: f64, sn: f64) {
    let (mut rp, mut rq) = m.multi_slice_mut((s![p, ..], s![q, ..]));
    ndarray::Zip::from(&mut rp).and(&mut rq).for_each(|x, y| {
        let (a, b) = (*x, *y);
        *x = c * a - sn * b;
        *y = sn * a + c * b;
    });
}

/// SVD of the product `B · A` computed from the factors only: QR of `B` and of `Aᵀ`, then an SVD of
/// the small core `R_B · R_Aᵀ`. The `[m, n]` product is never formed.
///
/// # Shapes
/// `b: [m, r]`, `a: [r, n]` -> `U: [m, k]`, `s: [k]`, `Vᵀ: [k, n]` with `k = min(m, n, r)`.
pub fn svd_of_product(b: ArrayView2<'_, f64>, a: ArrayView2<'_, f64>) -> Svd {
    assert_eq!(
        b.ncols(),
        a.nrows(),
        "svd_of_product: inner dimensions differ"
    );
    let (qb, rb) = qr(b); // qb [m, kb], rb [kb, r]
    let (qa, ra) = qr(a.t()); // qa [n, ka], ra [ka, r]
    let core = rb.dot(&ra.t()); // [kb, ka]
    let inner = svd(core.view());
    let k = inner.s.len();
    Svd {
        u: qb.dot(&inner.u),
        s: inner.s,
        vt: inner.vt.dot(&qa.t()),
    }
    .truncate(k)
}

/// Leading `k` singular triplets of a (large) matrix by subspace iteration with Rayleigh–Ritz, in
/// f64; falls back to the full Jacobi SVD when `k` is not much smaller than the matrix. Iterates until
/// the leading `k` singular values agree to ~1e-14 relative between two iterations (at most 200).
///
/// # Shapes
/// `m: [rows, cols]` -> `U: [rows, k']`, `s: [k']`, `Vᵀ: [k', cols]`, `k' = min(k, rows, cols)`.
pub fn truncated_svd(m: ArrayView2<'_, f64>, k: usize) -> Svd {
    let (rows, cols) = m.dim();
    let small = rows.min(cols);
    let k = k.min(small);
    let l = (2 * k).max(k + 8).min(small);
    if k == 0 || l * 3 >= small || small <= 64 {
        return svd(m).truncate(k);
    }
    // Deterministic pseudo-random start (xorshift), so results do not depend on a global RNG.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let omega = Array2::from_shape_fn((cols, l), |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    });
    let (mut q, _) = qr(m.dot(&omega).view());
    let mut prev: Option<Array1<f64>> = None;
    for _ in 0..200 {
        let (qz, _) = qr(m.t().dot(&q).view());
        let (qn, _) = qr(m.dot(&qz).view());
        q = qn;
        let small_m = q.t().dot(&m); // [l, cols]
        let inner = svd(small_m.view());
        let sk = inner.s.slice(s![..k]).to_owned();
        let done = prev.as_ref().is_some_and(|p| {
            let scale = sk[0].max(f64::MIN_POSITIVE);
            p.iter()
                .zip(sk.iter())
                .all(|(a, b)| (a - b).abs() <= 1e-14 * scale)
        });
        if done {
            return Svd {
                u: q.dot(&inner.u),
                s: inner.s,
                vt: inner.vt,
            }
            .truncate(k);
        }
        prev = Some(sk);
    }
    let inner = svd(q.t().dot(&m).view());
    Svd {
        u: q.dot(&inner.u),
        s: inner.s,
        vt: inner.vt,
    }
    .truncate(k)
}

/// Frobenius norm.
pub fn frobenius(m: ArrayView2<'_, f64>) -> f64 {
    m.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_matrix(max: usize) -> impl Strategy<Value = Array2<f64>> {
        (1..=max, 1..=max).prop_flat_map(|(r, c)| {
            prop::collection::vec(-3.0f64..3.0, r * c)
                .prop_map(move |v| Array2::from_shape_vec((r, c), v).unwrap())
        })
    }

    fn max_abs_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        a.iter()
            .zip(b.iter())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    fn orthonormal_cols(q: &Array2<f64>) -> f64 {
        let g = q.t().dot(q);
        max_abs_diff(&g, &Array2::eye(g.nrows()))
    }

    proptest! {
        #[test]
        fn qr_reconstructs_and_is_orthogonal(m in arb_matrix(12)) {
            let (q, r) = qr(m.view());
            prop_assert!(max_abs_diff(&q.dot(&r), &m) < 1e-10);
            prop_assert!(orthonormal_cols(&q) < 1e-10);
            for i in 0..r.nrows() { for j in 0..i.min(r.ncols()) { prop_assert!(r[[i, j]].abs() < 1e-12); } }
        }

        #[test]
        fn svd_reconstructs_sorted_orthogonal(m in arb_matrix(12)) {
            let d = svd(m.view());
            prop_assert!(max_abs_diff(&d.reconstruct(), &m) < 1e-9);
            prop_assert!(orthonormal_cols(&d.vt.t().to_owned()) < 1e-9);
            for w in d.s.as_slice().unwrap().windows(2) { prop_assert!(w[0] >= w[1]); }
            // full-rank random matrices: U orthonormal as well
            if d.s[d.s.len() - 1] > 1e-6 { prop_assert!(orthonormal_cols(&d.u) < 1e-8); }
        }

        #[test]
        fn eckart_young_truncation_is_optimal(m in arb_matrix(10), k in 1usize..4,
                                              other in prop::collection::vec(-2.0f64..2.0, 200)) {
            let d = svd(m.view());
            let k = k.min(d.s.len());
            let t = d.clone().truncate(k);
            let err = frobenius((&m - &t.reconstruct()).view());
            let tail: f64 = d.s.iter().skip(k).map(|x| x * x).sum::<f64>().sqrt();
            prop_assert!((err - tail).abs() < 1e-8 * (1.0 + tail));
            // any other rank-k matrix X·Y is no closer
            let (r, c) = m.dim();
            let x = Array2::from_shape_fn((r, k), |(i, j)| other[(i * k + j) % other.len()]);
            let y = Array2::from_shape_fn((k, c), |(i, j)| other[(7 + i * c + j) % other.len()]);
            prop_assert!(frobenius((&m - &x.dot(&y)).view()) >= err - 1e-9);
        }

        #[test]
        fn product_svd_matches_dense(b in prop::collection::vec(-2.0f64..2.0, 40 * 5),
                                     a in prop::collection::vec(-2.0f64..2.0, 5 * 30)) {
            let b = Array2::from_shape_vec((40, 5), b).unwrap();
            let a = Array2::from_shape_vec((5, 30), a).unwrap();
            let d = svd_of_product(b.view(), a.view());
            let dense = b.dot(&a);
            prop_assert!(max_abs_diff(&d.reconstruct(), &dense) < 1e-9);
            let e = svd(dense.view());
            for i in 0..d.s.len() { prop_assert!((d.s[i] - e.s[i]).abs() < 1e-9 * (1.0 + e.s[0])); }
        }
    }

    #[test]
    fn truncated_svd_matches_exact_on_a_large_matrix() {
        // Low-rank signal with a decaying spectrum plus small noise.
        let (rows, cols) = (300, 200);
        let mut st = 1u64;
        let mut rnd = || {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (st >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let b = Array2::from_shape_fn((rows, 12), |(_, j)| rnd() * (0.7f64).powi(j as i32));
        let a = Array2::from_shape_fn((12, cols), |_| rnd());
        let noise = Array2::from_shape_fn((rows, cols), |_| 1e-3 * rnd());
        let m = b.dot(&a) + noise;
        let exact = svd(m.view()).truncate(6);
        let fast = truncated_svd(m.view(), 6);
        for i in 0..6 {
            assert!((exact.s[i] - fast.s[i]).abs() < 1e-9 * exact.s[0], "{i}");
        }
        assert!(max_abs_diff(&exact.reconstruct(), &fast.reconstruct()) < 1e-8);
    }

    #[test]
    fn rank_deficient_and_degenerate_inputs() {
        let z = Array2::<f64>::zeros((5, 3));
        let d = svd(z.view());
        assert!(d.s.iter().all(|&x| x == 0.0));
        let (q, r) = qr(z.view());
        assert!(max_abs_diff(&q.dot(&r), &z) < 1e-15);
        let one = Array2::from_shape_fn((6, 4), |(i, j)| (i + 1) as f64 * (j + 1) as f64);
        let d = svd(one.view());
        assert!(d.s[1] < 1e-10 * d.s[0]);
        assert!(max_abs_diff(&d.reconstruct(), &one) < 1e-10);
    }
}
