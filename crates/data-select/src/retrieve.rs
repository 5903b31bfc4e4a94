//! Rocket's K-shot guided retrieval: keep the pool items closest to the K-shot examples.
//!
//! [`Similarity::Centroid`] (the code): `d(s) = ||e(s) - c||` with `c` the mean of the K-shot embeddings, not
//! re-normalised. [`Similarity::MeanDistance`]: `d(s) = (1/K) Σ_k ||e(s) - e_k||` (a different criterion; the code's
//! "mean over K-shot distances" is a no-op because it averages after building the centroid).
//!
//! The K-shot items count toward the budget: with `--budget N`, `N - K` pool items are selected, nearest first
//! (ties to the lower index; the code uses argpartition, an unordered set). Optional near-duplicate removal
//! ([`crate::dedup`]) runs over that window; with back-fill, further pool items in distance order are admitted
//! (only if they are not near-duplicates of a kept item) until the budget is met.

use ndarray::{Array1, ArrayView2, Axis};
use rayon::prelude::*;
use serde::Serialize;

use crate::dedup::{DedupMode, check_threshold, dedup_prepared, greedy_conflict};
use crate::distance::{Metric, Prepared, check_finite, dot};
use crate::error::{Result, SelectError};

/// The retrieval instruction Rocket's `data_aug.py` puts before every text for bge-m3 (MiniLM uses none).
pub const ROCKET_RETRIEVAL_PREFIX: &str =
    "Represent the following sentence for similar task retrieval: ";

/// How closeness to the K-shot set is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Similarity {
    /// Euclidean distance to the K-shot centroid (Rocket's code).
    #[default]
    Centroid,
    /// Mean Euclidean distance to each K-shot item.
    MeanDistance,
}

crate::named_enum!(Similarity, "similarity", { Centroid => "centroid", MeanDistance => "mean-distance" });

/// Near-duplicate removal settings.
#[derive(Clone, Copy, Debug)]
pub struct DedupOptions {
    /// Cosine similarity above which two items are duplicates (Rocket: 0.9).
    pub threshold: f32,
    /// Which rule.
    pub mode: DedupMode,
    /// Refill to the budget from further pool items.
    pub backfill: bool,
}

/// Options for [`retrieve`].
#[derive(Clone, Debug)]
pub struct RetrieveOptions {
    /// Total training-set size N, K-shot included.
    pub budget: usize,
    /// Closeness criterion.
    pub similarity: Similarity,
    /// Near-duplicate removal, if any.
    pub dedup: Option<DedupOptions>,
}

/// Result of [`retrieve`].
#[derive(Clone, Debug, Serialize)]
pub struct RetrieveReport {
    /// Selected pool indices, nearest first.
    pub selected: Vec<usize>,
    /// Their distances.
    pub distances: Vec<f32>,
    /// K.
    pub kshot: usize,
    /// Pool items wanted (`budget - K`, capped by the pool size).
    pub target: usize,
    /// Items removed as near-duplicates within the first window.
    pub dedup_dropped: usize,
    /// Items added by back-fill.
    pub backfilled: usize,
    /// How many short of `budget - K` the selection is.
    pub short_by: usize,
}

/// Distances of every pool row to the K-shot set.
///
/// # Shapes
/// `pool: [n, d]`, `kshot: [k, d]` `-> [n]`
pub fn distances_to_kshot(
    pool: ArrayView2<'_, f32>,
    kshot: ArrayView2<'_, f32>,
    similarity: Similarity,
) -> Result<Array1<f32>> {
    if kshot.nrows() == 0 {
        return Err(SelectError::Empty {
            what: "K-shot set".into(),
            hint: "retrieval needs at least one K-shot example".into(),
        });
    }
    if pool.ncols() != kshot.ncols() {
        return Err(SelectError::DimensionMismatch {
            what: "pool vs K-shot embedding width".into(),
            expected: kshot.ncols(),
            found: pool.ncols(),
        });
    }
    check_finite(kshot, "K-shot embeddings")?;
    let p = Prepared::new(pool, Metric::Euclidean, "pool embeddings")?;
    let centers = match similarity {
        Similarity::Centroid => kshot
            .mean_axis(Axis(0))
            .expect("non-empty")
            .insert_axis(Axis(0))
            .to_owned(),
        Similarity::MeanDistance => kshot.to_owned(),
    };
    let c = Prepared::new(centers.view(), Metric::Euclidean, "K-shot centers")?;
    let k = c.len() as f32;
    let d: Vec<f32> = (0..p.len())
        .into_par_iter()
        .with_min_len(64)
        .map(|i| {
            let s: f32 = (0..c.len())
                .map(|j| p.finish(dot(p.row(i), c.row(j)), i, c.aux(j)))
                .sum();
            s / k
        })
        .collect();
    Ok(Array1::from(d))
}

/// Indices of `d` sorted by value ascending, ties to the lower index.
pub fn argsort(d: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..d.len()).collect();
    idx.sort_by(|&a, &b| d[a].total_cmp(&d[b]).then(a.cmp(&b)));
    idx
}

/// Selects `budget - K` pool rows closest to the K-shot rows, with optional dedup and back-fill.
///
/// # Shapes
/// `pool: [n, d]`, `kshot: [k, d]`
///
/// # Errors
/// Empty K-shot, width mismatch, NaN/Inf, budget smaller than K, bad threshold.
pub fn retrieve(
    pool: ArrayView2<'_, f32>,
    kshot: ArrayView2<'_, f32>,
    opts: &RetrieveOptions,
) -> Result<RetrieveReport> {
    let k = kshot.nrows();
    if opts.budget < k {
        return Err(SelectError::param(
            "budget",
            format!(
                "{} is smaller than the K-shot set ({k}); the K-shot items count toward the budget",
                opts.budget
            ),
        ));
    }
    if let Some(dd) = &opts.dedup {
        check_threshold(dd.threshold)?;
    }
    let d = distances_to_kshot(pool, kshot, opts.similarity)?;
    let d = d.as_slice().expect("contiguous");
    let order = argsort(d);
    let want = opts.budget - k;
    let target = want.min(pool.nrows());
    let window = &order[..target];
    let (selected, dropped, backfilled) = match &opts.dedup {
        None => (window.to_vec(), 0, 0),
        Some(dd) => {
            let p = Prepared::new(pool, Metric::Cosine, "pool embeddings")?;
            let r = dedup_prepared(&p, window, dd.threshold, dd.mode)?;
            let mut kept = r.kept;
            let mut added = 0;
            if dd.backfill {
                for &i in &order[target..] {
                    if kept.len() >= target {
                        break;
                    }
                    if greedy_conflict(&p, &kept, i, dd.threshold).is_none() {
                        kept.push(i);
                        added += 1;
                    }
                }
            }
            (kept, r.dropped.len(), added)
        }
    };
    Ok(RetrieveReport {
        distances: selected.iter().map(|&i| d[i]).collect(),
        short_by: want - selected.len(),
        selected,
        kshot: k,
        target,
        dedup_dropped: dropped,
        backfilled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn pool() -> ndarray::Array2<f32> {
        array![
            [1.0f32, 0.0], // 0: at the K-shot
            [0.99, 0.01],  // 1: duplicate direction of 0
            [0.0, 1.0],    // 2: far
            [0.9, -0.3],   // 3: near
            [-1.0, 0.0],   // 4: farthest
            [0.98, 0.02],  // 5: duplicate of 0 and 1
        ]
    }

    #[test]
    fn centroid_ranking_and_budget() {
        let kshot = array![[1.0f32, 0.1], [1.0, -0.1]];
        let r = retrieve(
            pool().view(),
            kshot.view(),
            &RetrieveOptions {
                budget: 5,
                similarity: Similarity::Centroid,
                dedup: None,
            },
        )
        .unwrap();
        assert_eq!(r.selected, vec![0, 1, 5]);
        assert!(r.distances.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!((r.target, r.short_by), (3, 0));
    }

    #[test]
    fn mean_distance_differs_from_centroid() {
        // K-shot at (+-1, 0): the centroid is the origin; the two criteria rank these items differently.
        let kshot = array![[1.0f32, 0.0], [-1.0, 0.0]];
        let pool = array![[0.0f32, 0.0], [1.0, 0.0]];
        let c = distances_to_kshot(pool.view(), kshot.view(), Similarity::Centroid).unwrap();
        let m = distances_to_kshot(pool.view(), kshot.view(), Similarity::MeanDistance).unwrap();
        assert_eq!(c.to_vec(), vec![0.0, 1.0]);
        assert_eq!(m.to_vec(), vec![1.0, 1.0]);
    }

    #[test]
    fn dedup_then_backfill() {
        let kshot = array![[1.0f32, 0.0]];
        let mk = |mode, backfill| RetrieveOptions {
            budget: 4,
            similarity: Similarity::Centroid,
            dedup: Some(DedupOptions {
                threshold: 0.9,
                mode,
                backfill,
            }),
        };
        let r = retrieve(pool().view(), kshot.view(), &mk(DedupMode::Greedy, false)).unwrap();
        assert_eq!(r.selected, vec![0]);
        assert_eq!((r.dedup_dropped, r.short_by), (2, 2));
        let r = retrieve(pool().view(), kshot.view(), &mk(DedupMode::Greedy, true)).unwrap();
        // next nearest: 3 (cos with 0 is 0.949 > 0.9: rejected), then 2, then 4
        assert_eq!(r.selected, vec![0, 2, 4]);
        assert_eq!((r.backfilled, r.short_by), (2, 0));
    }

    #[test]
    fn bad_inputs() {
        let empty = ndarray::Array2::<f32>::zeros((0, 2));
        let opts = RetrieveOptions {
            budget: 3,
            similarity: Similarity::Centroid,
            dedup: None,
        };
        assert!(matches!(
            retrieve(pool().view(), empty.view(), &opts),
            Err(SelectError::Empty { .. })
        ));
        let wide = array![[1.0f32, 0.0, 0.0]];
        assert!(matches!(
            retrieve(pool().view(), wide.view(), &opts),
            Err(SelectError::DimensionMismatch { .. })
        ));
        let nan = array![[f32::NAN, 0.0]];
        assert!(matches!(
            retrieve(pool().view(), nan.view(), &opts),
            Err(SelectError::NonFinite { .. })
        ));
        let small = RetrieveOptions { budget: 0, ..opts };
        assert!(retrieve(pool().view(), array![[1.0f32, 0.0]].view(), &small).is_err());
    }
}
