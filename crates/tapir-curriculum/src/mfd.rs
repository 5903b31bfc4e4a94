//! Model-fitting difficulty (MFD): how far the student is from fitting the teacher on an
//! instruction, as the judge sees it.
//!
//! ```text
//! MFD(x) = J(x, y_T) - J(x, y_S)        (1-10 judge scores, both orders averaged)
//! hard(x) ⇔ MFD(x) ≥ δ                  (δ = 1 by default)
//! ```
//!
//! TAPIR (ALGORITHMS.md section 3(b)) defines MFD as the judge's score gap between the teacher's
//! and the current student's answers; the pairwise form and both-orders averaging follow Lion's
//! `discrimination.py` (`diff = teacher − student`, hard when `diff ≥ 1`; PEERS.md E2.2), which
//! is also where δ = 1 and `≥` come from (ALGORITHMS.md writes `>` with δ unverified). Scores
//! come from [`crate::pairwise::judge_pairs`] with the teacher as `a` and the student as `b`; an
//! item the judge never scored has no MFD and is neither hard nor easy (counted as unscored,
//! never averaged in).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TapirError};
use crate::pairwise::{
    Consistency, Pair, PairJudgement, PairwiseConfig, WinSummary, judge_pairs, summarise,
};
use crate::roles::Judge;

/// MFD settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MfdConfig {
    /// `hard(x) ⇔ MFD(x) ≥ delta` (Lion's code: 1 on the 1-10 scale).
    pub delta: f64,
    /// How the judge is asked (both orders, re-asks, ties).
    pub pairwise: PairwiseConfig,
}

impl Default for MfdConfig {
    fn default() -> Self {
        Self {
            delta: 1.0,
            pairwise: PairwiseConfig::default(),
        }
    }
}

impl MfdConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`TapirError::Config`] naming the bad key.
    pub fn validate(&self) -> Result<()> {
        let span = self.pairwise.scale.max - self.pairwise.scale.min;
        if !self.delta.is_finite() || self.delta.abs() > span {
            return Err(TapirError::config(
                "mfd.delta",
                format!(
                    "expected a threshold within ±{span} (the score scale's span), found {}",
                    self.delta
                ),
            ));
        }
        self.pairwise.validate("mfd")
    }
}

/// One instruction with the teacher's and the student's answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfdItem {
    /// The instruction.
    pub instruction: String,
    /// The teacher's answer.
    pub teacher: String,
    /// The current student's answer.
    pub student: String,
}

/// One item's difficulty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MfdRecord {
    /// `J(teacher) - J(student)`; `None` when the judge never scored the item.
    pub mfd: Option<f64>,
    /// `mfd ≥ δ`; `None` when unscored.
    pub hard: Option<bool>,
    /// The judgement (`a` = teacher, `b` = student), with every raw output.
    pub judgement: PairJudgement,
}

/// What a scoring pass found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MfdSummary {
    /// Items sent to the judge.
    pub items: usize,
    /// Items with an MFD.
    pub scored: usize,
    /// Items the judge never scored (excluded from every average).
    pub unscored: usize,
    /// Scored items with `MFD ≥ δ`.
    pub hard: usize,
    /// Scored items with `MFD < δ`.
    pub easy: usize,
    /// Mean MFD over scored items.
    pub mean_mfd: Option<f64>,
    /// The threshold used.
    pub delta: f64,
    /// Teacher against student (`a` = teacher): wins, ties, flips, position bias.
    pub judge: WinSummary,
}

/// Scores every item (see the module docs).
///
/// # Errors
/// The judge's error when it cannot work at all.
pub fn score_mfd(
    judge: &mut dyn Judge,
    items: &[MfdItem],
    config: &MfdConfig,
) -> Result<Vec<MfdRecord>> {
    config.validate()?;
    let pairs: Vec<Pair> = items
        .iter()
        .map(|i| Pair {
            instruction: i.instruction.clone(),
            a: i.teacher.clone(),
            b: i.student.clone(),
        })
        .collect();
    let judged = judge_pairs(judge, &pairs, &config.pairwise)?;
    Ok(judged
        .into_iter()
        .map(|j| {
            let mfd = match (j.score_a, j.score_b) {
                (Some(t), Some(s)) if j.consistency != Consistency::Unscored => Some(t - s),
                _ => None,
            };
            MfdRecord {
                mfd,
                hard: mfd.map(|m| m >= config.delta),
                judgement: j,
            }
        })
        .collect())
}

/// Summarises a scoring pass.
pub fn summarise_mfd(records: &[MfdRecord], config: &MfdConfig) -> MfdSummary {
    let values: Vec<f64> = records.iter().filter_map(|r| r.mfd).collect();
    let judgements: Vec<PairJudgement> = records.iter().map(|r| r.judgement.clone()).collect();
    MfdSummary {
        items: records.len(),
        scored: values.len(),
        unscored: records.len() - values.len(),
        hard: records.iter().filter(|r| r.hard == Some(true)).count(),
        easy: records.iter().filter(|r| r.hard == Some(false)).count(),
        mean_mfd: (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
        delta: config.delta,
        judge: summarise(&judgements, config.pairwise.tie_delta),
    }
}

/// Counts of `values` in bins of `width` starting at `lo`: `(bin start, count)` for every bin
/// from the lowest to the highest value (empty bins included), for histograms.
pub fn histogram(values: &[f64], lo: f64, width: f64) -> Vec<(f64, usize)> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() || width.is_nan() || width <= 0.0 {
        return Vec::new();
    }
    let bin = |v: f64| ((v - lo) / width).floor() as i64;
    let (min, max) = finite.iter().fold((i64::MAX, i64::MIN), |(a, b), &v| {
        (a.min(bin(v)), b.max(bin(v)))
    });
    let mut counts = vec![0usize; (max - min + 1) as usize];
    for v in finite {
        counts[(bin(v) - min) as usize] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (lo + (min + i as i64) as f64 * width, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairwise::tests::{ScriptedJudge, scores};

    fn item(i: usize) -> MfdItem {
        MfdItem {
            instruction: format!("q{i}"),
            teacher: format!("T{i}"),
            student: format!("S{i}"),
        }
    }

    #[test]
    fn mfd_is_teacher_minus_student_and_hard_at_delta() {
        // item 0: teacher 8 student 7 in both orders -> MFD 1 -> hard (≥, Lion)
        // item 1: teacher 6, student 6 -> 0 -> easy
        // item 2: never parses -> unscored, neither hard nor easy
        let mut j = ScriptedJudge::new(&[
            &scores(8, 7),
            &scores(7, 8), // order 2 shows the student first
            &scores(6, 6),
            &scores(6, 6),
            "garbage",
            "garbage",
        ]);
        j.fallback = Some(|_| "still garbage".to_string());
        let cfg = MfdConfig::default();
        let recs = score_mfd(&mut j, &[item(0), item(1), item(2)], &cfg).unwrap();
        assert_eq!(recs[0].mfd, Some(1.0));
        assert_eq!(recs[0].hard, Some(true));
        assert_eq!(recs[1].hard, Some(false));
        assert_eq!((recs[2].mfd, recs[2].hard), (None, None));
        assert_eq!(recs[2].judgement.a_first.attempts, 3);
        let s = summarise_mfd(&recs, &cfg);
        assert_eq!((s.scored, s.unscored, s.hard, s.easy), (2, 1, 1, 1));
        assert_eq!(s.mean_mfd, Some(0.5));
        // the teacher is shown first in the first order
        assert_eq!(j.seen[0].answer_1, "T0");
        assert_eq!(j.seen[1].answer_1, "S0");
    }

    #[test]
    fn a_judge_that_never_parses_scores_nothing() {
        let mut j = ScriptedJudge {
            fallback: Some(|_| "I think both are good.".to_string()),
            ..ScriptedJudge::default()
        };
        let cfg = MfdConfig::default();
        let recs = score_mfd(&mut j, &[item(0), item(1)], &cfg).unwrap();
        assert!(recs.iter().all(|r| r.mfd.is_none()));
        assert_eq!(j.seen.len(), 2 * 2 * 3);
        let s = summarise_mfd(&recs, &cfg);
        assert_eq!((s.scored, s.unscored, s.mean_mfd), (0, 2, None));
    }

    #[test]
    fn the_config_reads_nested_judge_settings_and_refuses_typos() {
        let c: MfdConfig =
            serde_json::from_str(r#"{"delta": 2, "pairwise": {"max_attempts": 5}}"#).unwrap();
        assert_eq!(
            (c.delta, c.pairwise.max_attempts, c.pairwise.both_orders),
            (2.0, 5, true)
        );
        assert!(serde_json::from_str::<MfdConfig>(r#"{"max_attempts": 5}"#).is_err());
        assert!(serde_json::from_str::<MfdConfig>(r#"{"pairwise": {"max_atempts": 5}}"#).is_err());
    }

    #[test]
    fn delta_is_range_checked() {
        let cfg = MfdConfig {
            delta: 42.0,
            ..MfdConfig::default()
        };
        let e = score_mfd(&mut ScriptedJudge::default(), &[item(0)], &cfg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mfd.delta") && e.contains("42"), "{e}");
    }

    #[test]
    fn histograms_cover_every_bin_between_the_extremes() {
        let h = histogram(&[-1.0, 0.5, 0.2, 2.0, f64::NAN], -9.5, 1.0);
        assert_eq!(h, vec![(-1.5, 1), (-0.5, 1), (0.5, 1), (1.5, 1)]);
        let h = histogram(&[0.0, 3.0], -0.5, 1.0);
        assert_eq!(h, vec![(-0.5, 1), (0.5, 0), (1.5, 0), (2.5, 1)]);
        assert!(histogram(&[], 0.0, 1.0).is_empty());
    }
}
