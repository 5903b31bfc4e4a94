//! Pairwise judgements in both presentation orders, with re-asks, averaging and consistency.
//!
//! For each pair `(a, b)` of answers to one instruction the judge is asked twice: `a` shown as
//! Assistant 1 and `b` as Assistant 2, then the other way round (MT-Bench's g1 / g2, Lion's
//! review12 / review21). Each order's output is parsed with [`parse_scores`]; an unparsable
//! output is re-asked (with [`JudgeRequest::attempt`] `1, 2, ...`) up to
//! [`PairwiseConfig::max_attempts`] asks in all. An order that never parses is **unscored**: it
//! carries no number, and is never averaged in (Lion's code averages its `-1` failure value;
//! PEERS.md E2.2).
//!
//! A pair's scores are the means over its scored orders. With
//! [`PairwiseConfig::require_both_orders`] (the default) a pair needs both orders, otherwise it
//! is unscored; without it one order suffices and the pair is flagged
//! [`Consistency::OneOrder`]. Each order's winner (ties within [`PairwiseConfig::tie_delta`],
//! MT-Bench's `TIE_DELTA = 0.1`) is compared: different winners are
//! [`Consistency::Inconsistent`] (FastChat), opposite strict winners
//! [`Consistency::Flipped`] (position bias at work).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TapirError};
use crate::judge_parse::{ScoreScale, parse_scores};
use crate::roles::{Judge, JudgeRequest};

/// How pairs are judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PairwiseConfig {
    /// Asks per presentation order before it is left unscored (1 ask + re-asks; default 3).
    pub max_attempts: usize,
    /// Judge both presentation orders (default true; false asks only `a` first, which leaves
    /// position bias in the scores).
    pub both_orders: bool,
    /// A pair needs both orders scored (default true); false accepts one and flags it.
    pub require_both_orders: bool,
    /// Score differences up to this are ties (MT-Bench's `TIE_DELTA`, default 0.1).
    pub tie_delta: f64,
    /// The score scale (default 1 to 10).
    pub scale: ScoreScale,
}

impl Default for PairwiseConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            both_orders: true,
            require_both_orders: true,
            tie_delta: 0.1,
            scale: ScoreScale::default(),
        }
    }
}

impl PairwiseConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`TapirError::Config`] naming the bad key.
    pub fn validate(&self, prefix: &str) -> Result<()> {
        if self.max_attempts == 0 {
            return Err(TapirError::config(
                format!("{prefix}.max_attempts"),
                "expected at least 1 ask per order, found 0",
            ));
        }
        if !(self.tie_delta >= 0.0 && self.tie_delta.is_finite()) {
            return Err(TapirError::config(
                format!("{prefix}.tie_delta"),
                format!("expected a finite value >= 0, found {}", self.tie_delta),
            ));
        }
        if !(self.scale.min < self.scale.max
            && self.scale.min.is_finite()
            && self.scale.max.is_finite())
        {
            return Err(TapirError::config(
                format!("{prefix}.scale"),
                format!(
                    "expected min < max, found {} and {}",
                    self.scale.min, self.scale.max
                ),
            ));
        }
        Ok(())
    }
}

/// Two answers to one instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The instruction.
    pub instruction: String,
    /// The first answer (the candidate: the student).
    pub a: String,
    /// The second answer (the reference: the teacher, or the base student).
    pub b: String,
}

/// One presentation order's asks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderOutcome {
    /// `(score of a, score of b)` when an output parsed (already mapped back from positions).
    pub scores: Option<(f64, f64)>,
    /// Asks made.
    pub attempts: usize,
    /// Every raw output, in ask order (call failures as `<call failed: ...>`).
    pub outputs: Vec<String>,
    /// Why each failed ask failed.
    pub failures: Vec<String>,
}

/// Who won a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Winner {
    /// The first answer (`a`).
    A,
    /// The second answer (`b`).
    B,
    /// Within the tie delta.
    Tie,
}

/// How the two orders agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Both orders scored and named the same winner.
    Consistent,
    /// Both scored, different winners, one of them a tie.
    Inconsistent,
    /// Both scored with opposite strict winners.
    Flipped,
    /// Only one order scored (accepted because `require_both_orders` is off, or only one asked).
    OneOrder,
    /// Not enough orders scored: the pair carries no score.
    Unscored,
}

/// A judged pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairJudgement {
    /// `a` shown first.
    pub a_first: OrderOutcome,
    /// `b` shown first (`None` when only one order is asked).
    pub b_first: Option<OrderOutcome>,
    /// Mean score of `a` over the scored orders; `None` when unscored.
    pub score_a: Option<f64>,
    /// Mean score of `b` over the scored orders; `None` when unscored.
    pub score_b: Option<f64>,
    /// The winner by the mean scores.
    pub winner: Option<Winner>,
    /// How the orders agreed.
    pub consistency: Consistency,
}

fn winner(a: f64, b: f64, tie: f64) -> Winner {
    if (a - b).abs() <= tie {
        Winner::Tie
    } else if a > b {
        Winner::A
    } else {
        Winner::B
    }
}

/// Judges every pair in both orders (see the module docs). Batches one request per pending
/// order and ask round, so a batched or concurrent judge sees whole batches.
///
/// # Errors
/// The judge's own error (it cannot work at all), or [`TapirError::ReplyCount`].
pub fn judge_pairs(
    judge: &mut dyn Judge,
    pairs: &[Pair],
    config: &PairwiseConfig,
) -> Result<Vec<PairJudgement>> {
    config.validate("judge")?;
    let orders = if config.both_orders { 2 } else { 1 };
    // outcomes[i][o]: o = 0 is a first, o = 1 is b first.
    let mut outcomes: Vec<Vec<OrderOutcome>> =
        vec![vec![OrderOutcome::default(); orders]; pairs.len()];
    let mut pending: Vec<(usize, usize)> = (0..pairs.len())
        .flat_map(|i| (0..orders).map(move |o| (i, o)))
        .collect();
    for attempt in 0..config.max_attempts {
        if pending.is_empty() {
            break;
        }
        let requests: Vec<JudgeRequest> = pending
            .iter()
            .map(|&(i, o)| {
                let p = &pairs[i];
                let (first, second) = if o == 0 { (&p.a, &p.b) } else { (&p.b, &p.a) };
                JudgeRequest {
                    instruction: p.instruction.clone(),
                    answer_1: first.clone(),
                    answer_2: second.clone(),
                    attempt,
                }
            })
            .collect();
        let replies = judge.judge(&requests)?;
        if replies.len() != requests.len() {
            return Err(TapirError::ReplyCount {
                role: "judge".into(),
                expected: requests.len(),
                found: replies.len(),
            });
        }
        let mut still = Vec::new();
        for (&(i, o), reply) in pending.iter().zip(replies) {
            let out = &mut outcomes[i][o];
            out.attempts += 1;
            match reply {
                Ok(r) => {
                    let parsed = parse_scores(&r.text, config.scale);
                    out.outputs.push(r.text);
                    match parsed {
                        Ok((s1, s2)) => {
                            out.scores = Some(if o == 0 { (s1, s2) } else { (s2, s1) });
                        }
                        Err(e) => {
                            out.failures.push(e.to_string());
                            still.push((i, o));
                        }
                    }
                }
                Err(f) => {
                    out.outputs.push(format!("<call failed: {f}>"));
                    out.failures.push(format!("call failed: {f}"));
                    still.push((i, o));
                }
            }
        }
        pending = still;
    }
    Ok(outcomes
        .into_iter()
        .map(|mut o| {
            let b_first = if o.len() == 2 { o.pop() } else { None };
            let a_first = o.pop().expect("one order at least");
            combine(a_first, b_first, config)
        })
        .collect())
}

fn combine(
    a_first: OrderOutcome,
    b_first: Option<OrderOutcome>,
    config: &PairwiseConfig,
) -> PairJudgement {
    let s1 = a_first.scores;
    let s2 = b_first.as_ref().and_then(|o| o.scores);
    let asked_both = b_first.is_some();
    let (scores, consistency) = match (s1, s2) {
        (Some(x), Some(y)) => {
            let w1 = winner(x.0, x.1, config.tie_delta);
            let w2 = winner(y.0, y.1, config.tie_delta);
            let c = if w1 == w2 {
                Consistency::Consistent
            } else if w1 != Winner::Tie && w2 != Winner::Tie {
                Consistency::Flipped
            } else {
                Consistency::Inconsistent
            };
            (Some(((x.0 + y.0) / 2.0, (x.1 + y.1) / 2.0)), c)
        }
        (Some(x), None) | (None, Some(x)) if !asked_both || !config.require_both_orders => {
            (Some(x), Consistency::OneOrder)
        }
        _ => (None, Consistency::Unscored),
    };
    PairJudgement {
        a_first,
        b_first,
        score_a: scores.map(|s| s.0),
        score_b: scores.map(|s| s.1),
        winner: scores.map(|(a, b)| winner(a, b, config.tie_delta)),
        consistency,
    }
}

/// Win / tie / loss counts of `a` against `b` over judged pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WinSummary {
    /// Pairs judged.
    pub pairs: usize,
    /// Pairs with a score.
    pub scored: usize,
    /// `a` won.
    pub wins: usize,
    /// Ties.
    pub ties: usize,
    /// `b` won.
    pub losses: usize,
    /// Pairs left unscored (excluded from the rates).
    pub unscored: usize,
    /// Scored pairs whose orders named different winners (one a tie).
    pub inconsistent: usize,
    /// Scored pairs whose orders named opposite winners.
    pub flipped: usize,
    /// Scored from one order only.
    pub one_order: usize,
    /// `(wins + ties / 2) / scored`; `None` when nothing scored.
    pub win_rate: Option<f64>,
    /// Mean score of `a` over scored pairs.
    pub mean_a: Option<f64>,
    /// Mean score of `b` over scored pairs.
    pub mean_b: Option<f64>,
    /// Of the orders with a strict winner, the share won by the answer shown first (0.5 = no
    /// position bias).
    pub first_position_wins: Option<f64>,
}

/// Summarises judged pairs.
pub fn summarise(judgements: &[PairJudgement], tie_delta: f64) -> WinSummary {
    let mut s = WinSummary {
        pairs: judgements.len(),
        ..WinSummary::default()
    };
    let (mut sum_a, mut sum_b) = (0.0, 0.0);
    let (mut first_wins, mut strict) = (0usize, 0usize);
    for j in judgements {
        for (o, first_is_a) in [(Some(&j.a_first), true), (j.b_first.as_ref(), false)] {
            if let Some((a, b)) = o.and_then(|o| o.scores) {
                match winner(a, b, tie_delta) {
                    Winner::Tie => {}
                    w => {
                        strict += 1;
                        if (w == Winner::A) == first_is_a {
                            first_wins += 1;
                        }
                    }
                }
            }
        }
        match j.consistency {
            Consistency::Unscored => {
                s.unscored += 1;
                continue;
            }
            Consistency::Inconsistent => s.inconsistent += 1,
            Consistency::Flipped => s.flipped += 1,
            Consistency::OneOrder => s.one_order += 1,
            Consistency::Consistent => {}
        }
        s.scored += 1;
        sum_a += j.score_a.unwrap_or(0.0);
        sum_b += j.score_b.unwrap_or(0.0);
        match j.winner {
            Some(Winner::A) => s.wins += 1,
            Some(Winner::B) => s.losses += 1,
            _ => s.ties += 1,
        }
    }
    if s.scored > 0 {
        let n = s.scored as f64;
        s.win_rate = Some((s.wins as f64 + s.ties as f64 / 2.0) / n);
        s.mean_a = Some(sum_a / n);
        s.mean_b = Some(sum_b / n);
    }
    if strict > 0 {
        s.first_position_wins = Some(first_wins as f64 / strict as f64);
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::chat::{CallFailure, CallStats, Replies, Reply};

    /// A judge that answers from a script: each request pops the next scripted output (an
    /// `Err` string is a call failure). Requests are recorded.
    #[derive(Default)]
    pub(crate) struct ScriptedJudge {
        pub script: VecDeque<std::result::Result<String, String>>,
        pub seen: Vec<JudgeRequest>,
        /// When the script runs out, answer with this function of the request.
        pub fallback: Option<fn(&JudgeRequest) -> String>,
    }

    impl ScriptedJudge {
        pub fn new(script: &[&str]) -> Self {
            Self {
                script: script.iter().map(|s| Ok(s.to_string())).collect(),
                ..Self::default()
            }
        }
    }

    impl Judge for ScriptedJudge {
        fn judge(&mut self, requests: &[JudgeRequest]) -> Result<Replies> {
            self.seen.extend_from_slice(requests);
            Ok(requests
                .iter()
                .map(|r| match self.script.pop_front() {
                    Some(Ok(t)) => Ok(Reply::new(t)),
                    Some(Err(e)) => Err(CallFailure { detail: e }),
                    None => Ok(Reply::new(self.fallback.map_or(String::new(), |f| f(r)))),
                })
                .collect())
        }

        fn stats(&self) -> CallStats {
            CallStats {
                made: self.seen.len(),
                ..CallStats::default()
            }
        }
    }

    pub(crate) fn scores(a: u32, b: u32) -> String {
        format!("Fine.\nScore of the Assistant 1: [[{a}]]\nScore of the Assistant 2: [[{b}]]")
    }

    fn pair() -> Pair {
        Pair {
            instruction: "q".into(),
            a: "A".into(),
            b: "B".into(),
        }
    }

    #[test]
    fn both_orders_are_asked_and_mapped_back_to_the_answers() {
        // order 1: A first scores (8, 4); order 2: B first scores (5, 9) -> A 9, B 5
        let s1 = scores(8, 4);
        let s2 = scores(5, 9);
        let mut j = ScriptedJudge::new(&[&s1, &s2]);
        let out = judge_pairs(&mut j, &[pair()], &PairwiseConfig::default()).unwrap();
        assert_eq!(j.seen[0].answer_1, "A");
        assert_eq!(j.seen[1].answer_1, "B");
        assert_eq!(out[0].score_a, Some(8.5));
        assert_eq!(out[0].score_b, Some(4.5));
        assert_eq!(out[0].winner, Some(Winner::A));
        assert_eq!(out[0].consistency, Consistency::Consistent);
    }

    #[test]
    fn unparsable_outputs_are_reasked_then_left_unscored() {
        // pair 0: order A-first fails twice then parses; order B-first parses at once.
        // pair 1: A-first never parses in 3 asks -> unscored, never a number.
        let good = scores(6, 6);
        let mut j = ScriptedJudge::new(&[
            "no score here", // p0 o0 attempt 0
            &good,           // p0 o1
            "[[11]] [[12]]", // p1 o0
            &good,           // p1 o1
        ]);
        j.script.push_back(Err("503".into())); // p0 o0 attempt 1: a call failure
        j.script.push_back(Ok("still nothing".into())); // p1 o0 attempt 1
        j.script.push_back(Ok(scores(7, 3))); // p0 o0 attempt 2
        j.script.push_back(Ok("Assistant 1: [[5]]".into())); // p1 o0 attempt 2
        let out = judge_pairs(&mut j, &[pair(), pair()], &PairwiseConfig::default()).unwrap();
        assert_eq!(j.seen.len(), 8);
        assert_eq!(j.seen[4].attempt, 1);
        assert_eq!(j.seen[7].attempt, 2);
        assert_eq!(out[0].a_first.attempts, 3);
        assert_eq!(out[0].a_first.outputs[1], "<call failed: 503>");
        // (7,3) and (6,6) averaged
        assert_eq!((out[0].score_a, out[0].score_b), (Some(6.5), Some(4.5)));
        assert_eq!(out[0].consistency, Consistency::Inconsistent);
        assert_eq!(out[1].consistency, Consistency::Unscored);
        assert_eq!((out[1].score_a, out[1].winner), (None, None));
        assert_eq!(out[1].a_first.failures.len(), 3);
        assert!(out[1].a_first.failures[0].contains("no tag held a number"));
        assert!(out[1].a_first.failures[2].contains("only one valid score"));
        let s = summarise(&out, 0.1);
        assert_eq!((s.scored, s.unscored, s.wins), (1, 1, 1));
        assert_eq!(s.win_rate, Some(1.0));
    }

    #[test]
    fn one_order_is_accepted_only_when_allowed() {
        let cfg = PairwiseConfig {
            max_attempts: 1,
            ..PairwiseConfig::default()
        };
        let s = scores(9, 2);
        let mut j = ScriptedJudge::new(&[&s, "nothing"]);
        let strict = judge_pairs(&mut j, &[pair()], &cfg).unwrap();
        assert_eq!(strict[0].consistency, Consistency::Unscored);
        let lenient = PairwiseConfig {
            require_both_orders: false,
            ..cfg
        };
        let mut j = ScriptedJudge::new(&[&s, "nothing"]);
        let out = judge_pairs(&mut j, &[pair()], &lenient).unwrap();
        assert_eq!(out[0].consistency, Consistency::OneOrder);
        assert_eq!(out[0].score_a, Some(9.0));
    }

    #[test]
    fn a_flip_is_reported_and_position_bias_measured() {
        // the judge always prefers whatever is shown first
        let first = scores(9, 2);
        let mut j = ScriptedJudge::new(&[&first, &first, &first, &first]);
        let out = judge_pairs(&mut j, &[pair(), pair()], &PairwiseConfig::default()).unwrap();
        assert!(out.iter().all(|p| p.consistency == Consistency::Flipped));
        assert!(out.iter().all(|p| p.winner == Some(Winner::Tie)));
        let s = summarise(&out, 0.1);
        assert_eq!(s.flipped, 2);
        assert_eq!(s.first_position_wins, Some(1.0));
        assert_eq!(s.win_rate, Some(0.5));
    }

    #[test]
    fn single_order_mode_asks_once_per_pair() {
        let cfg = PairwiseConfig {
            both_orders: false,
            ..PairwiseConfig::default()
        };
        let s = scores(3, 8);
        let mut j = ScriptedJudge::new(&[&s]);
        let out = judge_pairs(&mut j, &[pair()], &cfg).unwrap();
        assert_eq!(j.seen.len(), 1);
        assert_eq!(out[0].consistency, Consistency::OneOrder);
        assert_eq!(out[0].winner, Some(Winner::B));
    }

    #[test]
    fn bad_settings_are_refused() {
        let cfg = PairwiseConfig {
            max_attempts: 0,
            ..PairwiseConfig::default()
        };
        let mut j = ScriptedJudge::default();
        let e = judge_pairs(&mut j, &[pair()], &cfg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("judge.max_attempts"), "{e}");
    }
}
