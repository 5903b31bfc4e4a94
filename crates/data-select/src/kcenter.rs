//! k-center greedy (Gonzalez farthest-first traversal), as in DiverseEvol's `KCenterSampling.query`.
//!
//! Each step picks the unlabelled row whose distance to its nearest center (labelled rows plus earlier picks) is
//! largest; ties go to the lowest row index (torch `argmax` over rows kept in ascending order). Same picks as the
//! reference on the same inputs, with these documented differences:
//! - the reference builds the full N×N matrix; this module keeps one running minimum per row (O(N) memory);
//! - the reference returns the new indices sorted ascending; [`KCenterReport::picks`] is in pick order;
//! - with an empty labelled set the reference fails (`min` over an empty dimension); here every row starts at +∞, so
//!   the first pick is row 0;
//! - when `k` exceeds the unlabelled rows the reference fails (`argmax` of an empty tensor); here all of them are
//!   returned and [`KCenterReport::truncated`] is set;
//! - negative squared distances from rounding are clamped to 0 (the reference gets NaN); see [`crate::distance`].
//!
//! # Speed
//! [`Strategy::Lazy`] (default) keeps the running minima *stale*: a row's value is only brought up to date (folded with
//! the centers added since its last update, four centers per pass over the row) when it reaches the top of a max-heap.
//! Stale values are upper bounds of the true ones, so when the top of the heap is up to date it is the exact argmax;
//! rows far from the frontier are never touched again. [`Strategy::Eager`] updates every row after every pick (the
//! textbook running-min loop). Both compute each pairwise distance with the same kernel, so they return identical
//! picks; the choice only changes the work done.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::Serialize;

use crate::distance::{Metric, Prepared};
use crate::error::{Result, SelectError};

/// How the running minima are maintained (same picks, different work).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Lazy max-heap of stale upper bounds (fast when few rows are near the frontier).
    #[default]
    Lazy,
    /// Update every row after every pick.
    Eager,
}

crate::named_enum!(Strategy, "k-center strategy", { Lazy => "lazy", Eager => "eager" });

/// Options for [`kcenter_greedy`].
#[derive(Clone, Debug)]
pub struct KCenterOptions {
    /// Number of rows to pick.
    pub k: usize,
    /// Distance.
    pub metric: Metric,
    /// Work strategy (does not change the picks).
    pub strategy: Strategy,
}

impl KCenterOptions {
    /// Euclidean, lazy, `k` picks.
    pub fn new(k: usize) -> Self {
        KCenterOptions {
            k,
            metric: Metric::Euclidean,
            strategy: Strategy::Lazy,
        }
    }
}

/// Result of [`kcenter_greedy`].
#[derive(Clone, Debug, Serialize)]
pub struct KCenterReport {
    /// Picked row indices in pick order.
    pub picks: Vec<usize>,
    /// For each pick, its distance to the nearest earlier center at the time it was picked (`null`/∞ for a first
    /// pick with no labelled rows). Non-increasing.
    pub pick_distances: Vec<f32>,
    /// Picks requested.
    pub requested: usize,
    /// True when fewer than `requested` rows were unlabelled, so all of them were returned.
    pub truncated: bool,
    /// Distinct labelled rows used as initial centers.
    pub labeled: usize,
    /// Labelled indices given more than once (ignored after the first).
    pub duplicate_labels: usize,
    /// Pairwise distances evaluated (work measure).
    pub distance_evaluations: u64,
    /// The metric used.
    pub metric: Metric,
}

/// Heap entry: larger distance first, then lower index.
#[derive(Clone, Copy, PartialEq)]
struct Entry {
    dist: f32,
    idx: usize,
}

impl Eq for Entry {}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then_with(|| other.idx.cmp(&self.idx))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Rows per parallel task in the dense pass.
const ROW_BLOCK: usize = 64;

/// Rows refreshed together when the heap top is stale.
const REFRESH_BATCH: usize = 32;

/// Farthest-first traversal from the `labeled` rows of `embeddings`, picking `opts.k` unlabelled rows.
///
/// # Shapes
/// `embeddings: [n, d]`; `labeled`: row indices `< n` (any order; repeats ignored)
///
/// # Errors
/// Non-finite embeddings, labelled indices out of range.
pub fn kcenter_greedy(
    embeddings: ArrayView2<'_, f32>,
    labeled: &[usize],
    opts: &KCenterOptions,
) -> Result<KCenterReport> {
    let prepared = Prepared::new(embeddings, opts.metric, "embeddings")?;
    kcenter_prepared(&prepared, labeled, opts)
}

/// [`kcenter_greedy`] on an already prepared matrix (its metric wins over `opts.metric`).
pub fn kcenter_prepared(
    p: &Prepared,
    labeled: &[usize],
    opts: &KCenterOptions,
) -> Result<KCenterReport> {
    let n = p.len();
    let mut is_center = vec![false; n];
    let mut centers: Vec<usize> = Vec::with_capacity(labeled.len() + opts.k.min(n));
    let mut duplicate_labels = 0;
    for &l in labeled {
        if l >= n {
            return Err(SelectError::IndexOutOfRange {
                what: "labelled indices".into(),
                index: l,
                len: n,
            });
        }
        if is_center[l] {
            duplicate_labels += 1;
        } else {
            is_center[l] = true;
            centers.push(l);
        }
    }
    let n_labeled = centers.len();
    let unlabeled: Vec<usize> = (0..n).filter(|&i| !is_center[i]).collect();
    let take = opts.k.min(unlabeled.len());

    // Initial minima over the labelled centers: the only dense pass, parallel over blocks of rows.
    let mut best = vec![f32::INFINITY; n];
    let mut evals = 0u64;
    if n_labeled > 0 && take > 0 {
        let mut init = vec![f32::INFINITY; unlabeled.len()];
        init.par_chunks_mut(ROW_BLOCK)
            .zip(unlabeled.par_chunks(ROW_BLOCK))
            .for_each(|(b, rows)| p.min_block(rows, &centers, b));
        for (&q, v) in unlabeled.iter().zip(init) {
            best[q] = v;
        }
        evals += (unlabeled.len() * n_labeled) as u64;
    }

    let (picks, dists, more) = match opts.strategy {
        Strategy::Lazy => lazy(p, &unlabeled, &mut best, &mut centers, take),
        Strategy::Eager => eager(p, &unlabeled, &mut best, &mut centers, &mut is_center, take),
    };
    evals += more;
    Ok(KCenterReport {
        picks,
        pick_distances: dists,
        requested: opts.k,
        truncated: opts.k > unlabeled.len(),
        labeled: n_labeled,
        duplicate_labels,
        distance_evaluations: evals,
        metric: p.metric(),
    })
}

fn lazy(
    p: &Prepared,
    unlabeled: &[usize],
    best: &mut [f32],
    centers: &mut Vec<usize>,
    take: usize,
) -> (Vec<usize>, Vec<f32>, u64) {
    let n = p.len();
    // stamp[q]: how many entries of `centers` are folded into best[q].
    let mut stamp = vec![centers.len(); n];
    let mut heap: BinaryHeap<Entry> = unlabeled
        .iter()
        .map(|&q| Entry {
            dist: best[q],
            idx: q,
        })
        .collect();
    let mut picks = Vec::with_capacity(take);
    let mut dists = Vec::with_capacity(take);
    let mut evals = 0u64;
    let mut batch: Vec<usize> = Vec::with_capacity(REFRESH_BATCH);
    while picks.len() < take {
        let top = *heap.peek().expect("heap holds every unpicked row");
        if stamp[top.idx] == centers.len() {
            heap.pop();
            picks.push(top.idx);
            dists.push(top.dist);
            centers.push(top.idx);
            continue;
        }
        // Refresh the stale rows at the top (a few extra rows are harmless: values are exact either way).
        batch.clear();
        while batch.len() < REFRESH_BATCH {
            match heap.peek() {
                Some(t) if stamp[t.idx] != centers.len() => {
                    batch.push(heap.pop().expect("peeked").idx)
                }
                _ => break,
            }
        }
        let work: usize = batch.iter().map(|&q| centers.len() - stamp[q]).sum();
        let refresh = |&q: &usize| {
            let (mut b, mut a) = (best[q], usize::MAX);
            p.min_into(q, &centers[stamp[q]..], &mut b, &mut a);
            b
        };
        let updated: Vec<f32> = if work * p.dim() > 1 << 16 {
            batch.par_iter().map(refresh).collect()
        } else {
            batch.iter().map(refresh).collect()
        };
        evals += work as u64;
        for (&q, v) in batch.iter().zip(updated) {
            best[q] = v;
            stamp[q] = centers.len();
            heap.push(Entry { dist: v, idx: q });
        }
    }
    (picks, dists, evals)
}

fn eager(
    p: &Prepared,
    unlabeled: &[usize],
    best: &mut [f32],
    centers: &mut Vec<usize>,
    is_center: &mut [bool],
    take: usize,
) -> (Vec<usize>, Vec<f32>, u64) {
    let mut rows: Vec<usize> = unlabeled.to_vec();
    let mut vals: Vec<f32> = rows.iter().map(|&q| best[q]).collect();
    let mut picks = Vec::with_capacity(take);
    let mut dists = Vec::with_capacity(take);
    let mut evals = 0u64;
    for _ in 0..take {
        // argmax, first maximum in ascending index order (rows stay sorted).
        let mut bi = 0;
        for i in 1..rows.len() {
            if vals[i] > vals[bi] {
                bi = i;
            }
        }
        let s = rows[bi];
        picks.push(s);
        dists.push(vals[bi]);
        centers.push(s);
        is_center[s] = true;
        rows.remove(bi);
        vals.remove(bi);
        let sr = p.row(s);
        let ssq = p.aux(s);
        rows.par_iter()
            .zip(vals.par_iter_mut())
            .with_min_len(256)
            .for_each(|(&q, v)| {
                let d = p.finish(crate::distance::dot(p.row(q), sr), q, ssq);
                if d < *v {
                    *v = d;
                }
            });
        evals += rows.len() as u64;
    }
    (picks, dists, evals)
}

/// The k-center radius of `centers` (rows of `p`): the largest distance from any row to its nearest center (0 for an empty pool,
/// ∞ for no centers).
///
/// # Shapes
/// `p: [n, d]`, `centers: [c]` (indices `< n`) `-> scalar`
pub fn coverage_radius(p: &Prepared, centers: &[usize]) -> f32 {
    (0..p.len())
        .into_par_iter()
        .map(|q| {
            let (mut b, mut a) = (f32::INFINITY, usize::MAX);
            p.min_into(q, centers, &mut b, &mut a);
            b
        })
        .reduce(|| 0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};
    use proptest::strategy::Strategy as PStrategy;

    fn run(m: &Array2<f32>, labeled: &[usize], k: usize, strategy: Strategy) -> KCenterReport {
        let opts = KCenterOptions {
            k,
            metric: Metric::Euclidean,
            strategy,
        };
        kcenter_greedy(m.view(), labeled, &opts).unwrap()
    }

    #[test]
    fn line_example() {
        // points on a line at 0, 1, 2, 10, 11; start from 0
        let m = array![[0.0f32], [1.0], [2.0], [10.0], [11.0]];
        let r = run(&m, &[0], 3, Strategy::Lazy);
        // after 11 and 2: tie between 1 (dist 1 to 0/2) and 3 (dist 1 to 4): lowest index
        assert_eq!(r.picks, vec![4, 2, 1]);
        assert_eq!(r.pick_distances, vec![11.0, 2.0, 1.0]);
        let r = run(&m, &[0], 4, Strategy::Lazy);
        assert_eq!(r.picks, vec![4, 2, 1, 3]);
    }

    #[test]
    fn empty_labels_start_at_row_zero_and_duplicates_tie() {
        let m = array![[1.0f32, 1.0], [5.0, 5.0], [5.0, 5.0], [0.0, 0.0]];
        let r = run(&m, &[], 4, Strategy::Lazy);
        assert_eq!(r.picks[0], 0);
        assert_eq!(r.picks[1], 1);
        assert_eq!(r.picks, vec![0, 1, 3, 2]);
        assert_eq!(r.pick_distances[3], 0.0);
    }

    #[test]
    fn k_larger_than_pool_and_empty_pool() {
        let m = array![[0.0f32], [3.0], [1.0]];
        let r = run(&m, &[1], 10, Strategy::Lazy);
        assert!(r.truncated);
        assert_eq!(r.picks, vec![0, 2]);
        let e = Array2::<f32>::zeros((0, 4));
        let r = run(&e, &[], 3, Strategy::Lazy);
        assert!(r.picks.is_empty() && r.truncated);
    }

    #[test]
    fn bad_inputs() {
        let m = array![[0.0f32], [f32::INFINITY]];
        assert!(matches!(
            kcenter_greedy(m.view(), &[], &KCenterOptions::new(1)),
            Err(SelectError::NonFinite { row: 1, .. })
        ));
        let m = array![[0.0f32], [1.0]];
        assert!(matches!(
            kcenter_greedy(m.view(), &[2], &KCenterOptions::new(1)),
            Err(SelectError::IndexOutOfRange { index: 2, .. })
        ));
        let r = run(&m, &[1, 1], 1, Strategy::Eager);
        assert_eq!(
            (r.labeled, r.duplicate_labels, r.picks.clone()),
            (1, 1, vec![0])
        );
    }

    #[test]
    fn cosine_ignores_scale_and_handles_zero_rows() {
        let m = array![[1.0f32, 0.0], [100.0, 1.0], [0.0, 0.0], [0.0, 2.0]];
        let opts = KCenterOptions {
            k: 2,
            metric: Metric::Cosine,
            strategy: Strategy::Lazy,
        };
        let r = kcenter_greedy(m.view(), &[0], &opts).unwrap();
        // row 2 (zero) and row 3 (orthogonal) are both at distance 1; lowest index wins.
        assert_eq!(r.picks, vec![2, 3]);
    }

    fn brute_force_radius(p: &Prepared, k: usize) -> f32 {
        let n = p.len();
        let mut best = f32::INFINITY;
        // enumerate all k-subsets of 0..n (n <= 8)
        for mask in 0u32..(1 << n) {
            if mask.count_ones() as usize != k {
                continue;
            }
            let c: Vec<usize> = (0..n).filter(|i| mask >> i & 1 == 1).collect();
            best = best.min(coverage_radius(p, &c));
        }
        best
    }

    fn matrix(max_n: usize) -> impl PStrategy<Value = Array2<f32>> {
        (1usize..=max_n, 1usize..4).prop_flat_map(|(n, d)| {
            proptest::collection::vec(-4i32..5, n * d).prop_map(move |v| {
                Array2::from_shape_vec((n, d), v.into_iter().map(|x| x as f32 * 0.5).collect())
                    .unwrap()
            })
        })
    }

    proptest! {
        #[test]
        fn greedy_within_twice_optimal(m in matrix(8), k in 1usize..4) {
            let k = k.min(m.nrows());
            let p = Prepared::new(m.view(), Metric::Euclidean, "m").unwrap();
            let r = kcenter_prepared(&p, &[], &KCenterOptions::new(k)).unwrap();
            let greedy = coverage_radius(&p, &r.picks);
            let opt = brute_force_radius(&p, k);
            prop_assert!(greedy <= 2.0 * opt + 1e-4, "greedy {} opt {}", greedy, opt);
        }

        #[test]
        fn lazy_equals_eager(m in matrix(40), k in 0usize..45, nl in 0usize..4, cos in any::<bool>()) {
            let labeled: Vec<usize> = (0..nl.min(m.nrows())).map(|i| (i * 7) % m.nrows()).collect();
            let metric = if cos { Metric::Cosine } else { Metric::Euclidean };
            let mk = |strategy| KCenterOptions { k, metric, strategy };
            let a = kcenter_greedy(m.view(), &labeled, &mk(Strategy::Lazy)).unwrap();
            let b = kcenter_greedy(m.view(), &labeled, &mk(Strategy::Eager)).unwrap();
            prop_assert_eq!(&a.picks, &b.picks);
            prop_assert_eq!(a.pick_distances.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            b.pick_distances.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            // picks are distinct, unlabelled, and their distances never increase
            let mut seen = std::collections::HashSet::new();
            for &q in &a.picks {
                prop_assert!(!labeled.contains(&q));
                prop_assert!(seen.insert(q));
            }
            prop_assert!(a.pick_distances.windows(2).all(|w| w[1] <= w[0]));
        }

        #[test]
        fn independent_of_thread_count(seed in any::<u64>(), n in 50usize..400, d in 1usize..40, k in 1usize..60) {
            let mut s = seed;
            let m = Array2::from_shape_fn((n, d), |_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            });
            let labeled = [0usize, n / 2];
            let run_with = |threads: usize, strategy| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| kcenter_greedy(m.view(), &labeled, &KCenterOptions { k, metric: Metric::Euclidean, strategy }).unwrap().picks)
            };
            let one = run_with(1, Strategy::Lazy);
            prop_assert_eq!(&one, &run_with(2, Strategy::Lazy));
            prop_assert_eq!(&one, &run_with(2, Strategy::Eager));
        }
    }
}
