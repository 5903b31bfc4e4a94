//! The Vendi score (Friedman & Dieng), DiverseEvol's diversity measure: with rows L2-normalised, `K = X Xᵀ` (cosine
//! kernel), `λ` the eigenvalues of `K / n`, `VS = exp(-Σ λ_i log λ_i)`: between 1 (all rows the same direction) and
//! `n` (mutually orthogonal rows).
//!
//! Only the nonzero eigenvalues matter and `X Xᵀ / n` (n×n) shares them with `Xᵀ X / n` (d×d), so the smaller Gram is
//! built (in f64) and its eigenvalues found by cyclic Jacobi rotations.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::distance::check_finite;
use crate::error::{Result, SelectError};

/// Which Gram matrix to decompose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gram {
    /// The smaller of n×n and d×d.
    Auto,
    /// `X Xᵀ / n`.
    Rows,
    /// `Xᵀ X / n`.
    Columns,
}

/// Vendi score of the rows of `x`.
///
/// # Shapes
/// `x: [n, d]`
///
/// # Errors
/// Empty input, NaN/Inf, zero rows (no direction), non-convergence.
pub fn vendi_score(x: ArrayView2<'_, f32>) -> Result<f64> {
    vendi_score_with(x, Gram::Auto)
}

/// [`vendi_score`] with an explicit Gram choice.
pub fn vendi_score_with(x: ArrayView2<'_, f32>, gram: Gram) -> Result<f64> {
    let (n, d) = x.dim();
    if n == 0 || d == 0 {
        return Err(SelectError::Empty {
            what: "Vendi input".into(),
            hint: "need at least one row with at least one column".into(),
        });
    }
    check_finite(x, "Vendi input")?;
    let mut u = Array2::<f64>::zeros((n, d));
    for (i, (mut dst, src)) in u.outer_iter_mut().zip(x.outer_iter()).enumerate() {
        let norm: f64 = src
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            return Err(SelectError::param(
                "Vendi input",
                format!("row {i} is a zero vector; the cosine kernel needs a direction"),
            ));
        }
        dst.iter_mut()
            .zip(src)
            .for_each(|(a, &b)| *a = b as f64 / norm);
    }
    let rows = match gram {
        Gram::Auto => n <= d,
        Gram::Rows => true,
        Gram::Columns => false,
    };
    let k = if rows { u.dot(&u.t()) } else { u.t().dot(&u) } / n as f64;
    let eig = symmetric_eigenvalues(k)?;
    let h: f64 = eig
        .iter()
        .filter(|&&l| l > 1e-12)
        .map(|&l| -l * l.ln())
        .sum();
    Ok(h.exp())
}

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (unordered).
///
/// # Shapes
/// `a: [m, m]` `-> [m]`
pub fn symmetric_eigenvalues(mut a: Array2<f64>) -> Result<Vec<f64>> {
    let m = a.nrows();
    if a.ncols() != m {
        return Err(SelectError::DimensionMismatch {
            what: "symmetric eigen-solve (matrix must be square)".into(),
            expected: m,
            found: a.ncols(),
        });
    }
    let total: f64 = a.iter().map(|v| v * v).sum();
    const SWEEPS: usize = 60;
    for _ in 0..SWEEPS {
        let off: f64 = (0..m)
            .into_par_iter()
            .map(|i| {
                (0..m)
                    .filter(|&j| j != i)
                    .map(|j| a[[i, j]] * a[[i, j]])
                    .sum::<f64>()
            })
            .sum();
        if off <= 1e-24 * total.max(1e-300) {
            return Ok((0..m).map(|i| a[[i, i]]).collect());
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[[p, q]];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- Jᵀ A J on rows/columns p and q.
                for k in 0..m {
                    let akp = a[[k, p]];
                    let akq = a[[k, q]];
                    a[[k, p]] = c * akp - s * akq;
                    a[[k, q]] = s * akp + c * akq;
                }
                for k in 0..m {
                    let apk = a[[p, k]];
                    let aqk = a[[q, k]];
                    a[[p, k]] = c * apk - s * aqk;
                    a[[q, k]] = s * apk + c * aqk;
                }
            }
        }
    }
    Err(SelectError::NoConvergence {
        what: "Jacobi eigenvalue iteration".into(),
        iterations: SWEEPS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use proptest::prelude::*;

    #[test]
    fn extremes() {
        let same = array![[1.0f32, 2.0, 3.0], [2.0, 4.0, 6.0], [0.5, 1.0, 1.5]];
        assert!((vendi_score(same.view()).unwrap() - 1.0).abs() < 1e-9);
        let ortho = array![
            [1.0f32, 0.0, 0.0, 0.0],
            [0.0, 3.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 2.0]
        ];
        assert!((vendi_score(ortho.view()).unwrap() - 3.0).abs() < 1e-9);
        assert!(vendi_score(array![[0.0f32, 0.0]].view()).is_err());
        assert!(vendi_score(Array2::<f32>::zeros((0, 3)).view()).is_err());
    }

    #[test]
    fn eigenvalues_of_known_matrix() {
        let a = array![[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 5.0]];
        let mut e = symmetric_eigenvalues(a).unwrap();
        e.sort_by(f64::total_cmp);
        for (x, y) in e.iter().zip([1.0, 3.0, 5.0]) {
            assert!((x - y).abs() < 1e-10, "{e:?}");
        }
    }

    proptest! {
        #[test]
        fn both_grams_agree(n in 1usize..9, d in 1usize..9, v in proptest::collection::vec(0.1f32..1.0, 81)) {
            let x = Array2::from_shape_fn((n, d), |(i, j)| v[i * 9 + j] * if (i + j) % 3 == 0 { -1.0 } else { 1.0 });
            let a = vendi_score_with(x.view(), Gram::Rows).unwrap();
            let b = vendi_score_with(x.view(), Gram::Columns).unwrap();
            prop_assert!((a - b).abs() < 1e-8 * a.max(1.0), "{} vs {}", a, b);
            prop_assert!(a >= 1.0 - 1e-9 && a <= n.min(d) as f64 + 1e-9);
        }
    }
}
