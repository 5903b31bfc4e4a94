//! Baseline selectors: seeded random, k-means cluster sampling, and DiverseEvol's uncertainty selectors.
//!
//! All sampling uses `rand`'s `StdRng` seeded from a `u64` (reproducible for a given lockfile).

use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::Serialize;

use crate::distance::{Metric, Prepared, check_finite, dot};
use crate::error::{Result, SelectError};

/// Uniformly samples `k` of the rows `0..n` not in `exclude`, in sampling order; fewer when not enough remain.
///
/// # Errors
/// [`SelectError::IndexOutOfRange`] for an excluded index `>= n`; [`SelectError::Empty`] when
/// `k > 0` and no row is left to pick (an empty pool, or every row excluded), rather than an
/// empty selection.
pub fn random_select(n: usize, k: usize, seed: u64, exclude: &[usize]) -> Result<Vec<usize>> {
    let mut skip = vec![false; n];
    for &e in exclude {
        if e >= n {
            return Err(SelectError::IndexOutOfRange {
                what: "excluded indices".into(),
                index: e,
                len: n,
            });
        }
        skip[e] = true;
    }
    let mut free: Vec<usize> = (0..n).filter(|&i| !skip[i]).collect();
    if free.is_empty() && k > 0 {
        return Err(SelectError::Empty {
            what: format!(
                "the pool to pick from ({n} rows, {} excluded)",
                n - free.len()
            ),
            hint: "give a pool with rows that are not all labelled".into(),
        });
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let take = k.min(free.len());
    let (chosen, _) = free.partial_shuffle(&mut rng, take);
    Ok(chosen.to_vec())
}

/// A fitted k-means model.
#[derive(Clone, Debug)]
pub struct KMeans {
    /// Cluster centers.
    ///
    /// # Shapes
    /// `[clusters, d]`
    pub centroids: Array2<f32>,
    /// Cluster of each row.
    pub assignment: Vec<usize>,
    /// Sum of squared distances to the assigned centers.
    pub inertia: f64,
    /// Lloyd iterations run.
    pub iterations: usize,
}

/// Lloyd's k-means with k-means++ seeding (squared Euclidean), deterministic for a seed. Empty clusters are
/// re-seeded with the row farthest from its center.
///
/// # Shapes
/// `x: [n, d]` → centroids `[clusters, d]`
pub fn kmeans(
    x: ArrayView2<'_, f32>,
    clusters: usize,
    max_iter: usize,
    seed: u64,
) -> Result<KMeans> {
    let n = x.nrows();
    if clusters == 0 || clusters > n {
        return Err(SelectError::param(
            "clusters",
            format!("{clusters} clusters for {n} rows; need 1 <= clusters <= rows"),
        ));
    }
    let p = Prepared::new(x, Metric::Euclidean, "embeddings")?;
    let mut rng = StdRng::seed_from_u64(seed);
    // k-means++: first center uniform, then proportional to squared distance to the nearest chosen center.
    let mut chosen = vec![rand::Rng::random_range(&mut rng, 0..n)];
    let mut d2: Vec<f64> = (0..n).map(|i| sq(p.distance(i, chosen[0]))).collect();
    while chosen.len() < clusters {
        let total: f64 = d2.iter().sum();
        let next = if total <= 0.0 {
            // all remaining rows coincide with centers: take the lowest unchosen index
            (0..n).find(|i| !chosen.contains(i)).expect("clusters <= n")
        } else {
            let mut r = rand::Rng::random::<f64>(&mut rng) * total;
            let mut pick = n - 1;
            for (i, &w) in d2.iter().enumerate() {
                if w > 0.0 && r < w {
                    pick = i;
                    break;
                }
                r -= w;
            }
            pick
        };
        chosen.push(next);
        d2.par_iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = v.min(sq(p.distance(i, next))));
    }
    let mut centroids = Array2::zeros((clusters, x.ncols()));
    for (c, &i) in chosen.iter().enumerate() {
        centroids.row_mut(c).assign(&x.row(i));
    }
    let mut assignment = vec![usize::MAX; n];
    let mut iterations = 0;
    let mut inertia = 0.0;
    for it in 0..max_iter.max(1) {
        iterations = it + 1;
        let (assign, dists) = assign_rows(&p, centroids.view())?;
        inertia = dists.iter().map(|&d| d as f64).sum();
        let changed = assign != assignment;
        assignment = assign;
        if !changed {
            break;
        }
        let mut sums = Array2::<f64>::zeros((clusters, x.ncols()));
        let mut counts = vec![0usize; clusters];
        for (i, &c) in assignment.iter().enumerate() {
            counts[c] += 1;
            sums.row_mut(c)
                .iter_mut()
                .zip(x.row(i))
                .for_each(|(s, v)| *s += *v as f64);
        }
        let mut taken = vec![false; n];
        for (c, &count) in counts.iter().enumerate() {
            if count == 0 {
                let far = (0..n)
                    .filter(|&i| !taken[i])
                    .max_by(|&a, &b| dists[a].total_cmp(&dists[b]).then(b.cmp(&a)))
                    .expect("n >= clusters");
                taken[far] = true;
                centroids.row_mut(c).assign(&x.row(far));
            } else {
                let inv = 1.0 / count as f64;
                centroids
                    .row_mut(c)
                    .iter_mut()
                    .zip(sums.row(c))
                    .for_each(|(m, s)| *m = (s * inv) as f32);
            }
        }
    }
    Ok(KMeans {
        centroids,
        assignment,
        inertia,
        iterations,
    })
}

fn sq(v: f32) -> f64 {
    (v as f64) * (v as f64)
}

/// Nearest centroid (ties to the lower cluster) and squared distance of every row.
fn assign_rows(p: &Prepared, centroids: ArrayView2<'_, f32>) -> Result<(Vec<usize>, Vec<f32>)> {
    let c = Prepared::new(centroids, Metric::Euclidean, "centroids")?;
    Ok((0..p.len())
        .into_par_iter()
        .map(|i| {
            let mut best = (usize::MAX, f32::INFINITY);
            for j in 0..c.len() {
                let d = p.finish(dot(p.row(i), c.row(j)), i, c.aux(j));
                if d < best.1 {
                    best = (j, d);
                }
            }
            (best.0, best.1 * best.1)
        })
        .unzip())
}

/// How a budget is split over clusters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Allocation {
    /// Proportional to cluster size (largest remainder).
    #[default]
    Proportional,
    /// The same number per cluster.
    Equal,
}

crate::named_enum!(Allocation, "allocation", { Proportional => "proportional", Equal => "equal" });

/// Which members a cluster contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Within {
    /// Uniformly at random (seeded).
    #[default]
    Random,
    /// Nearest to the centroid first.
    Nearest,
}

crate::named_enum!(Within, "within-cluster rule", { Random => "random", Nearest => "nearest" });

/// Lloyd iteration cap of [`kmeans_select`] when the caller has no reason to choose another.
pub const DEFAULT_MAX_ITER: usize = 100;

/// Options for [`kmeans_select`].
#[derive(Clone, Debug)]
pub struct KMeansSelectOptions {
    /// Rows to select.
    pub budget: usize,
    /// Number of clusters.
    pub clusters: usize,
    /// Lloyd iteration cap.
    pub max_iter: usize,
    /// Seed for k-means++ and sampling.
    pub seed: u64,
    /// Budget split.
    pub allocation: Allocation,
    /// Per-cluster choice.
    pub within: Within,
}

/// Result of [`kmeans_select`].
#[derive(Clone, Debug, Serialize)]
pub struct KMeansSelectReport {
    /// Selected rows, cluster by cluster.
    pub picks: Vec<usize>,
    /// Size of each cluster.
    pub cluster_sizes: Vec<usize>,
    /// Rows taken from each cluster.
    pub taken: Vec<usize>,
    /// Final k-means inertia.
    pub inertia: f64,
    /// Lloyd iterations.
    pub iterations: usize,
}

/// Splits `budget` over clusters of the given sizes (never more than a cluster holds; leftovers go round-robin to
/// clusters with room, lowest index first).
pub fn allocate(sizes: &[usize], budget: usize, how: Allocation) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let budget = budget.min(total);
    let c = sizes.len();
    if c == 0 || budget == 0 {
        return vec![0; c];
    }
    let share: Vec<f64> = match how {
        Allocation::Proportional => sizes
            .iter()
            .map(|&s| budget as f64 * s as f64 / total as f64)
            .collect(),
        Allocation::Equal => vec![budget as f64 / c as f64; c],
    };
    let mut take: Vec<usize> = share
        .iter()
        .zip(sizes)
        .map(|(s, &n)| (s.floor() as usize).min(n))
        .collect();
    let mut order: Vec<usize> = (0..c).collect();
    order.sort_by(|&a, &b| {
        let fa = share[a] - share[a].floor();
        let fb = share[b] - share[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    let mut left = budget - take.iter().sum::<usize>();
    for &j in &order {
        if left == 0 {
            break;
        }
        if take[j] < sizes[j] {
            take[j] += 1;
            left -= 1;
        }
    }
    while left > 0 {
        for j in 0..c {
            if left > 0 && take[j] < sizes[j] {
                take[j] += 1;
                left -= 1;
            }
        }
    }
    take
}

/// k-means cluster sampling: cluster the rows, split the budget over clusters, take members from each.
///
/// # Shapes
/// `x: [n, d]`
pub fn kmeans_select(
    x: ArrayView2<'_, f32>,
    opts: &KMeansSelectOptions,
) -> Result<KMeansSelectReport> {
    let km = kmeans(x, opts.clusters, opts.max_iter, opts.seed)?;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); opts.clusters];
    for (i, &c) in km.assignment.iter().enumerate() {
        members[c].push(i);
    }
    let sizes: Vec<usize> = members.iter().map(Vec::len).collect();
    let take = allocate(&sizes, opts.budget, opts.allocation);
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x9E37_79B9_7F4A_7C15);
    let mut picks = Vec::with_capacity(opts.budget);
    for (c, m) in members.iter_mut().enumerate() {
        match opts.within {
            Within::Random => {
                let (chosen, _) = m.partial_shuffle(&mut rng, take[c]);
                picks.extend_from_slice(chosen);
            }
            Within::Nearest => {
                let cen = km.centroids.row(c);
                let mut scored: Vec<(f32, usize)> = m
                    .iter()
                    .map(|&i| {
                        let d: f32 = x
                            .row(i)
                            .iter()
                            .zip(cen)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum();
                        (d, i)
                    })
                    .collect();
                scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                picks.extend(scored.iter().take(take[c]).map(|s| s.1));
            }
        }
    }
    Ok(KMeansSelectReport {
        picks,
        cluster_sizes: sizes,
        taken: take,
        inertia: km.inertia,
        iterations: km.iterations,
    })
}

/// DiverseEvol's uncertainty measures, averaged over all token positions of an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Uncertainty {
    /// Mean of the top score: pick the smallest.
    LeastConfidence,
    /// Mean gap between the two top scores: pick the smallest.
    Margin,
    /// Mean entropy of `softmax(scores)`: pick the largest.
    Entropy,
}

crate::named_enum!(Uncertainty, "uncertainty", {
    LeastConfidence => "least-confidence",
    Margin => "margin",
    Entropy => "entropy",
});

/// Per-item uncertainty statistic from per-position score vectors (raw logits in DiverseEvol; log-probs work the
/// same for entropy and give log-prob confidences). Higher = more uncertain for every kind (confidence and margin are
/// negated), so ranking is uniform.
///
/// # Shapes
/// `items[i]: [positions][candidates]`
pub fn uncertainty_scores(items: &[Vec<Vec<f32>>], kind: Uncertainty) -> Result<Vec<f64>> {
    items
        .par_iter()
        .enumerate()
        .map(|(i, positions)| {
            if positions.is_empty() {
                return Err(SelectError::Empty {
                    what: format!("token scores of item {i}"),
                    hint: "every item needs at least one scored position".into(),
                });
            }
            let mut sum = 0.0f64;
            for (l, z) in positions.iter().enumerate() {
                let need = if kind == Uncertainty::Margin { 2 } else { 1 };
                if z.len() < need {
                    return Err(SelectError::param(
                        "token scores",
                        format!(
                            "item {i} position {l} has {} candidates, {kind:?} needs {need}",
                            z.len()
                        ),
                    ));
                }
                if let Some(bad) = z.iter().find(|v| !v.is_finite()) {
                    return Err(SelectError::NonFinite {
                        what: format!("token scores of item {i}"),
                        row: l,
                        col: z
                            .iter()
                            .position(|v| v.to_bits() == bad.to_bits())
                            .unwrap_or(0),
                        value: *bad,
                    });
                }
                let (mut t1, mut t2) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
                for &v in z {
                    let v = v as f64;
                    if v > t1 {
                        t2 = t1;
                        t1 = v;
                    } else if v > t2 {
                        t2 = v;
                    }
                }
                sum += match kind {
                    Uncertainty::LeastConfidence => -t1,
                    Uncertainty::Margin => -(t1 - t2),
                    Uncertainty::Entropy => {
                        let zs: f64 = z.iter().map(|&v| (v as f64 - t1).exp()).sum();
                        let lse = t1 + zs.ln();
                        -z.iter()
                            .map(|&v| {
                                let lp = v as f64 - lse;
                                lp.exp() * lp
                            })
                            .sum::<f64>()
                    }
                };
            }
            Ok(sum / positions.len() as f64)
        })
        .collect()
}

/// Picks the `k` most uncertain items not in `exclude` (most uncertain first, ties to the lower index).
pub fn uncertainty_select(
    items: &[Vec<Vec<f32>>],
    k: usize,
    kind: Uncertainty,
    exclude: &[usize],
) -> Result<Vec<usize>> {
    let scores = uncertainty_scores(items, kind)?;
    let mut skip = vec![false; items.len()];
    for &e in exclude {
        *skip.get_mut(e).ok_or(SelectError::IndexOutOfRange {
            what: "excluded indices".into(),
            index: e,
            len: items.len(),
        })? = true;
    }
    let mut idx: Vec<usize> = (0..items.len()).filter(|&i| !skip[i]).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(k);
    Ok(idx)
}

/// Checks rows are finite and returns their count (helper for CLIs choosing among rows).
pub fn rows_of(x: ArrayView2<'_, f32>) -> Result<usize> {
    check_finite(x, "embeddings")?;
    Ok(x.len_of(Axis(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use proptest::prelude::*;

    #[test]
    fn random_is_seeded_and_excludes() {
        let a = random_select(100, 10, 7, &[3, 4]).unwrap();
        assert_eq!(a, random_select(100, 10, 7, &[3, 4]).unwrap());
        assert_ne!(a, random_select(100, 10, 8, &[3, 4]).unwrap());
        assert!(!a.contains(&3) && !a.contains(&4));
        assert_eq!(random_select(5, 10, 1, &[0]).unwrap().len(), 4);
        assert!(random_select(5, 1, 1, &[5]).is_err());
        // Nothing left to pick is an error, not an empty selection; k = 0 is fine.
        assert!(matches!(
            random_select(0, 2, 1, &[]),
            Err(SelectError::Empty { .. })
        ));
        assert!(random_select(2, 1, 1, &[0, 1]).is_err());
        assert_eq!(random_select(0, 0, 1, &[]).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn kmeans_finds_obvious_clusters() {
        let mut rows = Vec::new();
        for i in 0..30 {
            let (cx, cy) = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)][i % 3];
            rows.extend([
                cx + (i as f32 * 0.37).sin() * 0.3,
                cy + (i as f32 * 0.91).cos() * 0.3,
            ]);
        }
        let x = Array2::from_shape_vec((30, 2), rows).unwrap();
        let km = kmeans(x.view(), 3, 50, 1).unwrap();
        for i in 0..30 {
            assert_eq!(km.assignment[i], km.assignment[i % 3], "row {i}");
        }
        let opts = KMeansSelectOptions {
            budget: 6,
            clusters: 3,
            max_iter: 50,
            seed: 1,
            allocation: Allocation::Equal,
            within: Within::Nearest,
        };
        let r = kmeans_select(x.view(), &opts).unwrap();
        assert_eq!(r.taken, vec![2, 2, 2]);
        let mut per = [0; 3];
        for &i in &r.picks {
            per[i % 3] += 1;
        }
        assert_eq!(per, [2, 2, 2]);
        assert!(kmeans(x.view(), 31, 5, 1).is_err());
    }

    proptest! {
        #[test]
        fn allocation_respects_budget_and_sizes(sizes in proptest::collection::vec(0usize..20, 1..8), budget in 0usize..100, eq in any::<bool>()) {
            let how = if eq { Allocation::Equal } else { Allocation::Proportional };
            let t = allocate(&sizes, budget, how);
            let total: usize = sizes.iter().sum();
            prop_assert_eq!(t.iter().sum::<usize>(), budget.min(total));
            prop_assert!(t.iter().zip(&sizes).all(|(a, b)| a <= b));
        }
    }

    #[test]
    fn uncertainty_kinds() {
        // item 0: confident (one big logit); item 1: flat; item 2: two-way tie
        let items = vec![
            vec![vec![10.0f32, 0.0, 0.0]],
            vec![vec![1.0f32, 1.0, 1.0]],
            vec![vec![5.0f32, 5.0, -5.0]],
        ];
        let lc = uncertainty_select(&items, 3, Uncertainty::LeastConfidence, &[]).unwrap();
        assert_eq!(lc, vec![1, 2, 0]);
        let m = uncertainty_select(&items, 2, Uncertainty::Margin, &[]).unwrap();
        assert_eq!(m, vec![1, 2]);
        let e = uncertainty_scores(&items, Uncertainty::Entropy).unwrap();
        assert!((e[1] - 3f64.ln()).abs() < 1e-9);
        assert!(e[1] > e[2] && e[2] > e[0]);
        assert_eq!(
            uncertainty_select(&items, 1, Uncertainty::Entropy, &[1]).unwrap(),
            vec![2]
        );
        assert!(uncertainty_scores(&[vec![]], Uncertainty::Entropy).is_err());
        assert!(uncertainty_scores(&[vec![vec![1.0]]], Uncertainty::Margin).is_err());
        assert!(uncertainty_scores(&[vec![vec![f32::NAN]]], Uncertainty::Entropy).is_err());
        let _ = array![[0.0f32]];
    }
}
