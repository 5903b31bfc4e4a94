//! Rocket expert selection: shortlist `M` adapters by K-shot accuracy and reasoning perplexity,
//! then choose `N` of them by group diversity over all `C(M, N)` tuples (or by a combined rank),
//! and flag *blind guessers*.
//!
//! - **Shortlist** ([`ShortlistRule`]): `Lexicographic` sorts by accuracy (desc), then
//!   perplexity (asc); `RankSum` sorts by `rank_desc(acc) + rank_asc(ppl)` (ties share the
//!   average rank), ties broken by accuracy then perplexity.
//! - **Tuples** ([`TupleRule`]): with `Sim` the pairwise adapter similarity (lora-zoo),
//!   `GroupSim(T) = Σ_{i<j∈T} Sim(i, j)`; `Diversity` picks the tuple with the smallest
//!   `GroupSim` (Rocket's `group_diversity.py`); `CombinedRank` sums the ranks of the tuple's mean
//!   accuracy (desc), mean perplexity (asc) and group diversity (desc), ties to diversity.
//!   Reported group diversity `GD(T) = 1 - mean_{i<j} Sim(i,j) / sqrt(Sim(i,i) Sim(j,j))`, in
//!   `[0, 1]` for the Rocket similarity, higher = more diverse.
//! - **Blind guessers**: adapters whose accuracy is at least the bank's median (and above 0) while
//!   their perplexity is at or above the bank's `blind_quantile` quantile: right answers the
//!   adapter cannot explain. Per adapter, `lucky_items` counts items it answered correctly with a
//!   per-item perplexity above that item's median over the bank.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::{KshotError, Result};
use crate::metrics::{average_ranks, mean};

/// How the shortlist of `M` candidates is ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortlistRule {
    /// Accuracy descending, then perplexity ascending.
    #[default]
    Lexicographic,
    /// Sum of the accuracy rank and the perplexity rank.
    RankSum,
}

lm_core::named_enum!(ShortlistRule, "shortlist rule", { Lexicographic => "lexicographic", RankSum => "rank-sum" });

/// How the final `N`-tuple is chosen among the shortlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TupleRule {
    /// Smallest summed pairwise similarity (Rocket's code).
    #[default]
    Diversity,
    /// Rank-sum of mean accuracy, mean perplexity and group diversity.
    CombinedRank,
}

lm_core::named_enum!(TupleRule, "tuple rule", { Diversity => "diversity", CombinedRank => "combined-rank" });

/// Selection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionConfig {
    /// Shortlist size `M` (default 8; clamped to the bank size).
    pub shortlist: usize,
    /// Experts to choose `N` (default 4).
    pub experts: usize,
    /// Shortlist ranking.
    pub shortlist_rule: ShortlistRule,
    /// Tuple choice.
    pub tuple_rule: TupleRule,
    /// Perplexity quantile above which an accurate adapter is a blind guesser (default 0.75).
    pub blind_quantile: f64,
    /// How many best tuples to report (default 10).
    pub top_tuples: usize,
}

impl Default for SelectionConfig {
    fn default() -> Self {
        Self {
            shortlist: 8,
            experts: 4,
            shortlist_rule: ShortlistRule::default(),
            tuple_rule: TupleRule::default(),
            blind_quantile: 0.75,
            top_tuples: 10,
        }
    }
}

/// One adapter's signals, as the selection needs them.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInput {
    /// Adapter name.
    pub name: String,
    /// K-shot accuracy.
    pub accuracy: f64,
    /// The perplexity signal (reasoning perplexity by default).
    pub ppl: f64,
    /// Per item: answered correctly (may be empty).
    pub per_item_correct: Vec<bool>,
    /// Per item: perplexity (may be empty).
    pub per_item_ppl: Vec<f64>,
}

/// Every signal of one adapter and what the selection made of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterVerdict {
    /// Adapter name.
    pub name: String,
    /// K-shot accuracy.
    pub accuracy: f64,
    /// Perplexity signal.
    pub ppl: f64,
    /// Rank by accuracy (1 = best, ties averaged).
    pub rank_accuracy: f64,
    /// Rank by perplexity (1 = lowest).
    pub rank_ppl: f64,
    /// `rank_accuracy + rank_ppl`.
    pub rank_sum: f64,
    /// Position in the overall ranking under the shortlist rule (1 = first).
    pub position: usize,
    /// Whether it made the shortlist.
    pub shortlisted: bool,
    /// Whether it is one of the chosen experts.
    pub selected: bool,
    /// Accurate but high perplexity (see the module docs).
    pub blind_guesser: bool,
    /// Correct items with a per-item perplexity above the item's bank median.
    pub lucky_items: usize,
}

/// One scored tuple.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TupleScore {
    /// Member adapter names.
    pub members: Vec<String>,
    /// `Σ_{i<j} Sim(i, j)`.
    pub group_similarity: f64,
    /// `1 - mean normalised pairwise similarity`.
    pub group_diversity: f64,
    /// Mean accuracy of the members.
    pub mean_accuracy: f64,
    /// Mean perplexity of the members.
    pub mean_ppl: f64,
    /// Sum of the three ranks (only under [`TupleRule::CombinedRank`], else 0).
    pub combined_rank: f64,
}

/// The outcome of a selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The chosen experts, in shortlist order.
    pub selected: Vec<String>,
    /// Every adapter, in the order of the shortlist ranking.
    pub adapters: Vec<AdapterVerdict>,
    /// The best tuples, best first.
    pub tuples: Vec<TupleScore>,
    /// How many tuples were scored (`C(M, N)`).
    pub tuples_scored: usize,
    /// The shortlist size actually used.
    pub shortlist: usize,
    /// The settings.
    pub config: SelectionConfig,
}

/// Selects experts from per-adapter signals and their pairwise `similarity` (`[n, n]`, in the
/// order of `inputs`, as lora-zoo's `similarity_matrix`).
pub fn select_experts(
    inputs: &[AdapterInput],
    similarity: &Array2<f64>,
    config: &SelectionConfig,
) -> Result<Selection> {
    let n = inputs.len();
    if n == 0 {
        return Err(KshotError::EmptySet {
            what: "the bank to select from".into(),
        });
    }
    if similarity.dim() != (n, n) {
        return Err(KshotError::InvalidConfig(format!(
            "expected a {n}x{n} similarity matrix, found {:?}",
            similarity.dim()
        )));
    }
    if config.experts == 0 || config.experts > n {
        return Err(KshotError::InvalidConfig(format!(
            "expected 1 <= experts <= {n} (the bank size), found {}",
            config.experts
        )));
    }
    let m = config.shortlist.clamp(config.experts, n);
    let combos = binomial(m, config.experts);
    if combos > 5_000_000 {
        return Err(KshotError::InvalidConfig(format!(
            "C({m}, {}) = {combos} tuples is too many; lower --shortlist",
            config.experts
        )));
    }
    let acc: Vec<f64> = inputs.iter().map(|a| a.accuracy).collect();
    let ppl: Vec<f64> = inputs.iter().map(|a| a.ppl).collect();
    let r_acc = average_ranks(&acc, true);
    let r_ppl = average_ranks(&ppl, false);
    let ppl_key = |i: usize| {
        if ppl[i].is_nan() {
            f64::INFINITY
        } else {
            ppl[i]
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        let lex = acc[b]
            .total_cmp(&acc[a])
            .then(ppl_key(a).total_cmp(&ppl_key(b)));
        match config.shortlist_rule {
            ShortlistRule::Lexicographic => lex,
            ShortlistRule::RankSum => (r_acc[a] + r_ppl[a])
                .total_cmp(&(r_acc[b] + r_ppl[b]))
                .then(lex),
        }
        .then(a.cmp(&b))
    });
    let shortlist: Vec<usize> = order[..m].to_vec();

    // Every N-subset of the shortlist (indices into `shortlist`).
    let mut tuples: Vec<(Vec<usize>, TupleScore)> = Vec::with_capacity(combos);
    for_each_combination(m, config.experts, |c| {
        let members: Vec<usize> = c.iter().map(|&k| shortlist[k]).collect();
        tuples.push((members.clone(), tuple_score(inputs, similarity, &members)));
    });
    match config.tuple_rule {
        TupleRule::Diversity => tuples.sort_by(|a, b| {
            a.1.group_similarity
                .total_cmp(&b.1.group_similarity)
                .then(b.1.mean_accuracy.total_cmp(&a.1.mean_accuracy))
        }),
        TupleRule::CombinedRank => {
            let ma: Vec<f64> = tuples.iter().map(|t| t.1.mean_accuracy).collect();
            let mp: Vec<f64> = tuples.iter().map(|t| t.1.mean_ppl).collect();
            let gd: Vec<f64> = tuples.iter().map(|t| t.1.group_diversity).collect();
            let (ra, rp, rg) = (
                average_ranks(&ma, true),
                average_ranks(&mp, false),
                average_ranks(&gd, true),
            );
            for (k, t) in tuples.iter_mut().enumerate() {
                t.1.combined_rank = ra[k] + rp[k] + rg[k];
            }
            tuples.sort_by(|a, b| {
                a.1.combined_rank
                    .total_cmp(&b.1.combined_rank)
                    .then(b.1.group_diversity.total_cmp(&a.1.group_diversity))
            });
        }
    }
    let best: Vec<usize> = tuples[0].0.clone();
    let tuples_scored = tuples.len();

    // Blind guessers.
    let finite_ppl: Vec<f64> = ppl.iter().copied().filter(|p| p.is_finite()).collect();
    let ppl_cut = quantile(&finite_ppl, config.blind_quantile);
    let acc_median = quantile(&acc, 0.5);
    let n_items = inputs
        .iter()
        .map(|a| a.per_item_ppl.len())
        .min()
        .unwrap_or(0);
    let item_medians: Vec<f64> = (0..n_items)
        .map(|k| {
            quantile(
                &inputs.iter().map(|a| a.per_item_ppl[k]).collect::<Vec<_>>(),
                0.5,
            )
        })
        .collect();

    let position: Vec<usize> = {
        let mut p = vec![0; n];
        for (rank, &i) in order.iter().enumerate() {
            p[i] = rank + 1;
        }
        p
    };
    let adapters = order
        .iter()
        .map(|&i| {
            let a = &inputs[i];
            let lucky_items = (0..n_items.min(a.per_item_correct.len()))
                .filter(|&k| a.per_item_correct[k] && a.per_item_ppl[k] > item_medians[k])
                .count();
            AdapterVerdict {
                name: a.name.clone(),
                accuracy: a.accuracy,
                ppl: a.ppl,
                rank_accuracy: r_acc[i],
                rank_ppl: r_ppl[i],
                rank_sum: r_acc[i] + r_ppl[i],
                position: position[i],
                shortlisted: shortlist.contains(&i),
                selected: best.contains(&i),
                blind_guesser: n > 1
                    && a.accuracy > 0.0
                    && a.accuracy >= acc_median
                    && a.ppl.is_finite()
                    && a.ppl >= ppl_cut
                    && ppl_cut > quantile(&finite_ppl, 0.5),
                lucky_items,
            }
        })
        .collect();
    let mut selected: Vec<usize> = best;
    selected.sort_by_key(|i| position[*i]);
    Ok(Selection {
        selected: selected.iter().map(|&i| inputs[i].name.clone()).collect(),
        adapters,
        tuples: tuples
            .into_iter()
            .take(config.top_tuples.max(1))
            .map(|t| t.1)
            .collect(),
        tuples_scored,
        shortlist: m,
        config: config.clone(),
    })
}

fn tuple_score(inputs: &[AdapterInput], sim: &Array2<f64>, members: &[usize]) -> TupleScore {
    let mut group = 0.0;
    let mut normalised = Vec::new();
    for (p, &i) in members.iter().enumerate() {
        for &j in &members[p + 1..] {
            group += sim[[i, j]];
            let d = (sim[[i, i]] * sim[[j, j]]).sqrt();
            normalised.push(if d > 0.0 { sim[[i, j]] / d } else { 0.0 });
        }
    }
    TupleScore {
        members: members.iter().map(|&i| inputs[i].name.clone()).collect(),
        group_similarity: group,
        group_diversity: if normalised.is_empty() {
            1.0
        } else {
            1.0 - mean(&normalised)
        },
        mean_accuracy: mean(
            &members
                .iter()
                .map(|&i| inputs[i].accuracy)
                .collect::<Vec<_>>(),
        ),
        mean_ppl: mean(&members.iter().map(|&i| inputs[i].ppl).collect::<Vec<_>>()),
        combined_rank: 0.0,
    }
}

/// Linear-interpolated quantile `q ∈ [0, 1]` (NaN for an empty slice).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// `C(n, k)`, saturating.
pub fn binomial(n: usize, k: usize) -> usize {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut c: u128 = 1;
    for i in 0..k {
        c = c * (n - i) as u128 / (i + 1) as u128;
        if c > usize::MAX as u128 {
            return usize::MAX;
        }
    }
    c as usize
}

/// Calls `f` on every k-subset of `0..n` in lexicographic order.
pub fn for_each_combination(n: usize, k: usize, mut f: impl FnMut(&[usize])) {
    if k > n {
        return;
    }
    let mut c: Vec<usize> = (0..k).collect();
    loop {
        f(&c);
        let mut i = k;
        loop {
            if i == 0 {
                return;
            }
            i -= 1;
            if c[i] != i + n - k {
                break;
            }
            if i == 0 {
                return;
            }
        }
        c[i] += 1;
        for j in i + 1..k {
            c[j] = c[j - 1] + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(name: &str, accuracy: f64, ppl: f64) -> AdapterInput {
        AdapterInput {
            name: name.into(),
            accuracy,
            ppl,
            per_item_correct: vec![],
            per_item_ppl: vec![],
        }
    }

    #[test]
    fn combinations_are_complete_and_distinct() {
        let mut seen = Vec::new();
        for_each_combination(6, 3, |c| seen.push(c.to_vec()));
        assert_eq!(seen.len(), binomial(6, 3));
        assert_eq!(seen.first().unwrap(), &vec![0, 1, 2]);
        assert_eq!(seen.last().unwrap(), &vec![3, 4, 5]);
        let mut dedup = seen.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), seen.len());
        let mut one = Vec::new();
        for_each_combination(3, 3, |c| one.push(c.to_vec()));
        assert_eq!(one, vec![vec![0, 1, 2]]);
        assert_eq!(binomial(16, 4), 1820);
    }

    #[test]
    fn shortlist_rules_and_diverse_tuple() {
        // a, b near-duplicates; c different; d weak.
        let inputs = vec![
            input("a", 0.9, 2.0),
            input("b", 0.9, 2.1),
            input("c", 0.8, 1.5),
            input("d", 0.1, 9.0),
        ];
        let mut sim = Array2::<f64>::zeros((4, 4));
        for i in 0..4 {
            sim[[i, i]] = 10.0;
        }
        let mut set = |i: usize, j: usize, v: f64| {
            sim[[i, j]] = v;
            sim[[j, i]] = v;
        };
        set(0, 1, 9.5);
        set(0, 2, 1.0);
        set(1, 2, 1.2);
        set(0, 3, 0.5);
        set(1, 3, 0.5);
        set(2, 3, 0.5);
        let cfg = SelectionConfig {
            shortlist: 3,
            experts: 2,
            ..Default::default()
        };
        let s = select_experts(&inputs, &sim, &cfg).unwrap();
        let names: Vec<&str> = s.adapters.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert_eq!(s.selected, ["a", "c"]);
        assert_eq!(s.tuples_scored, 3);
        assert!((s.tuples[0].group_diversity - 0.9).abs() < 1e-12);
        assert!(!s.adapters[3].shortlisted);
        // Rank sums: a 1.5 + 2 = 3.5, b 1.5 + 3 = 4.5, c 3 + 1 = 4, d 8: c moves ahead of b.
        let rs = select_experts(
            &inputs,
            &sim,
            &SelectionConfig {
                shortlist_rule: ShortlistRule::RankSum,
                ..cfg.clone()
            },
        )
        .unwrap();
        let order: Vec<&str> = rs.adapters.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(order, ["a", "c", "b", "d"]);
        assert_eq!(rs.adapters[1].rank_sum, 4.0);
        let cr = select_experts(
            &inputs,
            &sim,
            &SelectionConfig {
                tuple_rule: TupleRule::CombinedRank,
                ..cfg
            },
        )
        .unwrap();
        assert!(cr.tuples[0].combined_rank > 0.0);
    }

    #[test]
    fn blind_guessers_are_accurate_but_perplexed() {
        let inputs = vec![
            input("explains", 0.8, 2.0),
            input("guesses", 0.8, 40.0),
            input("weak", 0.1, 50.0),
            input("ok", 0.5, 3.0),
            input("mid", 0.6, 4.0),
        ];
        let sim = Array2::<f64>::eye(5);
        let s = select_experts(
            &inputs,
            &sim,
            &SelectionConfig {
                shortlist: 4,
                experts: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let flag = |n: &str| {
            s.adapters
                .iter()
                .find(|a| a.name == n)
                .unwrap()
                .blind_guesser
        };
        assert!(flag("guesses"));
        assert!(!flag("explains"));
        assert!(!flag("weak"));
    }

    #[test]
    fn bad_settings_are_errors() {
        let inputs = vec![input("a", 1.0, 1.0)];
        let sim = Array2::<f64>::eye(1);
        assert!(
            select_experts(
                &inputs,
                &sim,
                &SelectionConfig {
                    experts: 2,
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert!(
            select_experts(
                &inputs,
                &Array2::eye(2),
                &SelectionConfig {
                    experts: 1,
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert!(select_experts(&[], &Array2::eye(0), &SelectionConfig::default()).is_err());
        let one = select_experts(
            &inputs,
            &sim,
            &SelectionConfig {
                experts: 1,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(one.selected, ["a"]);
    }

    proptest! {
        #[test]
        fn diversity_rule_finds_the_minimum_group_similarity(vals in proptest::collection::vec(0.0f64..1.0, 15), k in 1usize..4) {
            let n = 6;
            let mut sim = Array2::<f64>::eye(n);
            let mut it = vals.iter();
            for i in 0..n { for j in i + 1..n { let v = *it.next().unwrap(); sim[[i, j]] = v; sim[[j, i]] = v; } }
            let inputs: Vec<AdapterInput> = (0..n).map(|i| input(&format!("x{i}"), 0.5, 1.0)).collect();
            let s = select_experts(&inputs, &sim, &SelectionConfig { shortlist: n, experts: k, ..Default::default() }).unwrap();
            let mut best = f64::INFINITY;
            for_each_combination(n, k, |c| {
                let mut g = 0.0;
                for (p, &i) in c.iter().enumerate() { for &j in &c[p + 1..] { g += sim[[i, j]]; } }
                best = best.min(g);
            });
            prop_assert!((s.tuples[0].group_similarity - best).abs() < 1e-12);
            prop_assert_eq!(s.selected.len(), k);
        }
    }
}
