//! The run's report: `report.json` (everything, machine-readable), `report.md` (what a person
//! reads: the verdict, the comparison, each stage's evidence) and SVG plots (the bank's
//! accuracy against reasoning perplexity with the chosen experts marked, the retrieved data's
//! task mix, the training losses, the routing heatmap, the final comparison with standard
//! errors), plus the one-screen summary printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::RocketConfig;
use super::data::DataOutcome;
use super::error::{Result, RocketError};
use super::evaluate::Routing;
use super::inputs::InputSummary;
use super::select::SelectionRow;
use crate::report::plots::{Bar, Point, Series, bars_svg, heatmap_svg, lines_svg, scatter_svg};
use crate::report::table::{fmt_mean_se, fmt_opt, markdown_table};

/// One contender's result on the test set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComparisonRow {
    /// Contender name (`base`, `moe`, ...).
    pub contender: String,
    /// What it is, for a reader.
    pub description: String,
    /// Exact match on the test set.
    pub exact_match: Option<f64>,
    /// Its bootstrap standard error.
    pub exact_match_stderr: Option<f64>,
    /// Correct / total.
    pub correct: Option<usize>,
    /// Test items.
    pub total: Option<usize>,
    /// Mean per-item reasoning perplexity of the reference rationales.
    pub reasoning_ppl: Option<f64>,
}

/// One training run's curve and figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Optimiser steps.
    pub steps: usize,
    /// Loss per step (since the last resume).
    pub losses: Vec<f64>,
    /// Loss of the last step.
    pub final_loss: f64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Seconds.
    pub seconds: f64,
    /// Examples kept / read.
    pub examples: (usize, usize),
}

/// A stage's line in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageLine {
    /// Stage name.
    pub stage: String,
    /// Its output directory.
    pub dir: PathBuf,
    /// Whether it ran now (false: reused from an earlier run).
    pub ran: bool,
    /// Seconds it took when it ran.
    pub seconds: f64,
}

/// Everything a run produced (`report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RocketReport {
    /// The effective config.
    pub config: RocketConfig,
    /// The inputs and their checks.
    pub inputs: InputSummary,
    /// Signal used to choose the experts.
    pub signal: String,
    /// Chosen experts, in mixture order.
    pub chosen: Vec<String>,
    /// Adapter ranked first.
    pub best_expert: String,
    /// Whether any adapter beats the base on the K-shot signals.
    pub bank_helps: bool,
    /// The selection verdict.
    pub selection_verdict: String,
    /// Group diversity of the chosen tuple.
    pub group_diversity: Option<f64>,
    /// Base, then every adapter in ranking order.
    pub selection: Vec<SelectionRow>,
    /// Stage 2.
    pub data: DataOutcome,
    /// Training of the mixture and of the LoRA baseline.
    pub training: BTreeMap<String, TrainingSummary>,
    /// Test-set results, in the configured order.
    pub comparison: Vec<ComparisonRow>,
    /// Routing of the trained mixture over the test set.
    pub routing: Option<Routing>,
    /// The headline sentence.
    pub headline: String,
    /// Warnings a reader must see.
    pub warnings: Vec<String>,
    /// Every stage.
    pub stages: Vec<StageLine>,
    /// Seconds of this invocation.
    pub seconds: f64,
}

impl RocketReport {
    /// The row of `contender`.
    pub fn row(&self, contender: &str) -> Option<&ComparisonRow> {
        self.comparison.iter().find(|r| r.contender == contender)
    }
}

/// The headline: the trained mixture against the base and the best other contender.
pub fn headline(rows: &[ComparisonRow]) -> String {
    let get = |c: &str| rows.iter().find(|r| r.contender == c);
    let (Some(moe), Some(base)) = (get("moe"), get("base")) else {
        return "the comparison is incomplete".into();
    };
    let (Some(m), Some(b)) = (moe.exact_match, base.exact_match) else {
        return "no exact-match figures".into();
    };
    let se = |r: &ComparisonRow| r.exact_match_stderr.unwrap_or(0.0);
    let diff = m - b;
    let joint = (se(moe).powi(2) + se(base).powi(2)).sqrt();
    let best_other = rows
        .iter()
        .filter(|r| r.contender != "moe")
        .filter_map(|r| r.exact_match.map(|x| (x, r)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut s = format!(
        "trained mixture {:.3} vs base {:.3} on the test set ({:+.3}, {:.1} joint standard errors)",
        m,
        b,
        diff,
        if joint > 0.0 { diff / joint } else { 0.0 }
    );
    if let Some((x, r)) = best_other
        && r.contender != "base"
    {
        let _ = write!(s, "; best other contender: {} {:.3}", r.contender, x);
    }
    if joint > 0.0 && diff.abs() < 2.0 * joint {
        s.push_str("; the difference from the base is within two standard errors");
    }
    s
}

/// Writes the plots into `dir`; returns the file names written.
///
/// # Errors
/// [`RocketError::Stage`] when a plot cannot be drawn or written.
pub fn write_plots(dir: &Path, r: &RocketReport) -> Result<Vec<String>> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| RocketError::stage("report", e);
    let mut written = Vec::new();
    let mut put = |name: &str, svg: crate::report::Result<String>| -> Result<()> {
        match svg {
            Ok(text) => {
                atomic_fs::write_atomic(&dir.join(name), text.as_bytes())
                    .map_err(|e| err(e.into()))?;
                written.push(name.to_string());
            }
            Err(e) => tracing::warn!(plot = name, "plot skipped: {e}"),
        }
        Ok(())
    };
    let points: Vec<Point> = r
        .selection
        .iter()
        .filter_map(|row| {
            Some(Point {
                label: if row.position.is_none() {
                    format!("{} (no adapter)", row.name)
                } else {
                    row.name.clone()
                },
                x: row.reasoning_ppl.or(row.answer_ppl)?,
                y: row.accuracy?,
                highlight: row.chosen,
            })
        })
        .collect();
    put(
        "bank.svg",
        scatter_svg(
            "Bank on the K-shot set (chosen experts marked)",
            "reasoning perplexity (lower is better)",
            "K-shot exact match",
            &points,
        ),
    )?;
    if !r.data.task_mix.is_empty() {
        let bars: Vec<Bar> = r
            .data
            .task_mix
            .iter()
            .map(|(t, n)| Bar {
                label: t.clone(),
                value: *n as f64,
                stderr: None,
                highlight: false,
            })
            .collect();
        put(
            "data_tasks.svg",
            bars_svg("Retrieved pool items per task", "items", &bars),
        )?;
    }
    let series: Vec<Series> = r
        .training
        .iter()
        .filter(|(_, t)| !t.losses.is_empty())
        .map(|(name, t)| Series {
            name: name.clone(),
            points: t
                .losses
                .iter()
                .enumerate()
                .map(|(i, l)| ((t.steps - t.losses.len() + i + 1) as f64, *l))
                .collect(),
        })
        .collect();
    if !series.is_empty() {
        put(
            "training_loss.svg",
            lines_svg("Training loss", "optimiser step", "loss", &series),
        )?;
    }
    if let Some(routing) = &r.routing
        && !routing.layers.is_empty()
    {
        let rows: Vec<String> = routing
            .layers
            .iter()
            .map(|(l, _)| format!("layer {l}"))
            .collect();
        let values: Vec<Vec<f64>> = routing.layers.iter().map(|(_, v)| v.clone()).collect();
        put(
            "routing.svg",
            heatmap_svg(
                "Trained mixture: load share per layer and expert (test set)",
                &rows,
                &routing.experts,
                &values,
            ),
        )?;
    }
    let bars: Vec<Bar> = r
        .comparison
        .iter()
        .filter_map(|row| {
            Some(Bar {
                label: row.contender.clone(),
                value: row.exact_match?,
                stderr: row.exact_match_stderr,
                highlight: row.contender == "moe",
            })
        })
        .collect();
    put(
        "comparison.svg",
        bars_svg(
            "Test-set exact match (± bootstrap standard error)",
            "exact match",
            &bars,
        ),
    )?;
    Ok(written)
}

fn yes(b: bool) -> String {
    if b { "yes".into() } else { String::new() }
}

/// The comparison table (markdown).
pub fn comparison_table(rows: &[ComparisonRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.contender.clone(),
                r.exact_match
                    .map_or("—".into(), |m| fmt_mean_se(m, r.exact_match_stderr, 3)),
                match (r.correct, r.total) {
                    (Some(c), Some(t)) => format!("{c}/{t}"),
                    _ => "—".into(),
                },
                fmt_opt(r.reasoning_ppl, 2),
                r.description.clone(),
            ]
        })
        .collect();
    markdown_table(
        &[
            "model",
            "exact match",
            "correct",
            "reasoning PPL",
            "what it is",
        ],
        &[false, true, true, true, false],
        &body,
    )
}

/// `report.md`.
pub fn markdown(r: &RocketReport, plots: &[String], command: &str) -> String {
    let mut s = String::new();
    let inputs = &r.inputs;
    let _ = writeln!(
        s,
        "# Rocket: {} experts for {}\n",
        r.chosen.len(),
        match &inputs.task {
            Some(t) => format!("the task `{t}` (`{}`)", inputs.kshot.display()),
            None => format!("`{}`", inputs.kshot.display()),
        }
    );
    let _ = writeln!(
        s,
        "{} K-shot items, {} test items, a bank of {} adapters on `{}`{}, {} pool records. **Result:** {}.\n",
        inputs.k,
        inputs.test_items,
        r.selection.len().saturating_sub(1),
        r.config.model,
        // Say the precision when it is not the default f32.
        if r.config.dtype == lm_core::model::Precision::F32 {
            String::new()
        } else {
            format!(" in {}", r.config.dtype)
        },
        inputs.pool_records,
        r.headline
    );
    if !r.bank_helps {
        let _ = writeln!(
            s,
            "> **The bank does not help on this task.** {}.\n",
            r.selection_verdict
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "> Warning: {w}\n");
    }
    let img = |s: &mut String, name: &str, alt: &str| {
        if plots.iter().any(|p| p == name) {
            let _ = writeln!(s, "![{alt}]({name})\n");
        }
    };
    let _ = writeln!(s, "## Result on the held-out test set\n");
    let _ = writeln!(s, "{}", comparison_table(&r.comparison));
    let _ = writeln!(
        s,
        "Exact match is greedy decoding scored by the task's answer extractor; ± is the bootstrap standard error over test items. Reasoning PPL is the mean per-item perplexity of the reference rationale and answer (lower is better).\n"
    );
    img(&mut s, "comparison.svg", "test-set comparison");
    let _ = writeln!(s, "## 1. Expert selection on the K-shot set\n");
    let _ = writeln!(
        s,
        "Signal `{}`. {}. Chosen experts: {}{}.\n",
        r.signal,
        r.selection_verdict,
        r.chosen
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", "),
        r.group_diversity
            .map_or(String::new(), |g| format!(" (group diversity {g:.3})"))
    );
    let body: Vec<Vec<String>> = r
        .selection
        .iter()
        .map(|row| {
            vec![
                row.position.map_or("—".into(), |p| p.to_string()),
                row.name.clone(),
                row.accuracy
                    .map_or("—".into(), |a| fmt_mean_se(a, row.accuracy_stderr, 3)),
                fmt_opt(row.reasoning_ppl, 2),
                fmt_opt(row.answer_ppl, 2),
                yes(row.beats_base),
                yes(row.shortlisted),
                yes(row.chosen),
                yes(row.blind_guesser),
            ]
        })
        .collect();
    let _ = writeln!(
        s,
        "{}",
        markdown_table(
            &[
                "rank",
                "model",
                "K-shot accuracy",
                "reasoning PPL",
                "answer PPL",
                "beats base",
                "shortlisted",
                "chosen",
                "blind guesser"
            ],
            &[true, false, true, true, true, false, false, false, false],
            &body
        )
    );
    let _ = writeln!(
        s,
        "*beats base*: higher K-shot accuracy than the base model, or the same accuracy with a lower perplexity. *blind guesser*: at least the bank's median accuracy while the perplexity is in the bank's top quarter (right answers the adapter cannot explain; Rocket's motivation for reasoning perplexity). Rank is the shortlist order.\n"
    );
    img(&mut s, "bank.svg", "bank: accuracy vs reasoning perplexity");
    let _ = writeln!(s, "## 2. Training data\n");
    let d = &r.data;
    let _ = writeln!(
        s,
        "Mode `{}`: {} K-shot items + {} pool items (budget {}; near-duplicates removed: {}; short of the budget: {}) from a pool of {} records ({} pool records equal to K-shot questions and {} equal to test questions were removed before retrieval).\n",
        d.mode,
        d.kshot,
        d.selected.len(),
        r.config.data.budget,
        d.dedup_dropped,
        d.short_by,
        d.pool_size,
        inputs.pool_removed_kshot,
        inputs.pool_removed_test
    );
    if !d.task_mix.is_empty() {
        let body: Vec<Vec<String>> = d
            .task_mix
            .iter()
            .map(|(t, n)| {
                vec![
                    t.clone(),
                    n.to_string(),
                    format!("{:.0}%", 100.0 * *n as f64 / d.selected.len().max(1) as f64),
                ]
            })
            .collect();
        let _ = writeln!(
            s,
            "{}",
            markdown_table(&["task", "items", "share"], &[false, true, true], &body)
        );
    }
    img(&mut s, "data_tasks.svg", "task mix of the retrieved data");
    let _ = writeln!(s, "## 3. Mixture and fine-tuning\n");
    let m = &r.config.moe;
    let _ = writeln!(
        s,
        "{} experts, top-{} routing, `{}` routers, {} trained (lr {}, {} epoch{}, batch {} × {}).\n",
        r.chosen.len(),
        m.top_k,
        serde_json::to_value(m.router_init)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        if r.config.train.router_only {
            "routers only"
        } else {
            "routers and experts"
        },
        r.config.train.lr,
        r.config.train.epochs,
        if r.config.train.epochs == 1 { "" } else { "s" },
        r.config.train.batch_size,
        r.config.train.grad_accum_steps
    );
    let body: Vec<Vec<String>> = r
        .training
        .iter()
        .map(|(n, t)| {
            vec![
                n.clone(),
                t.steps.to_string(),
                format!("{}/{}", t.examples.0, t.examples.1),
                fmt_opt(t.losses.first().copied(), 4),
                fmt_opt(Some(t.final_loss), 4),
                t.trainable_params.to_string(),
                format!("{:.0}", t.seconds),
            ]
        })
        .collect();
    let _ = writeln!(
        s,
        "{}",
        markdown_table(
            &[
                "model",
                "steps",
                "examples kept",
                "first step loss",
                "last step loss",
                "trainable parameters",
                "seconds"
            ],
            &[false, true, true, true, true, true, true],
            &body
        )
    );
    img(&mut s, "training_loss.svg", "training loss");
    if let Some(routing) = &r.routing {
        let _ = writeln!(s, "## 4. Routing of the trained mixture\n");
        let share: Vec<String> = routing
            .experts
            .iter()
            .zip(&routing.overall)
            .map(|(e, x)| format!("`{e}` {:.1}%", 100.0 * x))
            .collect();
        let _ = writeln!(
            s,
            "Over the test items ({} tokens per module): load share {}; normalised gate entropy {:.3} (1 = uniform).\n",
            routing.tokens,
            share.join(", "),
            routing.normalized_entropy
        );
        img(&mut s, "routing.svg", "routing heatmap");
    }
    let _ = writeln!(s, "## Stages\n");
    let body: Vec<Vec<String>> = r
        .stages
        .iter()
        .map(|st| {
            vec![
                st.stage.clone(),
                if st.ran {
                    "ran".into()
                } else {
                    "reused".into()
                },
                format!("{:.0}", st.seconds),
                format!("`{}`", st.dir.display()),
            ]
        })
        .collect();
    let _ = writeln!(
        s,
        "{}",
        markdown_table(
            &["stage", "this run", "seconds", "output"],
            &[false, false, true, false],
            &body
        )
    );
    let _ = writeln!(
        s,
        "This invocation took {:.0} s. The effective config is `config.toml`; everything above is in `report.json`. Re-run with:\n\n```sh\n{command}\n```",
        r.seconds
    );
    s
}

/// The one-screen summary printed at the end.
pub fn summary(r: &RocketReport, report_md: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nRocket finished in {:.0} s. Experts: {}.",
        r.seconds,
        r.chosen.join(", ")
    );
    if !r.bank_helps {
        let _ = writeln!(s, "NOTE: {}.", r.selection_verdict);
    }
    for w in &r.warnings {
        let _ = writeln!(s, "WARNING: {w}");
    }
    let _ = writeln!(s, "\n{}", comparison_table(&r.comparison));
    let _ = writeln!(s, "{}.", r.headline);
    let _ = writeln!(s, "Report: {}", report_md.display());
    s
}
