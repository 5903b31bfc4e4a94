//! Metric definitions on plain numbers: exact-match accuracy, multiple-choice `acc` / `acc_norm`,
//! perplexities (mean of per-item, token-pooled), and bootstrap standard errors.
//!
//! With `ll_i` the summed log-probability of item `i`'s `T_i` target tokens:
//!
//! - per-item perplexity `PPL_i = exp(-ll_i / T_i)`;
//! - **mean perplexity** `(1/K) Σ_i PPL_i` (Rocket's `compute_ppl.py`: the arithmetic mean of
//!   per-sample perplexities; the default reasoning-perplexity signal);
//! - **pooled perplexity** `exp(-Σ_i ll_i / Σ_i T_i)` (lm-eval's `weighted_perplexity`; less
//!   dominated by short, high-perplexity items);
//! - multiple choice: `acc = [argmax_c ll_c = gold]`, `acc_norm = [argmax_c ll_c / len_chars(c) =
//!   gold]` (lm-eval: normalised by the choice's length in characters, not tokens);
//! - standard errors: the standard deviation of the statistic over `B` bootstrap resamples of the
//!   items (seeded, so reports are reproducible).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Index of the largest value (first on ties); `None` for an empty slice or NaNs only.
pub fn argmax(values: &[f64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        if best.is_none_or(|b| v > values[b]) {
            best = Some(i);
        }
    }
    best
}

/// Multiple-choice predictions `(acc pick, acc_norm pick)` from per-choice log-likelihoods and
/// choice texts.
pub fn choice_predictions(
    loglikelihoods: &[f64],
    choices: &[String],
) -> (Option<usize>, Option<usize>) {
    let norm: Vec<f64> = loglikelihoods
        .iter()
        .zip(choices)
        .map(|(ll, c)| ll / c.chars().count().max(1) as f64)
        .collect();
    (argmax(loglikelihoods), argmax(&norm))
}

/// `exp(-ll / n)`; NaN when `n = 0`.
pub fn perplexity(logprob: f64, n_tokens: usize) -> f64 {
    if n_tokens == 0 {
        f64::NAN
    } else {
        (-logprob / n_tokens as f64).exp()
    }
}

/// Arithmetic mean (NaN for an empty slice).
pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// Token-pooled perplexity `exp(-Σ ll / Σ n)` of `(logprob, n_tokens)` pairs.
pub fn pooled_perplexity(items: &[(f64, usize)]) -> f64 {
    let ll: f64 = items.iter().map(|p| p.0).sum();
    let n: usize = items.iter().map(|p| p.1).sum();
    perplexity(ll, n)
}

/// Bootstrap standard error of `statistic` over `n` items: the sample standard deviation of the
/// statistic on `resamples` draws of `n` indices with replacement, seeded. 0 when `n < 2` or
/// `resamples < 2`.
pub fn bootstrap_stderr(
    n: usize,
    resamples: usize,
    seed: u64,
    statistic: impl Fn(&[usize]) -> f64,
) -> f64 {
    if n < 2 || resamples < 2 {
        return 0.0;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut idx = vec![0usize; n];
    let stats: Vec<f64> = (0..resamples)
        .map(|_| {
            idx.iter_mut().for_each(|i| *i = rng.random_range(0..n));
            statistic(&idx)
        })
        .filter(|v| v.is_finite())
        .collect();
    if stats.len() < 2 {
        return 0.0;
    }
    let m = mean(&stats);
    (stats.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (stats.len() - 1) as f64).sqrt()
}

/// Bootstrap standard error of the mean of `values`.
pub fn bootstrap_mean_stderr(values: &[f64], resamples: usize, seed: u64) -> f64 {
    bootstrap_stderr(values.len(), resamples, seed, |idx| {
        idx.iter().map(|&i| values[i]).sum::<f64>() / idx.len() as f64
    })
}

/// Ranks with ties sharing the average rank (1 = first): largest first when `descending`, else
/// smallest first; NaN ranks last.
pub fn average_ranks(values: &[f64], descending: bool) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    let key = |v: f64| {
        if v.is_nan() {
            f64::INFINITY
        } else if descending {
            -v
        } else {
            v
        }
    };
    order.sort_by(|&a, &b| key(values[a]).total_cmp(&key(values[b])));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && key(values[order[j + 1]]) == key(values[order[i]]) {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = r;
        }
        i = j + 1;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn acc_norm_divides_by_characters() {
        let choices = vec!["a".to_string(), "a much longer choice".to_string()];
        // Raw: choice 0 wins; per character: choice 1 (-4/20 = -0.2 > -1/1).
        let (acc, norm) = choice_predictions(&[-1.0, -4.0], &choices);
        assert_eq!((acc, norm), (Some(0), Some(1)));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[f64::NAN, -1.0, -1.0]), Some(1));
    }

    #[test]
    fn mean_and_pooled_perplexity_differ_as_defined() {
        // Item 1: 1 token at ll -3 (ppl e^3); item 2: 9 tokens at total ll -0.9 (ppl e^0.1).
        let items = [(-3.0, 1), (-0.9, 9)];
        let per: Vec<f64> = items.iter().map(|&(l, n)| perplexity(l, n)).collect();
        assert!((mean(&per) - (3f64.exp() + 0.1f64.exp()) / 2.0).abs() < 1e-12);
        assert!((pooled_perplexity(&items) - (3.9f64 / 10.0).exp()).abs() < 1e-12);
        assert!(perplexity(0.0, 0).is_nan());
    }

    #[test]
    fn bootstrap_stderr_is_close_to_the_binomial_formula() {
        let values: Vec<f64> = (0..200).map(|i| f64::from(i % 4 == 0)).collect();
        let se = bootstrap_mean_stderr(&values, 2000, 3);
        let p: f64 = 0.25;
        let analytic = (p * (1.0 - p) / 200.0).sqrt();
        assert!((se - analytic).abs() < 0.2 * analytic, "{se} vs {analytic}");
        assert_eq!(bootstrap_mean_stderr(&[1.0], 100, 0), 0.0);
        assert_eq!(bootstrap_mean_stderr(&[1.0, 1.0, 1.0], 100, 0), 0.0);
        assert_eq!(se, bootstrap_mean_stderr(&values, 2000, 3));
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(
            average_ranks(&[0.5, 0.9, 0.5, 0.1], true),
            vec![2.5, 1.0, 2.5, 4.0]
        );
        assert_eq!(average_ranks(&[3.0, 1.0, 2.0], false), vec![3.0, 1.0, 2.0]);
    }

    proptest! {
        #[test]
        fn pooled_equals_mean_when_items_are_alike(ll in -5.0f64..0.0, n in 1usize..20, k in 1usize..6) {
            let items = vec![(ll, n); k];
            let per: Vec<f64> = items.iter().map(|&(l, n)| perplexity(l, n)).collect();
            prop_assert!((pooled_perplexity(&items) - mean(&per)).abs() < 1e-9 * mean(&per));
        }

        #[test]
        fn ranks_sum_to_the_triangle_number(values in proptest::collection::vec(0u8..5, 1..12)) {
            let v: Vec<f64> = values.iter().map(|&x| f64::from(x)).collect();
            let r = average_ranks(&v, true);
            let n = v.len() as f64;
            prop_assert!((r.iter().sum::<f64>() - n * (n + 1.0) / 2.0).abs() < 1e-9);
        }
    }
}
