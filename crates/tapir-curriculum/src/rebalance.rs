//! Task rebalancing: deterministic, seeded resampling of items to a target category mix, and
//! the category-first draw of expansion seeds.
//!
//! [`rebalance`] follows easydistill's `InstructionBalancer._resample`
//! (`easydistill/operators/balance.py`; ALGORITHMS.md section 3(b), "implement by resampling"):
//! each category present in the input gets `n · π_c` items (π renormalised over the present
//! categories; largest remainders round to exactly `n`), down-sampled without replacement when
//! it has more, repeated whole and topped up without replacement when it has fewer; the result
//! is shuffled. Two differences, both to keep the size exact: easydistill computes the quotas
//! from the raw ratios of present categories and adds at most one leftover item per category,
//! which can leave its output short of `n` when categories are missing; here the ratios are
//! renormalised first. Categories of the target mix that are absent from the input cannot be
//! represented and are listed in [`Rebalanced::absent`].
//!
//! [`draw_expansion_seeds`] is TAPIR's expansion distribution (ALGORITHMS.md section 3(b)): a
//! category `c ~ π`, then a seed uniformly from the hard seeds of `c`, falling back to any
//! item of `c`, then to any hard seed (the new instruction is still asked to be of `c`).
//!
//! Every draw comes from a `StdRng` seeded with the caller's seed (rand 0.9's ChaCha12), so the
//! same inputs and seed give the same picks.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::taxonomy::{TargetMix, TaskCategory, counts};

/// The outcome of [`rebalance`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rebalanced {
    /// Indices into the input, `n` of them, possibly repeated, shuffled.
    pub picks: Vec<usize>,
    /// Items per category in the input.
    pub before: BTreeMap<TaskCategory, usize>,
    /// Items per category wanted (after renormalising over the present categories).
    pub target: BTreeMap<TaskCategory, usize>,
    /// Items per category picked (equal to `target` unless nothing was eligible).
    pub achieved: BTreeMap<TaskCategory, usize>,
    /// Categories with a positive target ratio but no input item.
    pub absent: Vec<TaskCategory>,
    /// Picks that repeat an item already picked.
    pub repeats: usize,
}

/// Largest-remainder apportionment of `n` over `weights` (ties: earlier key first).
fn apportion(weights: &BTreeMap<TaskCategory, f64>, n: usize) -> BTreeMap<TaskCategory, usize> {
    let total: f64 = weights.values().sum();
    let mut out: BTreeMap<TaskCategory, usize> = BTreeMap::new();
    if total <= 0.0 {
        return out;
    }
    let mut rema: Vec<(TaskCategory, f64)> = Vec::new();
    let mut assigned = 0;
    for (&c, &w) in weights {
        let q = n as f64 * w / total;
        let f = q.floor() as usize;
        out.insert(c, f);
        assigned += f;
        rema.push((c, q - f as f64));
    }
    // stable sort: equal remainders keep list order
    rema.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    for (c, _) in rema.into_iter().take(n.saturating_sub(assigned)) {
        *out.get_mut(&c).expect("inserted above") += 1;
    }
    out
}

/// `k` indices of `0..len`: a seeded permutation, cycled (each cycle reshuffled) when `k > len`.
fn take_cycled(items: &[usize], k: usize, rng: &mut StdRng) -> Vec<usize> {
    let mut out = Vec::with_capacity(k);
    if items.is_empty() {
        return out;
    }
    while out.len() < k {
        let mut round = items.to_vec();
        round.shuffle(rng);
        let need = k - out.len();
        out.extend(round.into_iter().take(need));
    }
    out
}

/// Resamples items with `categories` to `n` picks following `mix` (see the module docs).
/// `n = categories.len()` keeps the size, as easydistill does.
pub fn rebalance(categories: &[TaskCategory], mix: &TargetMix, n: usize, seed: u64) -> Rebalanced {
    rebalance_capped(categories, mix, n, seed, 0)
}

/// [`rebalance`] where no item is picked more than `max_repeats` times (0 = no limit): a
/// category whose quota would need more copies gets `max_repeats ×` its items, and its excess
/// is shared among the other categories by their ratios (repeatedly, until no quota exceeds
/// its cap). When every category is full, fewer than `n` items are picked.
pub fn rebalance_capped(
    categories: &[TaskCategory],
    mix: &TargetMix,
    n: usize,
    seed: u64,
    max_repeats: usize,
) -> Rebalanced {
    let mut rng = StdRng::seed_from_u64(seed);
    let before = counts(categories.iter().copied());
    let mut by_cat: BTreeMap<TaskCategory, Vec<usize>> = BTreeMap::new();
    for (i, c) in categories.iter().enumerate() {
        by_cat.entry(*c).or_default().push(i);
    }
    let mut weights: BTreeMap<TaskCategory, f64> = mix
        .ratios()
        .iter()
        .filter(|(c, _)| by_cat.contains_key(c))
        .map(|(c, r)| (*c, *r))
        .collect();
    let absent = mix
        .ratios()
        .keys()
        .filter(|c| !by_cat.contains_key(c))
        .copied()
        .collect();
    // Water-filling: categories whose quota exceeds their cap are fixed at the cap and the rest
    // re-apportioned among the others.
    let mut target: BTreeMap<TaskCategory, usize> = BTreeMap::new();
    let mut left = n;
    loop {
        let quotas = apportion(&weights, left);
        let over: Vec<TaskCategory> = if max_repeats == 0 {
            Vec::new()
        } else {
            quotas
                .iter()
                .filter(|(c, q)| **q > by_cat[*c].len() * max_repeats)
                .map(|(c, _)| *c)
                .collect()
        };
        if over.is_empty() {
            target.extend(quotas);
            break;
        }
        for c in over {
            let cap = by_cat[&c].len() * max_repeats;
            target.insert(c, cap);
            left -= cap;
            weights.remove(&c);
        }
        if weights.is_empty() {
            break;
        }
    }
    let mut picks = Vec::with_capacity(n);
    let mut repeats = 0;
    for (c, &want) in &target {
        let items = &by_cat[c];
        repeats += want.saturating_sub(items.len());
        picks.extend(take_cycled(items, want, &mut rng));
    }
    picks.shuffle(&mut rng);
    let achieved = counts(picks.iter().map(|&i| categories[i]));
    Rebalanced {
        picks,
        before,
        target,
        achieved,
        absent,
        repeats,
    }
}

/// `n` picks of `0..len` uniformly, without rebalancing (the "no rebalancing" ablation): a
/// seeded sample without replacement, cycled when `n > len`.
pub fn uniform_sample(categories: &[TaskCategory], n: usize, seed: u64) -> Rebalanced {
    let mut rng = StdRng::seed_from_u64(seed);
    let all: Vec<usize> = (0..categories.len()).collect();
    let picks = take_cycled(&all, n, &mut rng);
    let counts_of = counts(picks.iter().map(|&i| categories[i]));
    Rebalanced {
        repeats: n.saturating_sub(categories.len()),
        before: counts(categories.iter().copied()),
        target: counts_of.clone(),
        achieved: counts_of,
        absent: Vec::new(),
        picks,
    }
}

/// Where an expansion seed came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrawSource {
    /// An eligible (hard) seed of the drawn category.
    EligibleOfCategory,
    /// No eligible seed of the category: any item of it.
    AnyOfCategory,
    /// No item of the category: any eligible seed.
    AnyEligible,
}

/// One expansion draw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedDraw {
    /// Index of the seed item.
    pub seed: usize,
    /// The category the new instruction is asked to belong to.
    pub category: TaskCategory,
    /// How the seed was found.
    pub source: DrawSource,
}

/// Draws `k` expansion seeds from items with `categories`, of which `eligible` are seeds (the
/// hard ones; all of them without the MFD filter). With `mix`, a category is drawn first (see
/// the module docs); without (no rebalancing), a seed is drawn uniformly from the eligible ones
/// and keeps its own category. No eligible item gives no draw.
pub fn draw_expansion_seeds(
    categories: &[TaskCategory],
    eligible: &[bool],
    mix: Option<&TargetMix>,
    k: usize,
    seed: u64,
) -> Vec<SeedDraw> {
    let mut rng = StdRng::seed_from_u64(seed);
    let hard: Vec<usize> = (0..categories.len())
        .filter(|&i| eligible.get(i).copied().unwrap_or(false))
        .collect();
    if hard.is_empty() {
        return Vec::new();
    }
    let pick = |v: &[usize], rng: &mut StdRng| v[rng.random_range(0..v.len())];
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        let Some(mix) = mix else {
            let s = pick(&hard, &mut rng);
            out.push(SeedDraw {
                seed: s,
                category: categories[s],
                source: DrawSource::EligibleOfCategory,
            });
            continue;
        };
        // c ~ π by inverse CDF over the ratios in list order
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut category = *mix.ratios().keys().last().expect("a mix has a category");
        for (c, r) in mix.ratios() {
            acc += r;
            if u < acc {
                category = *c;
                break;
            }
        }
        let of_cat_hard: Vec<usize> = hard
            .iter()
            .copied()
            .filter(|&i| categories[i] == category)
            .collect();
        let (s, source) = if !of_cat_hard.is_empty() {
            (pick(&of_cat_hard, &mut rng), DrawSource::EligibleOfCategory)
        } else {
            let of_cat: Vec<usize> = (0..categories.len())
                .filter(|&i| categories[i] == category)
                .collect();
            if of_cat.is_empty() {
                (pick(&hard, &mut rng), DrawSource::AnyEligible)
            } else {
                (pick(&of_cat, &mut rng), DrawSource::AnyOfCategory)
            }
        };
        out.push(SeedDraw {
            seed: s,
            category,
            source,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskCategory::*;
    use proptest::prelude::*;

    fn mix(pairs: &[(&str, f64)]) -> TargetMix {
        TargetMix::from_names(&pairs.iter().map(|(n, r)| (n.to_string(), *r)).collect()).unwrap()
    }

    #[test]
    fn resampling_hits_the_target_mix_exactly() {
        // 8 Math, 2 Writing, 0 Law; target 50/50 over Math/Writing (+ Law absent)
        let cats: Vec<TaskCategory> = [vec![Math; 8], vec![Writing; 2]].concat();
        let m = mix(&[("Math", 1.0), ("Writing", 1.0), ("Law", 1.0)]);
        let r = rebalance(&cats, &m, 10, 42);
        assert_eq!(r.picks.len(), 10);
        assert_eq!(r.achieved[&Math], 5);
        assert_eq!(r.achieved[&Writing], 5);
        assert_eq!(r.absent, vec![Law]);
        assert_eq!(r.before[&Math], 8);
        // Writing is repeated: each of its 2 items at least twice
        assert_eq!(r.repeats, 3);
        for i in 8..10 {
            assert!(r.picks.iter().filter(|&&p| p == i).count() >= 2);
        }
        // Math is down-sampled without replacement
        let mut math: Vec<usize> = r.picks.iter().copied().filter(|&p| p < 8).collect();
        math.sort();
        math.dedup();
        assert_eq!(math.len(), 5);
    }

    #[test]
    fn the_same_seed_gives_the_same_picks_and_another_seed_others() {
        let cats: Vec<TaskCategory> = (0..40)
            .map(|i| if i % 3 == 0 { Reasoning } else { Math })
            .collect();
        let m = TargetMix::default();
        let a = rebalance(&cats, &m, 40, 7);
        assert_eq!(a, rebalance(&cats, &m, 40, 7));
        assert_ne!(a.picks, rebalance(&cats, &m, 40, 8).picks);
        // Math and Reasoning have equal default ratios: 20 each
        assert_eq!(a.achieved[&Math], 20);
        assert_eq!(a.achieved[&Reasoning], 20);
    }

    #[test]
    fn categories_outside_the_mix_are_dropped() {
        let cats = vec![Math, Math, Law];
        let m = mix(&[("Math", 1.0)]);
        let r = rebalance(&cats, &m, 3, 1);
        assert!(r.picks.iter().all(|&i| cats[i] == Math));
        assert_eq!(r.picks.len(), 3);
        // nothing eligible at all: no picks
        let r = rebalance(&[Law], &m, 3, 1);
        assert!(r.picks.is_empty());
        assert_eq!(r.absent, vec![Math]);
    }

    #[test]
    fn uniform_sampling_keeps_the_natural_mix() {
        let cats: Vec<TaskCategory> = [vec![Math; 6], vec![Law; 2]].concat();
        let r = uniform_sample(&cats, 8, 3);
        assert_eq!(r.achieved, r.before);
        let r = uniform_sample(&cats, 3, 3);
        assert_eq!(r.picks.len(), 3);
        let mut p = r.picks.clone();
        p.dedup();
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn expansion_draws_follow_the_category_first_rule() {
        let cats = vec![Math, Math, Writing, Law];
        let hard = vec![true, false, false, true];
        // only Writing in the mix: its one item is not hard -> any item of Writing
        let m = mix(&[("Writing", 1.0)]);
        let d = draw_expansion_seeds(&cats, &hard, Some(&m), 5, 1);
        assert!(d.iter().all(|x| x.seed == 2
            && x.source == DrawSource::AnyOfCategory
            && x.category == Writing));
        // only Code Debug: absent -> any hard seed, asked as Code Debug
        let m = mix(&[("Code Debug", 1.0)]);
        let d = draw_expansion_seeds(&cats, &hard, Some(&m), 5, 1);
        assert!(d.iter().all(|x| hard[x.seed]
            && x.source == DrawSource::AnyEligible
            && x.category == CodeDebug));
        // Math: its hard seed
        let m = mix(&[("Math", 1.0)]);
        let d = draw_expansion_seeds(&cats, &hard, Some(&m), 3, 1);
        assert!(
            d.iter()
                .all(|x| x.seed == 0 && x.source == DrawSource::EligibleOfCategory)
        );
        // no mix: hard seeds with their own categories
        let d = draw_expansion_seeds(&cats, &hard, None, 20, 1);
        assert!(d.iter().all(|x| hard[x.seed] && x.category == cats[x.seed]));
        assert!(d.iter().any(|x| x.seed == 3));
        // nothing eligible: nothing drawn
        assert!(draw_expansion_seeds(&cats, &[false; 4], Some(&m), 3, 1).is_empty());
    }

    #[test]
    fn category_draws_follow_the_ratios() {
        let cats: Vec<TaskCategory> = vec![Math, Law];
        let m = mix(&[("Math", 3.0), ("Law", 1.0)]);
        let d = draw_expansion_seeds(&cats, &[true, true], Some(&m), 4000, 9);
        let math = d.iter().filter(|x| x.category == Math).count() as f64 / 4000.0;
        assert!((math - 0.75).abs() < 0.03, "{math}");
    }

    #[test]
    fn capped_resampling_never_repeats_an_item_more_than_allowed() {
        // 1 Writing item, 9 Math; 50/50 target over 10 picks, at most 2 copies each
        let cats: Vec<TaskCategory> = [vec![Writing], vec![Math; 9]].concat();
        let m = mix(&[("Math", 1.0), ("Writing", 1.0)]);
        let r = rebalance_capped(&cats, &m, 10, 1, 2);
        assert_eq!(r.picks.len(), 10);
        assert_eq!(r.achieved[&Writing], 2);
        assert_eq!(r.achieved[&Math], 8);
        // every category full: fewer picks
        let r = rebalance_capped(&cats, &m, 30, 1, 2);
        assert_eq!(r.picks.len(), 20);
        // no cap: the exact mix, with repeats
        assert_eq!(rebalance_capped(&cats, &m, 10, 1, 0).achieved[&Writing], 5);
    }

    proptest! {
        #[test]
        fn capped_picks_respect_the_cap(
            cats in prop::collection::vec(0usize..6, 1..40),
            n in 0usize..80,
            cap in 1usize..4,
            seed in any::<u64>(),
        ) {
            let cats: Vec<TaskCategory> = cats.into_iter().map(|i| TaskCategory::all().nth(i).unwrap()).collect();
            let r = rebalance_capped(&cats, &TargetMix::default(), n, seed, cap);
            prop_assert_eq!(r.picks.len(), n.min(cats.len() * cap));
            for i in 0..cats.len() {
                prop_assert!(r.picks.iter().filter(|&&p| p == i).count() <= cap);
            }
        }

        #[test]
        fn rebalancing_always_returns_n_valid_picks(
            cats in prop::collection::vec(0usize..32, 1..60),
            n in 0usize..100,
            seed in any::<u64>(),
        ) {
            let cats: Vec<TaskCategory> = cats.into_iter().map(|i| TaskCategory::all().nth(i).unwrap()).collect();
            let r = rebalance(&cats, &TargetMix::default(), n, seed);
            prop_assert_eq!(r.picks.len(), n);
            prop_assert!(r.picks.iter().all(|&i| i < cats.len()));
            prop_assert_eq!(r.achieved.values().sum::<usize>(), n);
            prop_assert_eq!(&r.achieved, &r.target.into_iter().filter(|(_, v)| *v > 0).collect::<BTreeMap<_, _>>());
        }
    }
}
