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

use crate::distance::{Metric, Prepared};
use crate::error::{Result, SelectError};

/// Which duplicate rule to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DedupMode {
    /// Compare with every earlier item, dropped or not (Rocket's code).
    #[default]
    Paper,
    /// Compare only with kept items.
    Greedy,
}

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
            for &i in order {
                match greedy_conflict(p, &kept, i, threshold) {
                    Some(j) => dropped.push((i, j)),
                    None => kept.push(i),
                }
            }
        }
    }
    Ok(DedupReport { kept, dropped })
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

    proptest! {
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
