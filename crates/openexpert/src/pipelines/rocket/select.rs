//! Stage 1: every bank adapter (and the base model) on the K-shot set, and the choice of the
//! `N` experts under the configured [`SelectionSignal`] (ALGORITHMS.md 1(a) steps 1-4).
//!
//! The full method (`combined-diversity`) is kshot-eval's [`rank_bank`]: shortlist `M` by
//! accuracy then reasoning perplexity, then the most diverse `N`-tuple. The ablation signals
//! reuse the same evaluations: top `N` by one signal, or `N` at random. The verdict says
//! whether any adapter beats the base model on the K-shot signals at all; when none does, the
//! run says so instead of presenting unrelated experts as a finding.

use std::collections::BTreeMap;

use kshot_eval::bank::BASE_NAME;
use kshot_eval::rank::{AccuracySignal, AdapterSignals, PplSignal, signals_of};
use kshot_eval::{EvalConfig, KShotItem, RankConfig, RankReport, SelectionConfig, rank_bank};
use lm_core::model::LanguageModel;
use lm_core::prompt::PromptFormat;
use lora_zoo::LoraBank;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::config::{RocketConfig, SelectionSignal};
use super::error::{Result, RocketError};

/// One row of the selection table (the base model first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionRow {
    /// Adapter name, or `base`.
    pub name: String,
    /// K-shot exact match.
    pub accuracy: Option<f64>,
    /// Its standard error.
    pub accuracy_stderr: Option<f64>,
    /// Mean per-item reasoning perplexity.
    pub reasoning_ppl: Option<f64>,
    /// Mean per-item answer ("vanilla") perplexity.
    pub answer_ppl: Option<f64>,
    /// Position in the shortlist ranking (1 = first; `None` for the base).
    pub position: Option<usize>,
    /// On the shortlist.
    pub shortlisted: bool,
    /// Chosen as an expert.
    pub chosen: bool,
    /// Accurate but high perplexity.
    pub blind_guesser: bool,
    /// Better than the base on the K-shot signals (higher accuracy, or equal accuracy and lower
    /// perplexity).
    pub beats_base: bool,
    /// K-shot generations that stopped at the token limit.
    #[serde(default)]
    pub truncated: usize,
}

/// The stage's output (`selection.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SelectionOutcome {
    /// The signal used.
    pub signal: String,
    /// The chosen experts, in mixture order.
    pub chosen: Vec<String>,
    /// The adapter ranked first (the "best single expert" contender).
    pub best_expert: String,
    /// Base first, then every adapter in ranking order.
    pub rows: Vec<SelectionRow>,
    /// Whether any adapter beats the base on the K-shot signals.
    pub bank_helps: bool,
    /// One sentence for the report and the summary.
    pub verdict: String,
    /// Group diversity of the chosen tuple (when the method's tuple rule chose it).
    pub group_diversity: Option<f64>,
    /// The perplexity signal the ranking used.
    pub ppl_signal: String,
    /// kshot-eval's full ranking (every evaluation, per item).
    pub rank: RankReport,
}

/// Checks that the K-shot set supports the configured signals.
///
/// # Errors
/// [`RocketError::Config`] when reasoning perplexity is asked for and items lack rationales.
pub fn check_kshot(config: &RocketConfig, kshot: &[KShotItem]) -> Result<()> {
    let s = &config.selection;
    let uses_reasoning = matches!(
        s.signal,
        SelectionSignal::ReasoningPpl
            | SelectionSignal::Combined
            | SelectionSignal::CombinedDiversity
    ) && s.ppl != PplSignal::AnswerMean;
    let missing: Vec<usize> = kshot
        .iter()
        .enumerate()
        .filter(|(_, i)| i.rationale_text().is_none())
        .map(|(n, _)| n + 1)
        .collect();
    if uses_reasoning && !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(8).map(ToString::to_string).collect();
        return Err(RocketError::Config(format!(
            "selection.signal = \"{}\" ranks by reasoning perplexity, but {} of {} K-shot items have no \"rationale\" (items {}{}). Add a rationale to every item, or set selection.ppl = \"answer-mean\" (vanilla perplexity) or selection.signal = \"accuracy\"",
            s.signal,
            missing.len(),
            kshot.len(),
            shown.join(", "),
            if missing.len() > 8 { ", ..." } else { "" }
        )));
    }
    Ok(())
}

/// The ranking config of stage 1.
pub fn rank_config(config: &RocketConfig, format: PromptFormat) -> RankConfig {
    let s = &config.selection;
    RankConfig {
        eval: EvalConfig {
            format,
            max_new_tokens: s.max_new_tokens,
            batch_size: config.evaluation.batch_size,
            bootstrap_resamples: config.evaluation.bootstrap_resamples,
            show_progress: true,
            ..EvalConfig::default()
        },
        selection: SelectionConfig {
            shortlist: s.shortlist,
            experts: s.experts,
            shortlist_rule: s.shortlist_rule,
            tuple_rule: s.tuple_rule,
            ..SelectionConfig::default()
        },
        similarity: s.similarity,
        ppl_signal: if s.signal == SelectionSignal::VanillaPpl {
            PplSignal::AnswerMean
        } else {
            s.ppl
        },
        accuracy_signal: AccuracySignal::ExactMatch,
        include_base: true,
    }
}

/// Runs stage 1.
///
/// # Errors
/// [`RocketError::Config`] when the bank has fewer adapters than `selection.experts`; the
/// ranking's errors as [`RocketError::Stage`].
pub fn run(
    model: &mut LanguageModel,
    bank: &LoraBank,
    kshot: &[KShotItem],
    config: &RocketConfig,
    format: PromptFormat,
) -> Result<SelectionOutcome> {
    let s = &config.selection;
    let names = bank.names();
    if names.len() < s.experts {
        return Err(RocketError::Config(format!(
            "selection.experts = {} but the bank {} has {} adapters; lower selection.experts",
            s.experts,
            bank.root().display(),
            names.len()
        )));
    }
    let rank_cfg = rank_config(config, format);
    let rank = rank_bank(model, bank, None, &[], kshot, &rank_cfg)
        .map_err(|e| RocketError::stage("rank", e))?;
    lm_core::model::expert_pack::detach_experts(&mut model.decoder);
    outcome(rank, config)
}

/// Applies the selection signal to a finished ranking (pure; unit-tested).
///
/// # Errors
/// [`RocketError::Config`] when a signal's perplexity is missing.
pub fn outcome(rank: RankReport, config: &RocketConfig) -> Result<SelectionOutcome> {
    let s = &config.selection;
    let signals: BTreeMap<String, AdapterSignals> = rank
        .evaluations
        .iter()
        .map(|e| (e.name.clone(), signals_of(e)))
        .collect();
    // Bank adapters in ranking order.
    let mut ranked: Vec<_> = rank.selection.adapters.clone();
    ranked.sort_by_key(|v| v.position);
    let bank_order: Vec<String> = rank.names.clone();
    let sig = |n: &str| signals.get(n);
    let by = |key: &dyn Fn(&str) -> Option<f64>, descending: bool| -> Result<Vec<String>> {
        let mut v: Vec<(usize, &String, f64)> = Vec::new();
        for (i, n) in bank_order.iter().enumerate() {
            let x = key(n).ok_or_else(|| {
                RocketError::Config(format!(
                    "selection.signal = \"{}\": adapter {n} has no value for it",
                    s.signal
                ))
            })?;
            v.push((i, n, if descending { -x } else { x }));
        }
        v.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
        Ok(v.into_iter().take(s.experts).map(|t| t.1.clone()).collect())
    };
    let chosen: Vec<String> = match s.signal {
        SelectionSignal::CombinedDiversity => rank.selection.selected.clone(),
        SelectionSignal::Combined => ranked
            .iter()
            .take(s.experts)
            .map(|v| v.name.clone())
            .collect(),
        SelectionSignal::Accuracy => by(&|n| sig(n).and_then(|x| x.accuracy), true)?,
        SelectionSignal::ReasoningPpl => by(&|n| sig(n).and_then(|x| x.reasoning_ppl_mean), false)?,
        SelectionSignal::VanillaPpl => by(&|n| sig(n).and_then(|x| x.answer_ppl_mean), false)?,
        SelectionSignal::Random => {
            let mut names = bank_order.clone();
            let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
            names.shuffle(&mut rng);
            names.truncate(s.experts);
            names
        }
    };
    let ppl_of = |x: &AdapterSignals| match rank.ppl_signal {
        PplSignal::ReasoningMean => x.reasoning_ppl_mean,
        PplSignal::ReasoningPooled => x.reasoning_ppl_pooled,
        PplSignal::AnswerMean => x.answer_ppl_mean,
    };
    let base = signals.get(BASE_NAME).cloned();
    let beats = |x: &AdapterSignals| -> bool {
        let Some(b) = &base else { return false };
        let (acc, bacc) = (x.accuracy.unwrap_or(0.0), b.accuracy.unwrap_or(0.0));
        let lower_ppl = match (ppl_of(x), ppl_of(b)) {
            (Some(p), Some(q)) => p < q,
            _ => false,
        };
        acc > bacc || (acc >= bacc && lower_ppl)
    };
    let truncated = |name: &str| -> usize {
        rank.evaluations
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.exact_match.as_ref())
            .map_or(0, |m| {
                m.per_item
                    .iter()
                    .filter(|p| p.finish_reason == "length")
                    .count()
            })
    };
    let mut rows = Vec::new();
    if let Some(b) = &base {
        rows.push(SelectionRow {
            name: BASE_NAME.into(),
            accuracy: b.accuracy,
            accuracy_stderr: b.accuracy_stderr,
            reasoning_ppl: b.reasoning_ppl_mean,
            answer_ppl: b.answer_ppl_mean,
            position: None,
            shortlisted: false,
            chosen: false,
            blind_guesser: false,
            beats_base: false,
            truncated: truncated(BASE_NAME),
        });
    }
    for v in &ranked {
        let x = sig(&v.name).cloned().expect("every adapter evaluated");
        rows.push(SelectionRow {
            name: v.name.clone(),
            accuracy: x.accuracy,
            accuracy_stderr: x.accuracy_stderr,
            reasoning_ppl: x.reasoning_ppl_mean,
            answer_ppl: x.answer_ppl_mean,
            position: Some(v.position),
            shortlisted: v.shortlisted,
            chosen: chosen.contains(&v.name),
            blind_guesser: v.blind_guesser,
            beats_base: beats(&x),
            truncated: truncated(&v.name),
        });
    }
    let helpers: Vec<&str> = rows
        .iter()
        .filter(|r| r.beats_base)
        .map(|r| r.name.as_str())
        .collect();
    let bank_helps = !helpers.is_empty();
    let ppl_name = match rank.ppl_signal {
        PplSignal::AnswerMean => "answer perplexity",
        _ => "reasoning perplexity",
    };
    let verdict = if base.is_none() {
        "The base model was not evaluated, so no adapter can be compared with it".to_string()
    } else if bank_helps {
        format!(
            "{} of {} bank adapters beat the base model on the K-shot set (higher accuracy, or equal accuracy and lower {ppl_name}): {}",
            helpers.len(),
            ranked.len(),
            helpers.join(", ")
        )
    } else {
        format!(
            "No bank adapter beats the base model on the K-shot set: none has a higher accuracy, or an equal accuracy with a lower {ppl_name}. The experts below were chosen by the configured rule anyway; expect the mixture to gain from fine-tuning on the data, not from the bank"
        )
    };
    let group_diversity = rank
        .selection
        .tuples
        .iter()
        .find(|t| {
            let mut a = t.members.clone();
            let mut b = chosen.clone();
            a.sort();
            b.sort();
            a == b
        })
        .map(|t| t.group_diversity);
    let best_expert = ranked.first().map(|v| v.name.clone()).unwrap_or_default();
    Ok(SelectionOutcome {
        signal: s.signal.to_string(),
        chosen,
        best_expert,
        rows,
        bank_helps,
        verdict,
        group_diversity,
        ppl_signal: rank.ppl_signal.to_string(),
        rank,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real ranking: SmolLM2 + the default bank on 16 lcm items (per-item arrays dropped).
    fn rank() -> RankReport {
        serde_json::from_str(include_str!("../../../tests/fixtures/rank_lcm_16shot.json")).unwrap()
    }

    fn chosen(signal: SelectionSignal, seed: u64) -> Vec<String> {
        let mut c = RocketConfig::default();
        c.selection.experts = 3;
        c.selection.signal = signal;
        c.selection.seed = seed;
        outcome(rank(), &c).unwrap().chosen
    }

    #[test]
    fn every_signal_chooses_by_its_own_rule() {
        use SelectionSignal::*;
        assert_eq!(chosen(CombinedDiversity, 0), rank().selection.selected);
        assert_eq!(
            chosen(Accuracy, 0),
            ["letter_counting", "basic_arithmetic", "chain_sum-peft"],
            "accuracy descending, ties in bank order"
        );
        assert_eq!(
            chosen(ReasoningPpl, 0),
            ["chain_sum-peft", "letter_counting", "basic_arithmetic"]
        );
        assert_eq!(
            chosen(VanillaPpl, 0),
            ["syllogism", "family_relationships", "chain_sum-peft"]
        );
        assert_eq!(
            chosen(Combined, 0),
            ["letter_counting", "chain_sum-peft", "basic_arithmetic"],
            "shortlist order: accuracy, then reasoning perplexity"
        );
        let r = chosen(Random, 7);
        assert_eq!(r, chosen(Random, 7), "seeded");
        assert_eq!(r.len(), 3);
        assert!((0..20).any(|s| chosen(Random, s) != r), "the seed matters");
    }

    #[test]
    fn the_verdict_says_when_no_adapter_beats_the_base() {
        let c = RocketConfig::default();
        let o = outcome(rank(), &c).unwrap();
        assert!(!o.bank_helps, "no adapter beats base 0.125 / rPPL 3.21");
        assert!(o.verdict.starts_with("No bank adapter beats the base"));
        assert_eq!(o.rows[0].name, "base", "the base row comes first");
        assert!(o.rows.iter().all(|r| !r.beats_base));
        // A weaker base: adapters with higher accuracy now beat it.
        let mut r = rank();
        let base = r.evaluations.iter_mut().find(|e| e.name == "base").unwrap();
        base.exact_match.as_mut().unwrap().accuracy = 0.0;
        let o = outcome(r, &c).unwrap();
        assert!(o.bank_helps);
        let helpers: Vec<&str> = o
            .rows
            .iter()
            .filter(|r| r.beats_base)
            .map(|r| r.name.as_str())
            .collect();
        assert!(
            helpers.contains(&"letter_counting") && !helpers.contains(&"gcd"),
            "{helpers:?}"
        );
    }

    #[test]
    fn reasoning_signals_need_rationales() {
        let c = RocketConfig::default();
        let bare = vec![KShotItem::new("q", "1")];
        assert!(
            check_kshot(&c, &bare)
                .unwrap_err()
                .to_string()
                .contains("rationale")
        );
        let mut acc = c.clone();
        acc.selection.signal = SelectionSignal::Accuracy;
        check_kshot(&acc, &bare).unwrap();
        let mut vanilla = c;
        vanilla.selection.ppl = PplSignal::AnswerMean;
        check_kshot(&vanilla, &bare).unwrap();
        check_kshot(
            &RocketConfig::default(),
            &[KShotItem::new("q", "1").with_rationale("r")],
        )
        .unwrap();
    }
}
