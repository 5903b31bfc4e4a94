//! Near-duplicate removal at a cosine-similarity threshold (Rocket's `data_aug.py`).
//!
//! An item is a near-duplicate of another when their cosine similarity is **above** `threshold` (Rocket: cosine
//! distance `1 - sim < 0.1`, i.e. `threshold = 0.9`). Two modes, over items in a given order (most similar to the
//! K-shot first):
//! - [`DedupMode::Paper`] (the code's behaviour): drop an item if *any earlier item* is a near-duplicate, even one that
//!   was itself dropped, so chains a≈b≈c drop both b and c;
//! - [`DedupMode::Greedy`] (corrected): keep an item iff it is not a near-duplicate of any *kept* item.
//!
//! The paper code walks argpartition's arbitrary order; here both modes use the order given (distance order from
//! [`crate::retrieve`]). Kept sets satisfy: no kept pair is above the threshold, and paper ⊆ greedy.

use ndarray::ArrayView2;
use rayon::prelude::*;
use serde::Serialize;

use crate::distance::{Metric, Prepared, dot_tile};
use crate::error::{Result, SelectError};

/// Which duplicate rule to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DedupMode {
    /// Compare with every earlier item, dropped or not (Rocket's code).
    #[default]
    Paper,
    /// Compare only with kept items.
    Greedy,
}

crate::named_enum!(DedupMode, "dedup mode", { Paper => "paper", Greedy => "greedy" });

/// Result of [`dedup`].
#[derive(Clone, Debug, Serialize)]
pub struct DedupReport {
    /// Kept items, in the input order.
    pub kept: Vec<usize>,
    /// Dropped items with the earlier item they matched.
    pub dropped: Vec<(usize, usize)>,
}

/// Checks a similarity threshold.
pub fn check_threshold(threshold: f32) -> Result<()> {
    if !(threshold.is_finite() && (-1.0..=1.0).contains(&threshold)) {
        return Err(SelectError::param(
            "dedup threshold",
            format!("{threshold} is not a cosine similarity in [-1, 1] (Rocket uses 0.9)"),
        ));
    }
    Ok(())
}

/// Removes near-duplicates among `order` (row indices of `embeddings`).
///
/// # Shapes
/// `embeddings: [n, d]`; `order: [m]`, indices `< n`
pub fn dedup(
    embeddings: ArrayView2<'_, f32>,
    order: &[usize],
    threshold: f32,
    mode: DedupMode,
) -> Result<DedupReport> {
    let p = Prepared::new(embeddings, Metric::Cosine, "embeddings")?;
    dedup_prepared(&p, order, threshold, mode)
}

/// [`dedup`] on rows already prepared for cosine.
pub fn dedup_prepared(
    p: &Prepared,
    order: &[usize],
    threshold: f32,
    mode: DedupMode,
) -> Result<DedupReport> {
    check_threshold(threshold)?;
    if p.metric() != Metric::Cosine {
        return Err(SelectError::param(
            "dedup",
            "embeddings must be prepared for the cosine metric",
        ));
    }
    if let Some(&bad) = order.iter().find(|&&i| i >= p.len()) {
        return Err(SelectError::IndexOutOfRange {
            what: "dedup order".into(),
            index: bad,
            len: p.len(),
        });
    }
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    match mode {
        DedupMode::Paper => {
            let matches: Vec<Option<usize>> = (0..order.len())
                .into_par_iter()
                .map(|pos| p.first_similar(order[pos], &order[..pos], threshold))
                .collect();
            for (&i, m) in order.iter().zip(matches) {
                match m {
                    Some(j) => dropped.push((i, j)),
                    None => kept.push(i),
                }
            }
        }
        DedupMode::Greedy => {
            // Four candidates at a time scan the items kept before them in one pass (4x less memory traffic), then
            // are settled in order, each also checked against the ones kept earlier in its group.
            for group in order.chunks(4) {
                let before = kept.len();
                let first = first_conflicts(p, group, &kept, threshold);
                for (g, &i) in group.iter().enumerate() {
                    let hit = first[g].or_else(|| p.first_similar(i, &kept[before..], threshold));
                    match hit {
                        Some(j) => dropped.push((i, j)),
                        None => kept.push(i),
                    }
                }
            }
        }
    }
    Ok(DedupReport { kept, dropped })
}

/// For each candidate, the first of `kept` (in order) it is a near-duplicate of.
fn first_conflicts(
    p: &Prepared,
    group: &[usize],
    kept: &[usize],
    threshold: f32,
) -> Vec<Option<usize>> {
    if group.len() < 4 {
        return group
            .iter()
            .map(|&i| greedy_conflict(p, kept, i, threshold))
            .collect();
    }
    let rows = [group[0], group[1], group[2], group[3]];
    let scan = |block: &[usize]| -> [Option<usize>; 4] {
        let mut found = [None; 4];
        let rv = rows.map(|i| p.row(i));
        let mut chunks = block.chunks_exact(4);
        for c in &mut chunks {
            let t = dot_tile(rv, [p.row(c[0]), p.row(c[1]), p.row(c[2]), p.row(c[3])]);
            for (r, f) in found.iter_mut().enumerate() {
                if f.is_none() {
                    *f = (0..4)
                        .find(|&j| (t[r][j] * p.aux(rows[r])) * p.aux(c[j]) > threshold)
                        .map(|j| c[j]);
                }
            }
            if found.iter().all(Option::is_some) {
                return found;
            }
        }
        for (r, f) in found.iter_mut().enumerate() {
            if f.is_none() {
                *f = p.first_similar(rows[r], chunks.remainder(), threshold);
            }
        }
        found
    };
    const BLOCK: usize = 1024;
    let found = if kept.len() > 2 * BLOCK {
        // Parallel over blocks, merged in block order: the same first witnesses as a serial scan.
        let per_block: Vec<[Option<usize>; 4]> = kept.par_chunks(BLOCK).map(scan).collect();
        let mut out = [None; 4];
        for b in per_block {
            for r in 0..4 {
                out[r] = out[r].or(b[r]);
            }
        }
        out
    } else {
        scan(kept)
    };
    found.to_vec()
}

/// The first kept item that `i` is a near-duplicate of, if any.
pub fn greedy_conflict(p: &Prepared, kept: &[usize], i: usize, threshold: f32) -> Option<usize> {
    const BLOCK: usize = 1024;
    if kept.len() > 2 * BLOCK {
        // Parallel over blocks; the first block (in order) with a match gives the serial scan's answer.
        kept.par_chunks(BLOCK)
            .map(|b| p.first_similar(i, b, threshold))
            .find_first(Option::is_some)
            .flatten()
    } else {
        p.first_similar(i, kept, threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};
    use proptest::prelude::*;

    #[test]
    fn chain_quirk() {
        // a ~ b (cos .95), b ~ c (cos .95), a vs c cos ~ .8
        let t: f32 = 0.95f32.acos();
        let m = array![
            [1.0f32, 0.0],
            [t.cos(), t.sin()],
            [(2.0 * t).cos(), (2.0 * t).sin()]
        ];
        let paper = dedup(m.view(), &[0, 1, 2], 0.9, DedupMode::Paper).unwrap();
        assert_eq!(paper.kept, vec![0]);
        assert_eq!(paper.dropped, vec![(1, 0), (2, 1)]);
        let greedy = dedup(m.view(), &[0, 1, 2], 0.9, DedupMode::Greedy).unwrap();
        assert_eq!(greedy.kept, vec![0, 2]);
    }

    #[test]
    fn bad_threshold_and_index() {
        let m = array![[1.0f32, 0.0]];
        assert!(dedup(m.view(), &[0], 1.5, DedupMode::Greedy).is_err());
        assert!(dedup(m.view(), &[0], f32::NAN, DedupMode::Greedy).is_err());
        assert!(dedup(m.view(), &[1], 0.9, DedupMode::Greedy).is_err());
    }

    /// Plain one-at-a-time greedy, for comparison with the blocked version.
    fn naive_greedy(p: &Prepared, order: &[usize], thr: f32) -> (Vec<usize>, Vec<(usize, usize)>) {
        let (mut kept, mut dropped) = (Vec::new(), Vec::new());
        for &i in order {
            match kept.iter().copied().find(|&j| p.similarity(i, j) > thr) {
                Some(j) => dropped.push((i, j)),
                None => kept.push(i),
            }
        }
        (kept, dropped)
    }

    #[test]
    fn blocked_greedy_matches_naive_on_a_large_set() {
        // > 2048 kept items exercises the parallel block scan; every 7th row repeats an earlier one.
        let n = 2600;
        let mut s = 12345u64;
        let mut m = Array2::from_shape_fn((n, 24), |_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        });
        for i in (7..n).step_by(7) {
            let src = m.row(i / 3).to_owned();
            m.row_mut(i).assign(&(&src * 1.01));
        }
        let p = Prepared::new(m.view(), Metric::Cosine, "m").unwrap();
        let order: Vec<usize> = (0..n).collect();
        let r = dedup_prepared(&p, &order, 0.9, DedupMode::Greedy).unwrap();
        let (kept, dropped) = naive_greedy(&p, &order, 0.9);
        assert!(kept.len() > 2048 && !dropped.is_empty());
        assert_eq!(r.kept, kept);
        assert_eq!(r.dropped, dropped);
    }

    proptest! {
        #[test]
        fn blocked_greedy_matches_naive(v in proptest::collection::vec(-3i8..4, 6..300), thr in 0.3f32..0.99) {
            let d = 3;
            let n = v.len() / d;
            let m = Array2::from_shape_vec((n, d), v[..n * d].iter().map(|&x| x as f32).collect()).unwrap();
            let p = Prepared::new(m.view(), Metric::Cosine, "m").unwrap();
            let order: Vec<usize> = (0..n).rev().collect();
            let r = dedup_prepared(&p, &order, thr, DedupMode::Greedy).unwrap();
            let (kept, dropped) = naive_greedy(&p, &order, thr);
            prop_assert_eq!(r.kept, kept);
            prop_assert_eq!(r.dropped, dropped);
        }

        #[test]
        fn no_kept_pair_above_threshold(v in proptest::collection::vec(-3i8..4, 2..120), thr in 0.3f32..0.99) {
            let d = 2;
            let n = v.len() / d;
            let m = Array2::from_shape_vec((n, d), v[..n * d].iter().map(|&x| x as f32).collect()).unwrap();
            let order: Vec<usize> = (0..n).rev().collect();
            let p = Prepared::new(m.view(), Metric::Cosine, "m").unwrap();
            let g = dedup_prepared(&p, &order, thr, DedupMode::Greedy).unwrap();
            let pa = dedup_prepared(&p, &order, thr, DedupMode::Paper).unwrap();
            for set in [&g.kept, &pa.kept] {
                for (a, &i) in set.iter().enumerate() {
                    for &j in &set[a + 1..] {
                        prop_assert!(p.similarity(i, j) <= thr);
                    }
                }
            }
            // paper keeps a subset of greedy, and every item is either kept or dropped
            prop_assert!(pa.kept.iter().all(|i| g.kept.contains(i)));
            prop_assert_eq!(g.kept.len() + g.dropped.len(), n);
            // greedy is maximal: every dropped item conflicts with a kept one
            for &(i, j) in &g.dropped {
                prop_assert!(g.kept.contains(&j) && p.similarity(i, j) > thr);
            }
        }
    }
}
