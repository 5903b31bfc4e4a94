//! The report of `select evolve --test`: held-out accuracy per round of the run (k-center) next to
//! its random-selection baseline of the same sizes, as JSON ([`EvolveComparison`]), a markdown
//! table ([`EvolveComparison::markdown`]) and SVG line charts ([`EvolveComparison::accuracy_svg`],
//! [`EvolveComparison::loss_svg`]).
//!
//! Plain data in, plain text out: the caller gathers the rounds' records and test evaluations
//! (see [`super::evolve_test`]) and writes the files.

use data_select::evolve::RoundRecord;
use kshot_eval::eval::Metrics;
use kshot_eval::metrics::bootstrap_mean_stderr;
use serde::{Deserialize, Serialize};

use super::evolve_test::RoundTestEval;
use crate::report::plots::{Series, lines_svg};
use crate::report::table::{fmt_mean_se, fmt_opt, markdown_table};

/// What the test set was and how it was used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestSummary {
    /// The test file.
    pub source: String,
    /// Items evaluated (the first `limit` of the file).
    pub items: usize,
    /// Items in the file.
    pub file_items: usize,
    /// `--test-limit`.
    pub limit: usize,
    /// Most new tokens per generated answer.
    pub max_new_tokens: usize,
    /// The metrics computed.
    pub metrics: Metrics,
    /// Test items whose question is also a pool prompt.
    pub overlap_with_pool: usize,
    /// Their ids (or `#index`).
    pub overlapping_ids: Vec<String>,
    /// The test set's fingerprint (as in every `test_eval.json`).
    pub fingerprint: String,
}

/// Test scores of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestScore {
    /// Exact-match accuracy in `[0, 1]`.
    pub accuracy: Option<f64>,
    /// Its bootstrap standard error.
    pub stderr: Option<f64>,
    /// Mean reasoning perplexity, when the test items have rationales.
    pub reasoning_ppl: Option<f64>,
}

impl From<&RoundTestEval> for TestScore {
    fn from(e: &RoundTestEval) -> Self {
        Self {
            accuracy: e.accuracy,
            stderr: e.stderr,
            reasoning_ppl: e.reasoning_ppl,
        }
    }
}

/// One round of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmRound {
    /// Labelled items trained on.
    pub labeled: usize,
    /// Test scores of the round's adapter (`None` when not evaluated).
    pub test: Option<TestScore>,
    /// Held-out (`--eval`) loss after training, when a held-out set was given.
    pub heldout_loss: Option<f64>,
    /// Final training loss.
    pub train_loss: Option<f64>,
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    /// Round number.
    pub round: usize,
    /// The run's round.
    pub run: ArmRound,
    /// The baseline's round of the same number, if it ran that far.
    pub baseline: Option<ArmRound>,
    /// Run accuracy − baseline accuracy.
    pub difference: Option<f64>,
    /// Paired bootstrap standard error of `difference` (the same test items, resampled together).
    pub difference_stderr: Option<f64>,
}

/// One run's rounds with their test evaluations (same length and order; evaluations may be
/// missing when the run had no test set).
#[derive(Debug, Clone, Copy)]
pub struct Arm<'a> {
    /// How the run picked items after round 0 (`kcenter`, `random`).
    pub strategy: &'a str,
    /// Completed rounds, in order.
    pub records: &'a [RoundRecord],
    /// `evals[i]` belongs to `records[i]`.
    pub evals: &'a [RoundTestEval],
}

/// `report.json`: the run against its baseline, round by round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvolveComparison {
    /// The run's strategy.
    pub run_strategy: String,
    /// The baseline's strategy (`None`: no baseline run).
    pub baseline_strategy: Option<String>,
    /// The test set.
    pub test: TestSummary,
    /// The base model on the test set (no training).
    pub base: Option<TestScore>,
    /// One row per round of the run.
    pub rounds: Vec<ComparisonRow>,
    /// Things a reader must know (overlap, unequal sizes, a shorter baseline).
    pub notes: Vec<String>,
}

fn arm_round(record: &RoundRecord, eval: Option<&RoundTestEval>) -> ArmRound {
    let f = |k: &str| record.train.get(k).and_then(serde_json::Value::as_f64);
    ArmRound {
        labeled: record.labeled,
        test: eval.map(TestScore::from),
        heldout_loss: f("eval_loss"),
        train_loss: f("final_train_loss"),
    }
}

/// A display name of a strategy.
fn display(strategy: &str) -> &str {
    match strategy {
        "kcenter" => "k-center",
        other => other,
    }
}

impl EvolveComparison {
    /// Builds the comparison. The paired standard error of a difference resamples test items
    /// (`resamples` draws, `seed`); both evaluations must cover the same items.
    pub fn build(
        test: TestSummary,
        base: Option<&RoundTestEval>,
        run: Arm<'_>,
        baseline: Option<Arm<'_>>,
        resamples: usize,
        seed: u64,
    ) -> Self {
        let mut notes = Vec::new();
        if test.overlap_with_pool > 0 {
            notes.push(format!(
                "{} of the {} test items also appear in the pool (same question); their accuracy is not held-out.",
                test.overlap_with_pool, test.items
            ));
        }
        let find = |arm: &Arm<'_>, round: usize| -> Option<(RoundRecord, Option<RoundTestEval>)> {
            let i = arm.records.iter().position(|r| r.round == round)?;
            Some((
                arm.records[i].clone(),
                arm.evals.iter().find(|e| e.round == Some(round)).cloned(),
            ))
        };
        let mut rounds = Vec::new();
        for record in run.records {
            let t = record.round;
            let run_eval = run.evals.iter().find(|e| e.round == Some(t));
            let run_round = arm_round(record, run_eval);
            let other = baseline.as_ref().and_then(|b| find(b, t));
            let (baseline_round, difference, difference_stderr) = match &other {
                Some((rec, ev)) => {
                    if rec.labeled != record.labeled {
                        notes.push(format!(
                            "round {t}: the baseline trained on {} items, the run on {}.",
                            rec.labeled, record.labeled
                        ));
                    }
                    let diff = match (
                        run_eval.and_then(|e| e.accuracy),
                        ev.as_ref().and_then(|e| e.accuracy),
                    ) {
                        (Some(a), Some(b)) => Some(a - b),
                        _ => None,
                    };
                    let se = match (
                        run_eval.and_then(RoundTestEval::correct),
                        ev.as_ref().and_then(RoundTestEval::correct),
                    ) {
                        (Some(a), Some(b)) if a.len() == b.len() && !a.is_empty() => {
                            let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
                            Some(bootstrap_mean_stderr(&d, resamples, seed))
                        }
                        _ => None,
                    };
                    (Some(arm_round(rec, ev.as_ref())), diff, se)
                }
                None => (None, None, None),
            };
            if baseline.is_some() && other.is_none() {
                notes.push(format!(
                    "round {t}: the baseline has no completed round {t}."
                ));
            }
            rounds.push(ComparisonRow {
                round: t,
                run: run_round,
                baseline: baseline_round,
                difference,
                difference_stderr,
            });
        }
        Self {
            run_strategy: run.strategy.to_string(),
            baseline_strategy: baseline.map(|b| b.strategy.to_string()),
            test,
            base: base.map(TestScore::from),
            rounds,
            notes,
        }
    }

    /// `report.md`: the test set, the base model, a table per round and the notes.
    /// `svg_name` names the accuracy chart written next to it (linked when `Some`).
    pub fn markdown(&self, svg_name: Option<&str>) -> String {
        let run = display(&self.run_strategy);
        let base_name = self.baseline_strategy.as_deref().map(display);
        let mut out = match base_name {
            Some(b) => {
                format!("# DiverseEvol: {run} vs {b} selection, held-out accuracy per round\n\n")
            }
            None => format!("# DiverseEvol: {run} selection, held-out accuracy per round\n\n"),
        };
        let t = &self.test;
        out.push_str(&format!(
            "Test set: `{}`, {} items (the first {} of {}), zero-shot, exact match of greedy answers of at most {} new tokens{}. Standard errors are bootstrap; a difference's is paired over the same items.\n\n",
            t.source,
            t.items,
            t.items,
            t.file_items,
            t.max_new_tokens,
            if t.metrics.reasoning_ppl {
                "; reasoning perplexity (rppl) of the items' rationales"
            } else {
                ""
            }
        ));
        if let Some(b) = &self.base {
            out.push_str(&format!(
                "Base model (no training): accuracy {}{}.\n\n",
                fmt_mean_se(b.accuracy.unwrap_or(f64::NAN), b.stderr, 3),
                b.reasoning_ppl
                    .map(|p| format!(", rppl {p:.3}"))
                    .unwrap_or_default()
            ));
        }
        let has_rppl = self.rounds.iter().any(|r| {
            r.run
                .test
                .as_ref()
                .is_some_and(|s| s.reasoning_ppl.is_some())
        });
        let has_loss = self.rounds.iter().any(|r| {
            r.run.heldout_loss.is_some()
                || r.baseline
                    .as_ref()
                    .is_some_and(|b| b.heldout_loss.is_some())
        });
        let mut header: Vec<String> = vec!["round".into(), "items".into(), format!("{run} acc")];
        if let Some(b) = base_name {
            header.push(format!("{b} acc"));
            header.push(format!("Δ ({run} − {b})"));
        }
        if has_rppl {
            header.push(format!("{run} rppl"));
            if let Some(b) = base_name {
                header.push(format!("{b} rppl"));
            }
        }
        if has_loss {
            header.push(format!("{run} held-out loss"));
            if let Some(b) = base_name {
                header.push(format!("{b} held-out loss"));
            }
        }
        let acc = |a: Option<&ArmRound>| {
            a.and_then(|a| a.test.as_ref())
                .map(|s| fmt_mean_se(s.accuracy.unwrap_or(f64::NAN), s.stderr, 3))
                .unwrap_or_else(|| "—".into())
        };
        let rppl = |a: Option<&ArmRound>| {
            fmt_opt(
                a.and_then(|a| a.test.as_ref())
                    .and_then(|s| s.reasoning_ppl),
                3,
            )
        };
        let loss = |a: Option<&ArmRound>| fmt_opt(a.and_then(|a| a.heldout_loss), 4);
        let rows: Vec<Vec<String>> = self
            .rounds
            .iter()
            .map(|r| {
                let mut row = vec![
                    r.round.to_string(),
                    r.run.labeled.to_string(),
                    acc(Some(&r.run)),
                ];
                if base_name.is_some() {
                    row.push(acc(r.baseline.as_ref()));
                    row.push(match r.difference {
                        Some(d) => {
                            let s = fmt_mean_se(d, r.difference_stderr, 3);
                            if d > 0.0 { format!("+{s}") } else { s }
                        }
                        None => "—".into(),
                    });
                }
                if has_rppl {
                    row.push(rppl(Some(&r.run)));
                    if base_name.is_some() {
                        row.push(rppl(r.baseline.as_ref()));
                    }
                }
                if has_loss {
                    row.push(loss(Some(&r.run)));
                    if base_name.is_some() {
                        row.push(loss(r.baseline.as_ref()));
                    }
                }
                row
            })
            .collect();
        let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
        let right: Vec<bool> = (0..header.len()).map(|i| i > 0).collect();
        out.push_str(&markdown_table(&header_refs, &right, &rows));
        if let Some(name) = svg_name {
            out.push_str(&format!("\n![held-out accuracy per round]({name})\n"));
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        if !t.overlapping_ids.is_empty() {
            out.push_str(&format!(
                "\nTest items also in the pool: {}\n",
                t.overlapping_ids.join(", ")
            ));
        }
        out
    }

    /// Held-out accuracy against labelled items: one line per run, the base model as a point at
    /// 0 items.
    ///
    /// # Errors
    /// [`ReportError::BadData`](crate::report::ReportError::BadData) when no round was evaluated.
    pub fn accuracy_svg(&self) -> crate::report::Result<String> {
        let mut series = self.arm_series(|a| a.test.as_ref()?.accuracy);
        if let Some(acc) = self.base.as_ref().and_then(|b| b.accuracy) {
            series.push(Series {
                name: "base model".into(),
                points: vec![(0.0, acc)],
            });
        }
        lines_svg(
            "Held-out accuracy per round",
            "labelled items",
            "test accuracy (exact match)",
            &series,
        )
    }

    /// One line for the run and one for the baseline (when there is one) of `value` against
    /// labelled items; rounds where `value` is `None` are left out.
    fn arm_series(&self, value: impl Fn(&ArmRound) -> Option<f64>) -> Vec<Series> {
        let points = |arm: &dyn Fn(&ComparisonRow) -> Option<&ArmRound>| {
            self.rounds
                .iter()
                .filter_map(|r| {
                    let a = arm(r)?;
                    Some((a.labeled as f64, value(a)?))
                })
                .collect::<Vec<_>>()
        };
        let mut series = vec![Series {
            name: display(&self.run_strategy).to_string(),
            points: points(&|r| Some(&r.run)),
        }];
        if let Some(b) = &self.baseline_strategy {
            series.push(Series {
                name: display(b).to_string(),
                points: points(&|r| r.baseline.as_ref()),
            });
        }
        series
    }

    /// Held-out (`--eval`) loss against labelled items, one line per run; `None` when no round
    /// has a held-out loss.
    pub fn loss_svg(&self) -> Option<crate::report::Result<String>> {
        let series = self.arm_series(|a| a.heldout_loss);
        if series.iter().all(|s| s.points.is_empty()) {
            return None;
        }
        Some(lines_svg(
            "Held-out loss per round",
            "labelled items",
            "held-out loss",
            &series,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kshot_eval::eval::{Evaluation, ExactMatchReport, ItemPrediction};

    fn record(round: usize, labeled: usize, eval_loss: Option<f64>) -> RoundRecord {
        RoundRecord {
            round,
            new_items: 2,
            labeled,
            warm_started: false,
            embed_seconds: 0.0,
            select_seconds: 0.0,
            train_seconds: 1.0,
            picks_resumed: false,
            train: serde_json::json!({"final_train_loss": 1.5, "eval_loss": eval_loss}),
        }
    }

    fn eval(round: Option<usize>, correct: &[bool]) -> RoundTestEval {
        let n = correct.len();
        let right = correct.iter().filter(|c| **c).count();
        RoundTestEval {
            round,
            labeled: 0,
            test_fingerprint: "fp".into(),
            items: n,
            accuracy: Some(right as f64 / n as f64),
            stderr: Some(0.1),
            reasoning_ppl: None,
            seconds: 0.0,
            evaluation: Evaluation {
                name: "x".into(),
                expert: None,
                exact_match: Some(ExactMatchReport {
                    accuracy: right as f64 / n as f64,
                    correct: right,
                    total: n,
                    stderr: 0.1,
                    unextracted: 0,
                    per_item: correct
                        .iter()
                        .enumerate()
                        .map(|(i, c)| ItemPrediction {
                            id: format!("#{i}"),
                            gold: "1".into(),
                            prediction: "1".into(),
                            extracted: Some("1".into()),
                            correct: *c,
                            finish_reason: "eos".into(),
                        })
                        .collect(),
                }),
                reasoning_ppl: None,
                answer_ppl: None,
                multiple_choice: None,
            },
        }
    }

    fn summary(overlap: usize) -> TestSummary {
        TestSummary {
            source: "eval.jsonl".into(),
            items: 4,
            file_items: 100,
            limit: 4,
            max_new_tokens: 8,
            metrics: Metrics::auto(&[]),
            overlap_with_pool: overlap,
            overlapping_ids: (0..overlap).map(|i| format!("t{i}")).collect(),
            fingerprint: "fp".into(),
        }
    }

    #[test]
    fn paired_differences_table_and_plot() {
        let run_records = [record(0, 4, Some(2.0)), record(1, 8, Some(1.8))];
        let run_evals = [
            eval(Some(0), &[true, false, false, false]),
            eval(Some(1), &[true, true, true, false]),
        ];
        let base_records = [record(0, 4, Some(2.0)), record(1, 8, Some(1.9))];
        let base_evals = [
            eval(Some(0), &[true, false, false, false]),
            eval(Some(1), &[true, false, true, false]),
        ];
        let base = eval(None, &[false, false, false, false]);
        let c = EvolveComparison::build(
            summary(1),
            Some(&base),
            Arm {
                strategy: "kcenter",
                records: &run_records,
                evals: &run_evals,
            },
            Some(Arm {
                strategy: "random",
                records: &base_records,
                evals: &base_evals,
            }),
            200,
            1,
        );
        assert_eq!(c.rounds.len(), 2);
        assert_eq!(c.rounds[0].difference, Some(0.0));
        assert_eq!(
            c.rounds[0].difference_stderr,
            Some(0.0),
            "identical round 0"
        );
        assert_eq!(c.rounds[1].difference, Some(0.25));
        assert!(c.rounds[1].difference_stderr.unwrap() > 0.0);
        assert_eq!(
            c.rounds[1].baseline.as_ref().unwrap().heldout_loss,
            Some(1.9)
        );
        assert_eq!(c.notes.len(), 1, "{:?}", c.notes);
        let md = c.markdown(Some("evolve_accuracy.svg"));
        assert!(md.contains("k-center vs random"), "{md}");
        let header = md.lines().find(|l| l.starts_with("| round")).unwrap();
        for col in [
            "items",
            "k-center acc",
            "random acc",
            "Δ (k-center − random)",
        ] {
            assert!(header.contains(col), "{header}");
        }
        assert!(md.contains("0.750 ± 0.100"), "{md}");
        assert!(md.contains("+0.250 ±"), "{md}");
        assert!(md.contains("held-out loss"), "{md}");
        assert!(
            md.contains("Base model (no training): accuracy 0.000 ± 0.100"),
            "{md}"
        );
        assert!(
            md.contains("also appear in the pool") && md.contains("t0"),
            "{md}"
        );
        let svg = c.accuracy_svg().unwrap();
        assert!(svg.contains("k-center") && svg.contains("random") && svg.contains("base model"));
        assert!(c.loss_svg().unwrap().unwrap().contains("held-out loss"));
        // round-trips as report.json
        let back: EvolveComparison =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn without_baseline_or_evaluations() {
        let records = [record(0, 4, None)];
        let c = EvolveComparison::build(
            summary(0),
            None,
            Arm {
                strategy: "kcenter",
                records: &records,
                evals: &[],
            },
            None,
            10,
            1,
        );
        let md = c.markdown(None);
        assert!(
            !md.contains("random") && !md.contains("held-out loss"),
            "{md}"
        );
        assert!(md.lines().any(|l| l.starts_with("| 0 ")), "{md}");
        assert!(c.notes.is_empty());
        assert!(c.loss_svg().is_none());
        assert!(matches!(
            c.accuracy_svg(),
            Err(crate::report::ReportError::BadData { .. })
        ));
        // a baseline that stopped early is noted
        let c = EvolveComparison::build(
            summary(0),
            None,
            Arm {
                strategy: "kcenter",
                records: &records,
                evals: &[],
            },
            Some(Arm {
                strategy: "random",
                records: &[],
                evals: &[],
            }),
            10,
            1,
        );
        assert_eq!(c.notes.len(), 1);
        assert!(c.rounds[0].baseline.is_none());
        assert!(c.markdown(None).contains("random acc"));
    }
}
