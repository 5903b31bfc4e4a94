//! Small dense linear algebra on `ndarray`, in f64: thin QR and SVD (both from `faer`), the SVD of a
//! low-rank product `B · A` from its factors, and a truncated SVD of a large matrix by Golub–Kahan–Lanczos
//! (falling back to subspace iteration).
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

/// Calls `f` with `m` as a faer matrix: a view of the same memory when `m` is row- or column-major
/// contiguous, else of a row-major copy.
fn with_faer<T>(m: ArrayView2<'_, f64>, f: impl FnOnce(faer::MatRef<'_, f64>) -> T) -> T {
    let (rows, cols) = m.dim();
    if let Some(data) = m.as_slice() {
        f(faer::MatRef::from_row_major_slice(data, rows, cols))
    } else if let Some(data) = m.t().as_slice() {
        f(faer::MatRef::from_column_major_slice(data, rows, cols))
    } else {
        let c = m.as_standard_layout();
        f(faer::MatRef::from_row_major_slice(
            c.as_slice().expect("standard layout"),
            rows,
            cols,
        ))
    }
}

/// A faer matrix as a row-major `ndarray` one.
fn from_faer(m: faer::MatRef<'_, f64>) -> Array2<f64> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)])
}

/// Thin QR (faer's blocked Householder QR): `M = Q · R` with `Q` having orthonormal columns.
///
/// # Shapes
/// `m: [rows, cols]` -> `Q: [rows, k]`, `R: [k, cols]` with `k = min(rows, cols)`; `R` is upper
/// triangular (upper trapezoidal when `cols > rows`).
pub fn qr(m: ArrayView2<'_, f64>) -> (Array2<f64>, Array2<f64>) {
    let (rows, cols) = m.dim();
    if rows.min(cols) == 0 {
        return (Array2::zeros((rows, 0)), Array2::zeros((0, cols)));
    }
    with_faer(m, |f| {
        let qr = f.qr();
        (
            from_faer(qr.compute_thin_Q().as_ref()),
            from_faer(qr.thin_R()),
        )
    })
}

/// Thin SVD (faer's bidiagonalisation followed by divide and conquer), singular values descending.
///
/// # Shapes
/// `m: [rows, cols]` -> `U: [rows, k]`, `s: [k]`, `Vᵀ: [k, cols]`, `k = min(rows, cols)`.
///
/// # Panics
/// When faer's SVD does not converge, which only non-finite entries cause (adapter factors are
/// checked finite when read, like the Jacobi SVD this replaces, which panicked on them too).
pub fn svd(m: ArrayView2<'_, f64>) -> Svd {
    let (rows, cols) = m.dim();
    let k = rows.min(cols);
    if k == 0 {
        return Svd {
            u: Array2::zeros((rows, 0)),
            s: Array1::zeros(0),
            vt: Array2::zeros((0, cols)),
        };
    }
    with_faer(m, |f| {
        let d = f.thin_svd().expect("the SVD converges on a finite matrix");
        let s = d.S().column_vector();
        Svd {
            u: from_faer(d.U()),
            s: Array1::from_shape_fn(k, |i| s[i]),
            vt: from_faer(d.V().transpose()),
        }
    })
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

/// Leading `k` singular triplets of a (large) matrix: Golub–Kahan–Lanczos bidiagonalisation with full
/// reorthogonalisation, in f64, from a deterministic start vector; small problems go to the full SVD.
/// Stops when every leading Ritz triplet has residual `‖Mᵀu − σv‖ ≤ 1e-10 · σ₁` (checked every 8
/// steps, at most `min(rows, cols)` steps). On breakdown before convergence (an invariant subspace
/// smaller than `k`, e.g. repeated singular values or rank below `k`) it falls back to block subspace
/// iteration.
///
/// # Shapes
/// `m: [rows, cols]` -> `U: [rows, k']`, `s: [k']`, `Vᵀ: [k', cols]`, `k' = min(k, rows, cols)`.
pub fn truncated_svd(m: ArrayView2<'_, f64>, k: usize) -> Svd {
    let (rows, cols) = m.dim();
    let small = rows.min(cols);
    let k = k.min(small);
    if k == 0 || small <= 64 || 3 * k >= small {
        return svd(m).truncate(k);
    }
    lanczos(rows, cols, k, |v| m.dot(&v), |u| mat_t_vec(m, u))
        .unwrap_or_else(|| subspace_iteration_svd(m, k))
}

/// [`truncated_svd`] of an f32 matrix without an f64 copy on the Lanczos path: the mat-vecs read the
/// f32 entries and accumulate in f64, which is exactly the f64 computation on the converted matrix
/// with half the memory traffic.
///
/// # Shapes
/// `m: [rows, cols]` -> `U: [rows, k']`, `s: [k']`, `Vᵀ: [k', cols]`, `k' = min(k, rows, cols)`.
pub fn truncated_svd_f32(m: ArrayView2<'_, f32>, k: usize) -> Svd {
    let (rows, cols) = m.dim();
    let small = rows.min(cols);
    let k = k.min(small);
    if k == 0 || small <= 64 || 3 * k >= small || !m.is_standard_layout() {
        return truncated_svd(m.mapv(f64::from).view(), k);
    }
    let av = |v: ndarray::ArrayView1<'_, f64>| -> Array1<f64> {
        let vs = v.as_slice().expect("contiguous");
        Array1::from_iter(m.outer_iter().map(|row| {
            let r = row.to_slice().expect("standard layout");
            r.iter()
                .zip(vs)
                .map(|(a, b)| f64::from(*a) * b)
                .sum::<f64>()
        }))
    };
    let atv = |u: ndarray::ArrayView1<'_, f64>| -> Array1<f64> {
        let mut y = vec![0.0f64; cols];
        for (row, &ui) in m.outer_iter().zip(u.iter()) {
            if ui != 0.0 {
                let r = row.to_slice().expect("standard layout");
                y.iter_mut()
                    .zip(r)
                    .for_each(|(y, a)| *y += ui * f64::from(*a));
            }
        }
        Array1::from(y)
    };
    lanczos(rows, cols, k, av, atv)
        .unwrap_or_else(|| subspace_iteration_svd(m.mapv(f64::from).view(), k))
}

/// Golub–Kahan–Lanczos on the operator given by `av = M v` and `atv = Mᵀ u`; `None` on breakdown
/// before `k` triplets exist.
fn lanczos<A, T>(rows: usize, cols: usize, k: usize, av: A, atv: T) -> Option<Svd>
where
    A: Fn(ndarray::ArrayView1<'_, f64>) -> Array1<f64>,
    T: Fn(ndarray::ArrayView1<'_, f64>) -> Array1<f64>,
{
    let p_max = rows.min(cols);
    let mut vv = Array2::<f64>::zeros((p_max + 1, cols)); // rows: right Lanczos vectors
    let mut uu = Array2::<f64>::zeros((p_max, rows)); // rows: left Lanczos vectors
    let mut alpha: Vec<f64> = Vec::new();
    let mut beta: Vec<f64> = Vec::new();
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut v0 = Array1::from_shape_fn(cols, |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    });
    v0 /= v0.dot(&v0).sqrt();
    vv.row_mut(0).assign(&v0);
    let reorth = |basis: ArrayView2<'_, f64>, x: &mut Array1<f64>| {
        for _ in 0..2 {
            let c = basis.dot(&*x);
            *x -= &basis.t().dot(&c);
        }
    };
    let mut scale = 0.0f64;
    for j in 0..p_max {
        // u_j = M v_j - beta_{j-1} u_{j-1}, orthogonalised against u_0..u_{j-1}
        let mut u = av(vv.row(j));
        reorth(uu.slice(s![..j, ..]), &mut u);
        let a = u.dot(&u).sqrt();
        scale = scale.max(a);
        if a <= 1e-13 * scale.max(f64::MIN_POSITIVE) {
            return (j >= k).then(|| lanczos_ritz(&uu, &vv, &alpha, &beta, j, k).0);
        }
        uu.row_mut(j).assign(&(u / a));
        alpha.push(a);
        // v_{j+1} = Mᵀ u_j - alpha_j v_j, orthogonalised against v_0..v_j
        let mut v = atv(uu.row(j));
        reorth(vv.slice(s![..=j, ..]), &mut v);
        let b = v.dot(&v).sqrt();
        scale = scale.max(b);
        let n = j + 1;
        if b <= 1e-13 * scale {
            // invariant subspace found: the Ritz triplets are exact
            return (n >= k).then(|| lanczos_ritz(&uu, &vv, &alpha, &beta, n, k).0);
        }
        vv.row_mut(j + 1).assign(&(v / b));
        beta.push(b);
        if n >= k + 8 && (n % 8 == 0 || n == p_max) {
            let (svd_k, resid) = lanczos_ritz(&uu, &vv, &alpha, &beta, n, k);
            if resid <= 1e-10 * svd_k.s[0] || n == p_max {
                return Some(svd_k);
            }
        }
    }
    None
}

/// `Mᵀ x` as a sum of scaled rows of `M`: contiguous memory access for a row-major `M` (a plain
/// transposed mat-vec walks `M` by columns, one cache miss per element).
///
/// # Shapes
/// `m: [rows, cols]`, `x: [rows]` -> `[cols]`.
fn mat_t_vec(m: ArrayView2<'_, f64>, x: ndarray::ArrayView1<'_, f64>) -> Array1<f64> {
    if m.is_standard_layout() {
        let mut y = Array1::<f64>::zeros(m.ncols());
        for (row, &xi) in m.outer_iter().zip(x.iter()) {
            if xi != 0.0 {
                y.scaled_add(xi, &row);
            }
        }
        y
    } else {
        m.t().dot(&x)
    }
}

/// Ritz triplets of `n` Lanczos steps and the largest residual bound among the leading `k`.
/// `B` is upper bidiagonal with `alpha` on the diagonal and `beta` above it: `M V_n = U_n B`.
fn lanczos_ritz(
    uu: &Array2<f64>,
    vv: &Array2<f64>,
    alpha: &[f64],
    beta: &[f64],
    n: usize,
    k: usize,
) -> (Svd, f64) {
    let mut b = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        b[[i, i]] = alpha[i];
        if i + 1 < n {
            b[[i, i + 1]] = beta[i];
        }
    }
    let inner = svd(b.view()).truncate(k);
    // residual of triplet i: beta_n * |last component of the left singular vector of B|
    let beta_n = beta.get(n - 1).copied().unwrap_or(0.0);
    let resid = (0..inner.s.len())
        .map(|i| beta_n * inner.u[[n - 1, i]].abs())
        .fold(0.0, f64::max);
    let u = uu.slice(s![..n, ..]).t().dot(&inner.u);
    let vt = inner.vt.dot(&vv.slice(s![..n, ..]));
    (Svd { u, s: inner.s, vt }, resid)
}

/// Fallback of [`truncated_svd`]: leading `k` singular triplets by subspace iteration with Rayleigh–Ritz, in
/// f64, with oversampling `l = k + max(k, 16)`; falls back to the full SVD when `k` is not much
/// smaller than the matrix. Iterates until the leading `k` Ritz values agree to `1e-12 · σ₁` between
/// two iterations (at most 300 iterations). Slow convergence only happens when `σ_k ≈ σ_{k+1}`, where
/// the competing rank-`k` approximations are almost equally good.
///
/// # Shapes
/// `m: [rows, cols]` -> `U: [rows, k']`, `s: [k']`, `Vᵀ: [k', cols]`, `k' = min(k, rows, cols)`.
fn subspace_iteration_svd(m: ArrayView2<'_, f64>, k: usize) -> Svd {
    let (rows, cols) = m.dim();
    let small = rows.min(cols);
    let k = k.min(small);
    let l = (k + k.max(16)).min(small);
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
    let (mut q, _) = qr(m.dot(&omega).view()); // [rows, l], spans the current left subspace
    let mut prev: Option<Array1<f64>> = None;
    for _ in 0..300 {
        // z = Mᵀ q = (qᵀ M)ᵀ: its SVD gives the Ritz triplets of the current subspace.
        let z = m.t().dot(&q); // [cols, l]
        let ritz = svd(z.view()); // z = U_z S V_zᵀ  =>  qᵀ M = V_z S U_zᵀ
        let sk = ritz.s.slice(s![..k]).to_owned();
        let done = prev.as_ref().is_some_and(|p| {
            let scale = sk[0].max(f64::MIN_POSITIVE);
            p.iter()
                .zip(sk.iter())
                .all(|(a, b)| (a - b).abs() <= 1e-12 * scale)
        });
        if done {
            return Svd {
                u: q.dot(&ritz.vt.t()),
                s: ritz.s,
                vt: ritz.u.t().to_owned(),
            }
            .truncate(k);
        }
        prev = Some(sk);
        let (qz, _) = qr(z.view());
        let (qn, _) = qr(m.dot(&qz).view());
        q = qn;
    }
    let z = m.t().dot(&q);
    let ritz = svd(z.view());
    Svd {
        u: q.dot(&ritz.vt.t()),
        s: ritz.s,
        vt: ritz.u.t().to_owned(),
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

    /// A `[rows, cols]` matrix of rank at most `rank` (plus `noise`), from a seed.
    fn low_rank(rows: usize, cols: usize, rank: usize, noise: f64, seed: u64) -> Array2<f64> {
        let mut st = seed | 1;
        let mut rnd = move || {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (st >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let b = Array2::from_shape_fn((rows, rank), |(_, j)| rnd() * 0.8f64.powi(j as i32));
        let a = Array2::from_shape_fn((rank, cols), |_| rnd());
        let n = Array2::from_shape_fn((rows, cols), |_| noise * rnd());
        b.dot(&a) + n
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// faer's decompositions on random shapes (tall, wide, beyond the block sizes), products of
        /// random ranks and non-contiguous views: U·S·Vᵀ ≈ M, orthonormal U and V, Q·R ≈ M.
        #[test]
        fn faer_decompositions_reconstruct(rows in 1usize..90, cols in 1usize..90, rank in 1usize..12,
                                           noise in prop::sample::select(vec![0.0, 1e-6, 1.0]),
                                           transposed in any::<bool>(), seed in any::<u64>()) {
            let owned = low_rank(rows, cols, rank, noise, seed);
            let m = if transposed { owned.t() } else { owned.view() };
            let scale = 1.0 + frobenius(m);
            let d = svd(m);
            let k = rows.min(cols);
            prop_assert_eq!((d.u.dim(), d.s.len(), d.vt.dim()), ((m.nrows(), k), k, (k, m.ncols())));
            prop_assert!(max_abs_diff(&d.reconstruct(), &m.to_owned()) < 1e-12 * scale);
            prop_assert!(orthonormal_cols(&d.u) < 1e-12 * k as f64);
            prop_assert!(orthonormal_cols(&d.vt.t().to_owned()) < 1e-12 * k as f64);
            for w in d.s.as_slice().unwrap().windows(2) { prop_assert!(w[0] >= w[1]); }
            prop_assert!(d.s.iter().all(|&x| x >= 0.0));
            let (q, r) = qr(m);
            prop_assert!(max_abs_diff(&q.dot(&r), &m.to_owned()) < 1e-12 * scale);
            prop_assert!(orthonormal_cols(&q) < 1e-12 * k as f64);
            // the low-rank path agrees with the dense SVD of the product
            let b = low_rank(rows, rank, rank, 0.0, seed ^ 1);
            let a = low_rank(rank, cols, rank, 0.0, seed ^ 2);
            let p = svd_of_product(b.view(), a.view());
            let dense = b.dot(&a);
            let e = svd(dense.view());
            let pscale = 1.0 + e.s[0];
            prop_assert!(max_abs_diff(&p.reconstruct(), &dense) < 1e-12 * pscale);
            prop_assert!(orthonormal_cols(&p.u) < 1e-12 * k as f64);
            prop_assert!(orthonormal_cols(&p.vt.t().to_owned()) < 1e-12 * k as f64);
            for i in 0..p.s.len() { prop_assert!((p.s[i] - e.s[i]).abs() < 1e-12 * pscale); }
        }

        /// The partial SVD agrees with faer's truncated full SVD (values, and the rank-k reconstruction,
        /// which does not depend on the signs of the vectors) for sizes that take the Lanczos path.
        #[test]
        fn truncated_svd_agrees_with_full(rows in 65usize..160, cols in 65usize..160, rank in 1usize..20,
                                          k in 1usize..16, seed in any::<u64>()) {
            // k inside the signal, so the k-th value is separated from the noise cluster
            let k = k.min(rank);
            let m = low_rank(rows, cols, rank, 1e-6, seed);
            let exact = svd(m.view()).truncate(k);
            // f64 operator: to the Lanczos tolerance; f32 operator: to f32 rounding of the matrix.
            let runs = [(truncated_svd(m.view(), k), 1e-9), (truncated_svd_f32(m.mapv(|x| x as f32).view(), k), 1e-5)];
            for (t, tol) in runs {
                prop_assert_eq!(t.s.len(), k);
                for i in 0..k {
                    prop_assert!((t.s[i] - exact.s[i]).abs() <= tol * exact.s[0], "{} {} vs {}", i, t.s[i], exact.s[i]);
                }
                let err_t = frobenius((&m - &t.reconstruct()).view());
                let err_e = frobenius((&m - &exact.reconstruct()).view());
                prop_assert!(err_t <= err_e + tol * exact.s[0], "{} vs {}", err_t, err_e);
            }
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
    fn truncated_svd_with_repeated_and_zero_singular_values() {
        let (rows, cols) = (240, 160);
        let mut st = 7u64;
        let mut rnd = || {
            st = st
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (st >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let (qu, _) = qr(Array2::from_shape_fn((rows, 20), |_| rnd()).view());
        let (qv, _) = qr(Array2::from_shape_fn((cols, 20), |_| rnd()).view());
        let sv: Vec<f64> = (0..20)
            .map(|i| match i {
                0..=2 => 5.0,
                3..=4 => 3.0,
                _ => 1.0 / (i as f64),
            })
            .collect();
        let mut us = qu.clone();
        for (i, s) in sv.iter().enumerate() {
            us.column_mut(i).mapv_inplace(|x| x * s);
        }
        let m = us.dot(&qv.t());
        for k in [2, 4, 6, 25] {
            let t = truncated_svd(m.view(), k);
            let want: Vec<f64> = sv
                .iter()
                .copied()
                .chain(std::iter::repeat(0.0))
                .take(k)
                .collect();
            for (i, w) in want.iter().enumerate().take(t.s.len()) {
                assert!((t.s[i] - w).abs() < 1e-8, "k={k} i={i}: {} vs {w}", t.s[i]);
            }
            let exact = svd(m.view()).truncate(k);
            let err_t = frobenius((&m - &t.reconstruct()).view());
            let err_e = frobenius((&m - &exact.reconstruct()).view());
            assert!((err_t - err_e).abs() < 1e-8, "k={k}: {err_t} vs {err_e}");
            let t32 = truncated_svd_f32(m.mapv(|x| x as f32).view(), k);
            for (i, (got, w)) in t32.s.iter().zip(&want).enumerate() {
                assert!((got - w).abs() < 1e-5, "f32 k={k} i={i}");
            }
        }
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
