//! The run's report: `report.json` (everything, machine-readable), `report.md` (what a person
//! reads: the verdict, held-out win rates per round, difficulty, task mix, expansion,
//! refinement and training, calls) and SVG plots under `plots/`:
//! - `winrate.svg`: the judge's win rate of the student on held-out instructions per round,
//!   against the teacher (round 0: the base student) and against the base student;
//! - `mfd_r{r}.svg`: the MFD histogram of each round, hard bins (MFD ≥ δ) highlighted;
//! - `task_mix.svg`: the task mix of the target, the classified seeds, and each round's
//!   training candidates before and after rebalancing (percent);
//! - `calls.svg`: calls made, served from the cache and failed, per role.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tapir_curriculum::chat::CallStats;
use tapir_curriculum::curriculum::{CurriculumOutcome, PrepareRecord, RoundRecord, WarmupRecord};
use tapir_curriculum::mfd::histogram;
use tapir_curriculum::pairwise::WinSummary;
use tapir_curriculum::taxonomy::TaskCategory;

use super::RunOptions;
use super::config::TapirConfig;
use super::error::Result;
use crate::report::plots::{Bar, Series, bars_svg, heatmap_svg, lines_svg};
use crate::report::table::{fmt_opt, markdown_table};

/// Everything a run produced (`report.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TapirReport {
    /// The command line.
    pub command: String,
    /// The effective config.
    pub config: TapirConfig,
    /// Where each role ran.
    pub roles: BTreeMap<String, String>,
    /// Preparation.
    pub prepare: PrepareRecord,
    /// The warm-up student (`curriculum.warmup > 0` only).
    #[serde(default)]
    pub warmup: Option<WarmupRecord>,
    /// Round 0 (the base student) and every round.
    pub rounds: Vec<RoundRecord>,
    /// Calls per role in this invocation.
    pub calls: BTreeMap<String, CallStats>,
    /// The one-sentence verdict.
    pub headline: String,
    /// Things a reader must know (unscored items, position bias, shortfalls).
    pub notes: Vec<String>,
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
    /// Plot files written (relative to the run directory).
    pub plots: Vec<String>,
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{:.0}%", 100.0 * x))
}

fn wtl(w: &WinSummary) -> String {
    format!("{}/{}/{}", w.wins, w.ties, w.losses)
}

/// Standard error of a win rate over `n` pairs.
fn se(p: f64, n: usize) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        (p * (1.0 - p) / n as f64).sqrt()
    }
}

/// The verdict.
fn headline(rounds: &[RoundRecord]) -> String {
    let (Some(base), Some(last)) = (rounds.first(), rounds.last()) else {
        return "no round ran".into();
    };
    if last.round == 0 {
        return "no training round ran".into();
    }
    let b = &base.heldout.vs_teacher;
    let l = &last.heldout.vs_teacher;
    let vb = last.heldout.vs_base.as_ref();
    match (b.win_rate, l.win_rate) {
        (Some(pb), Some(pl)) => {
            let noise = 2.0 * (se(pb, b.scored).powi(2) + se(pl, l.scored).powi(2)).sqrt();
            let verdict = if (pl - pb).abs() <= noise {
                format!(
                    "a change within noise on {} scored pairs (±{:.0} points at 2 standard errors)",
                    l.scored,
                    100.0 * noise
                )
            } else if pl > pb {
                "closer to the teacher than the base student".to_string()
            } else {
                "further from the teacher than the base student".to_string()
            };
            format!(
                "After {} round(s) the student wins {} of held-out judgements against the teacher (base student: {}): {verdict}; against the base student it wins {}.",
                last.round,
                pct(Some(pl)),
                pct(Some(pb)),
                pct(vb.and_then(|v| v.win_rate))
            )
        }
        _ => format!(
            "After {} round(s) the judge scored too few held-out pairs to compare (base: {} of {}, last round: {} of {}); see the notes.",
            last.round, b.scored, b.pairs, l.scored, l.pairs
        ),
    }
}

fn notes(prepare: &PrepareRecord, rounds: &[RoundRecord]) -> Vec<String> {
    let mut out = Vec::new();
    if !prepare.dropped.is_empty() {
        out.push(format!(
            "{} instruction(s) dropped before the rounds because the teacher's answer failed or was empty (listed under Data).",
            prepare.dropped.len()
        ));
    }
    if let Some(fallback) = prepare
        .classes
        .routes
        .get(&tapir_curriculum::taxonomy::ParseRoute::Fallback)
        .filter(|n| **n > 0)
    {
        out.push(format!(
            "The classifier named no category of the taxonomy for {fallback} of {} seeds (counted as Others).",
            prepare.classes.items
        ));
    }
    for r in rounds {
        if let Some(m) = &r.mfd
            && m.unscored > 0
        {
            out.push(format!(
                "Round {}: the judge left {} of {} pool items unscored after every re-ask; they are in neither the hard nor the easy part and in no average.",
                r.round, m.unscored, m.items
            ));
        }
        for (what, w) in [
            ("against the teacher", Some(&r.heldout.vs_teacher)),
            ("against the base", r.heldout.vs_base.as_ref()),
        ] {
            let Some(w) = w else { continue };
            if w.unscored > 0 {
                out.push(format!(
                    "Round {}: {} of {} held-out pairs {what} unscored.",
                    r.round, w.unscored, w.pairs
                ));
            }
            if w.flipped > 0 {
                out.push(format!(
                    "Round {}: the judge flipped its preference with the presentation order on {} held-out pair(s) {what} (position bias; both orders are averaged).",
                    r.round, w.flipped
                ));
            }
        }
        for n in &r.plan.notes {
            out.push(format!("Round {}: {n}.", r.round));
        }
    }
    out
}

/// Builds the report of a finished curriculum.
pub fn build(
    config: &TapirConfig,
    outcome: &CurriculumOutcome,
    options: &RunOptions,
    seconds: f64,
) -> TapirReport {
    let r = config.resolved();
    let mut roles = BTreeMap::new();
    roles.insert("teacher".to_string(), r.teacher.describe());
    roles.insert("judge".to_string(), r.judge.describe());
    roles.insert("classifier".to_string(), r.classifier.describe());
    roles.insert(
        "student".to_string(),
        format!(
            "local {} + LoRA r {}{}",
            r.student.model,
            r.student.train.r,
            match r.student.dtype {
                lm_core::model::Precision::F32 => String::new(),
                p => format!(" in {p} (LoRA in f32)"),
            }
        ),
    );
    TapirReport {
        command: options.command.clone(),
        config: config.clone(),
        roles,
        prepare: outcome.prepare.clone(),
        warmup: outcome.warmup.clone(),
        headline: headline(&outcome.rounds),
        notes: notes(&outcome.prepare, &outcome.rounds),
        rounds: outcome.rounds.clone(),
        calls: outcome.calls.clone(),
        seconds,
        plots: Vec::new(),
    }
}

fn shares(m: &BTreeMap<TaskCategory, usize>) -> BTreeMap<TaskCategory, f64> {
    let n: usize = m.values().sum();
    m.iter()
        .map(|(c, v)| {
            (
                *c,
                if n == 0 {
                    0.0
                } else {
                    100.0 * *v as f64 / n as f64
                },
            )
        })
        .collect()
}

/// Writes the plots into `dir/plots/`; returns their paths relative to `dir`. A plot without
/// data is skipped (logged).
pub fn write_plots(dir: &Path, r: &TapirReport) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let mut put = |name: String, svg: crate::report::Result<String>| -> Result<()> {
        match svg {
            Ok(text) => {
                let rel = format!("plots/{name}");
                atomic_fs::write_atomic(&dir.join(&rel), text.as_bytes())?;
                written.push(rel);
            }
            Err(e) => tracing::warn!(plot = name, "plot skipped: {e}"),
        }
        Ok(())
    };
    // Win rates.
    let vs_teacher: Vec<(f64, f64)> = r
        .rounds
        .iter()
        .filter_map(|x| x.heldout.vs_teacher.win_rate.map(|w| (x.round as f64, w)))
        .collect();
    let vs_base: Vec<(f64, f64)> = r
        .rounds
        .iter()
        .filter_map(|x| {
            x.heldout
                .vs_base
                .as_ref()?
                .win_rate
                .map(|w| (x.round as f64, w))
        })
        .collect();
    let mut series = vec![Series {
        name: "student vs teacher".into(),
        points: vs_teacher,
    }];
    if !vs_base.is_empty() {
        series.push(Series {
            name: "student vs base student".into(),
            points: vs_base,
        });
    }
    put(
        "winrate.svg".into(),
        lines_svg(
            "Held-out judge win rate of the student (round 0 = base)",
            "round",
            "win rate (ties count half)",
            &series,
        ),
    )?;
    // MFD histograms.
    for round in r.rounds.iter().filter(|x| !x.mfd_values.is_empty()) {
        let delta = round.mfd.as_ref().map_or(1.0, |m| m.delta);
        let bars: Vec<Bar> = histogram(&round.mfd_values, -0.25, 0.5)
            .into_iter()
            .map(|(lo, n)| {
                let centre = lo + 0.25;
                Bar {
                    label: format!("{centre}"),
                    value: n as f64,
                    stderr: None,
                    highlight: centre >= delta,
                }
            })
            .collect();
        put(
            format!("mfd_r{}.svg", round.round),
            bars_svg(
                &format!(
                    "Round {}: MFD = J(teacher) − J(student); highlighted: hard (MFD ≥ {delta})",
                    round.round
                ),
                "pool items",
                &bars,
            ),
        )?;
    }
    // Task mix.
    let target: BTreeMap<TaskCategory, f64> = r
        .config
        .curriculum
        .mix()
        .map(|m| m.ratios().iter().map(|(c, v)| (*c, 100.0 * v)).collect())
        .unwrap_or_default();
    let mut rows: Vec<(String, BTreeMap<TaskCategory, f64>)> = vec![
        ("target".into(), target),
        (
            "seeds (classified)".into(),
            shares(&r.prepare.classes.categories),
        ),
    ];
    for round in r.rounds.iter().filter(|x| x.round > 0) {
        rows.push((
            format!("round {} before", round.round),
            shares(&round.plan.mix_before()),
        ));
        rows.push((
            format!("round {} after", round.round),
            shares(&round.plan.mix_after()),
        ));
    }
    // Columns: categories that are non-zero outside the target row (the target lists all 32).
    let cols: BTreeSet<TaskCategory> = rows[1..]
        .iter()
        .flat_map(|(_, m)| m.iter().filter(|(_, v)| **v > 0.0).map(|(c, _)| *c))
        .chain([
            TaskCategory::Math,
            TaskCategory::Reasoning,
            TaskCategory::CodeGeneration,
            TaskCategory::CodeDebug,
        ])
        .collect();
    let col_labels: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
    let row_labels: Vec<String> = rows.iter().map(|(n, _)| n.clone()).collect();
    let values: Vec<Vec<f64>> = rows
        .iter()
        .map(|(_, m)| {
            cols.iter()
                .map(|c| (m.get(c).copied().unwrap_or(0.0) * 10.0).round() / 10.0)
                .collect()
        })
        .collect();
    put(
        "task_mix.svg".into(),
        heatmap_svg(
            "Task mix (% of items): target, seeds, training candidates before / after rebalancing",
            &row_labels,
            &col_labels,
            &values,
        ),
    )?;
    // Calls.
    let bars: Vec<Bar> = r
        .calls
        .iter()
        .flat_map(|(role, c)| {
            [
                ("made", c.made, false),
                ("cached", c.cached, false),
                ("failed", c.failed, true),
            ]
            .into_iter()
            .map(move |(k, v, hl)| Bar {
                label: format!("{role} {k}"),
                value: v as f64,
                stderr: None,
                highlight: hl && v > 0,
            })
        })
        .collect();
    put(
        "calls.svg".into(),
        bars_svg(
            "Calls of this invocation (failed highlighted)",
            "calls",
            &bars,
        ),
    )?;
    Ok(written)
}

/// The markdown report.
pub fn markdown(r: &TapirReport) -> String {
    let c = &r.config;
    let cur = &c.curriculum;
    let mut md = String::new();
    let _ = writeln!(md, "# TAPIR run\n\n**{}**\n", r.headline);
    let _ = writeln!(
        md,
        "Command: `{}`  \nTime of this invocation: {:.0} s\n",
        r.command, r.seconds
    );
    let _ = writeln!(md, "## Setup\n");
    let rows: Vec<Vec<String>> = r
        .roles
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    md.push_str(&markdown_table(&["role", "model"], &[], &rows));
    let a = &cur.ablation;
    let _ = writeln!(
        md,
        "\nRounds: {} with hard share α = {:?} and sizes N = {:?}; MFD threshold δ = {} (hard ⇔ MFD ≥ δ); {} ask(s) per presentation order; {} new instruction(s) per round, {} dedup above {}. Ablations: MFD filter {}, rebalancing {}, refinement {}, single round {}.\n",
        cur.rounds,
        cur.alpha,
        cur.sizes,
        cur.mfd.delta,
        cur.mfd.pairwise.max_attempts,
        cur.expansion.per_round,
        cur.expansion.dedup,
        cur.expansion.threshold,
        on(a.mfd_filter),
        on(a.rebalance),
        on(a.refine),
        on(a.single_round),
    );
    let p = &r.prepare;
    let _ = writeln!(
        md,
        "Data: {} seed instructions ({} kept in the pool), {} held-out instructions ({} kept).\n",
        p.seeds, p.pool, p.heldout, p.heldout_kept
    );
    if let Some(w) = &r.warmup {
        let t = &w.train;
        let _ = writeln!(
            md,
            "Warm-up: before round 1 the base student trained on {} seed answers ({} steps, loss {} → {}); round 1's MFD scores that student, round 0 is the untouched base student.\n",
            w.items.len(),
            t["steps"].as_u64().map_or("—".into(), |s| s.to_string()),
            fmt_opt(t["first_loss"].as_f64(), 3),
            fmt_opt(t["final_train_loss"].as_f64(), 3)
        );
    }

    let _ = writeln!(md, "## Held-out win rates\n");
    let _ = writeln!(
        md,
        "The judge compares the student's answers with the teacher's (and with the base student's) on the held-out instructions, in both presentation orders. Win rate = (wins + ties / 2) / scored pairs; W/T/L counts; unscored pairs are excluded.\n"
    );
    let rows: Vec<Vec<String>> = r
        .rounds
        .iter()
        .map(|x| {
            let t = &x.heldout.vs_teacher;
            let b = x.heldout.vs_base.as_ref();
            vec![
                if x.round == 0 {
                    "0 (base)".into()
                } else {
                    x.round.to_string()
                },
                pct(t.win_rate),
                wtl(t),
                format!("{} / {}", fmt_opt(t.mean_a, 2), fmt_opt(t.mean_b, 2)),
                format!("{}", t.unscored),
                b.map_or("—".into(), |b| pct(b.win_rate)),
                b.map_or("—".into(), wtl),
                pct(t.first_position_wins),
            ]
        })
        .collect();
    md.push_str(&markdown_table(
        &[
            "round",
            "vs teacher",
            "W/T/L",
            "mean score student / teacher",
            "unscored",
            "vs base",
            "W/T/L",
            "first-position wins",
        ],
        &[false, true, true, true, true, true, true, true],
        &rows,
    ));
    plot_link(&mut md, r, "plots/winrate.svg", "win rates");

    let _ = writeln!(md, "\n## Difficulty (MFD)\n");
    let _ = writeln!(
        md,
        "MFD = J(teacher) − J(student) on each pool instruction, with the student of the previous round; both orders averaged; unscored items carry no MFD.\n"
    );
    let rows: Vec<Vec<String>> = r
        .rounds
        .iter()
        .filter_map(|x| {
            let m = x.mfd.as_ref()?;
            Some(vec![
                x.round.to_string(),
                m.items.to_string(),
                m.scored.to_string(),
                m.unscored.to_string(),
                m.hard.to_string(),
                m.easy.to_string(),
                fmt_opt(m.mean_mfd, 2),
                m.judge.inconsistent.to_string(),
                m.judge.flipped.to_string(),
                pct(m.judge.first_position_wins),
            ])
        })
        .collect();
    if rows.is_empty() {
        let _ = writeln!(
            md,
            "The MFD filter is off (ablation): no difficulty was measured."
        );
    } else {
        md.push_str(&markdown_table(
            &[
                "round",
                "pool",
                "scored",
                "unscored",
                "hard",
                "easy",
                "mean MFD",
                "inconsistent",
                "flipped",
                "first-position wins",
            ],
            &[false, true, true, true, true, true, true, true, true, true],
            &rows,
        ));
        for x in r.rounds.iter().filter(|x| !x.mfd_values.is_empty()) {
            plot_link(
                &mut md,
                r,
                &format!("plots/mfd_r{}.svg", x.round),
                &format!("MFD histogram, round {}", x.round),
            );
        }
    }

    let _ = writeln!(md, "\n## Task mix\n");
    let cl = &p.classes;
    let routes: Vec<String> = cl
        .routes
        .iter()
        .map(|(k, v)| {
            format!(
                "{} {v}",
                serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "Classifier answers on the seeds: {} (tagged: the `<answer>` named a category; mentioned: a category name elsewhere; fallback: none, counted as Others).",
        routes.join(", ")
    );
    if !cl.unknown_answers.is_empty() {
        let u: Vec<String> = cl
            .unknown_answers
            .iter()
            .map(|(a, n)| format!("`{a}` ×{n}"))
            .collect();
        let _ = writeln!(md, "Tagged answers outside the taxonomy: {}.", u.join(", "));
    }
    let rows: Vec<Vec<String>> = r
        .rounds
        .iter()
        .filter(|x| x.round > 0)
        .map(|x| {
            let fmt = |m: &BTreeMap<TaskCategory, usize>| {
                let n: usize = m.values().sum();
                let mut v: Vec<(&TaskCategory, &usize)> = m.iter().collect();
                v.sort_by(|a, b| b.1.cmp(a.1));
                v.iter()
                    .take(4)
                    .map(|(c, k)| format!("{c} {:.0}%", 100.0 * **k as f64 / n.max(1) as f64))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                x.round.to_string(),
                format!(
                    "{} + {}",
                    x.plan.hard_part,
                    x.plan.items.len() - x.plan.hard_part
                ),
                format!("{} / {}", x.plan.hard_available, x.plan.easy_available),
                fmt(&x.plan.mix_before()),
                fmt(&x.plan.mix_after()),
                (x.plan.hard.repeats + x.plan.easy.repeats).to_string(),
            ]
        })
        .collect();
    let _ = writeln!(md);
    md.push_str(&markdown_table(
        &[
            "round",
            "training items (hard + easy)",
            "available hard / easy",
            "mix before (top 4)",
            "mix after (top 4)",
            "repeats",
        ],
        &[false, true, true, false, false, true],
        &rows,
    ));
    plot_link(&mut md, r, "plots/task_mix.svg", "task mix");

    let _ = writeln!(md, "\n## Expansion, refinement and training\n");
    let rows: Vec<Vec<String>> = r
        .rounds
        .iter()
        .filter(|x| x.round > 0)
        .map(|x| {
            let e = &x.expansion;
            let rej: Vec<String> = e.rejected.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let t = &x.train;
            vec![
                x.round.to_string(),
                format!("{} / {}", e.accepted, e.requested),
                if rej.is_empty() {
                    "—".into()
                } else {
                    rej.join(", ")
                },
                format!("{} / {}", x.refine.refined, x.refine.asked),
                t["steps"].as_u64().map_or("—".into(), |s| s.to_string()),
                format!(
                    "{} → {}",
                    fmt_opt(t["first_loss"].as_f64(), 3),
                    fmt_opt(t["final_train_loss"].as_f64(), 3)
                ),
                format!("{:.0}", x.seconds),
            ]
        })
        .collect();
    md.push_str(&markdown_table(
        &[
            "round",
            "new instructions (kept / asked)",
            "rejected",
            "refined / asked",
            "steps",
            "loss first → final",
            "seconds",
        ],
        &[false, true, false, true, true, true, true],
        &rows,
    ));

    let _ = writeln!(md, "\n## Calls\n");
    let _ = writeln!(
        md,
        "Made: computed now; cached: replayed from `cache/calls/`; failed: failed after retries (the item was dropped or left unscored).\n"
    );
    let mut rows: Vec<Vec<String>> = r
        .calls
        .iter()
        .map(|(k, c)| {
            vec![
                format!("{k} (this invocation)"),
                c.made.to_string(),
                c.cached.to_string(),
                c.failed.to_string(),
            ]
        })
        .collect();
    for x in &r.rounds {
        for (k, c) in &x.calls {
            if c.total() > 0 {
                rows.push(vec![
                    format!("{k}, round {}", x.round),
                    c.made.to_string(),
                    c.cached.to_string(),
                    c.failed.to_string(),
                ]);
            }
        }
    }
    md.push_str(&markdown_table(
        &["role", "made", "cached", "failed"],
        &[false, true, true, true],
        &rows,
    ));
    plot_link(&mut md, r, "plots/calls.svg", "calls");

    if !r.notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    if !p.dropped.is_empty() {
        let _ = writeln!(md, "\n## Dropped instructions\n");
        let rows: Vec<Vec<String>> = p
            .dropped
            .iter()
            .map(|d| vec![d.id.clone(), d.reason.clone()])
            .collect();
        md.push_str(&markdown_table(&["id", "reason"], &[], &rows));
    }
    let _ = writeln!(
        md,
        "\n## Files\n\n- `rounds/r{{r}}/data.jsonl`: each round's training data; `rounds/r{{r}}/train/adapter/`: the student's PEFT adapter after round r (`openexpert generate --adapter`).\n- `rounds/r{{r}}/mfd.json`, `heldout_judge.json`: every judge output, parsed or not.\n- `prepare/classes.json`: the classifier's raw answers. `cache/calls/`: every call, replayed by `--resume`.\n- `report.json`: this report as data."
    );
    md
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn plot_link(md: &mut String, r: &TapirReport, path: &str, alt: &str) {
    if r.plots.iter().any(|p| p == path) {
        let _ = writeln!(md, "\n![{alt}]({path})");
    }
}

/// Writes the plots, `report.json` and `report.md` into `dir`; returns `report.md`'s path.
///
/// # Errors
/// When a file cannot be written.
pub fn write(dir: &Path, r: &TapirReport) -> Result<PathBuf> {
    let mut r = r.clone();
    r.plots = write_plots(dir, &r)?;
    let md = markdown(&r);
    atomic_fs::write_json(&dir.join("report.json"), &r)?;
    let path = dir.join("report.md");
    atomic_fs::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

/// A few lines for the terminal.
pub fn summary(r: &TapirReport, report_md: &Path) -> String {
    let mut s = format!("{}\n", r.headline);
    for x in &r.rounds {
        let t = &x.heldout.vs_teacher;
        let _ = writeln!(
            s,
            "  round {}: vs teacher {} ({} scored), vs base {}{}",
            x.round,
            pct(t.win_rate),
            t.scored,
            x.heldout
                .vs_base
                .as_ref()
                .map_or("—".into(), |b| pct(b.win_rate)),
            x.mfd.as_ref().map_or(String::new(), |m| format!(
                ", pool {} hard of {} scored",
                m.hard, m.scored
            )),
        );
    }
    let _ = writeln!(s, "Report: {}", report_md.display());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapir_curriculum::curriculum::HeldoutSummary;

    fn round(r: usize, vs_teacher: f64, scored: usize) -> RoundRecord {
        RoundRecord {
            round: r,
            heldout: HeldoutSummary {
                vs_teacher: WinSummary {
                    pairs: scored,
                    scored,
                    win_rate: Some(vs_teacher),
                    ..WinSummary::default()
                },
                vs_base: (r > 0).then(|| WinSummary {
                    win_rate: Some(0.6),
                    ..WinSummary::default()
                }),
            },
            ..RoundRecord::default()
        }
    }

    #[test]
    fn the_headline_says_when_a_change_is_within_noise() {
        let h = headline(&[round(0, 0.2, 8), round(1, 0.3, 8)]);
        assert!(h.contains("within noise"), "{h}");
        let h = headline(&[round(0, 0.1, 400), round(2, 0.4, 400)]);
        assert!(
            h.contains("After 2 round(s)") && h.contains("40%") && h.contains("closer"),
            "{h}"
        );
        let mut unscored = round(1, 0.0, 0);
        unscored.heldout.vs_teacher.win_rate = None;
        assert!(headline(&[round(0, 0.1, 4), unscored]).contains("too few"));
    }

    #[test]
    fn plots_and_markdown_are_written() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r1 = round(1, 0.3, 8);
        r1.mfd_values = vec![0.0, 1.0, 3.0, 3.0];
        r1.mfd = Some(tapir_curriculum::mfd::MfdSummary {
            items: 4,
            scored: 4,
            hard: 3,
            easy: 1,
            delta: 1.0,
            ..Default::default()
        });
        let mut calls = BTreeMap::new();
        calls.insert(
            "judge".to_string(),
            CallStats {
                made: 3,
                cached: 2,
                failed: 1,
            },
        );
        let rep = TapirReport {
            command: "openexpert tapir".into(),
            config: TapirConfig::default(),
            roles: BTreeMap::new(),
            prepare: PrepareRecord::default(),
            warmup: Some(WarmupRecord {
                items: vec!["s1".into(), "s2".into()],
                train: serde_json::json!({"steps": 2, "first_loss": 1.5, "final_train_loss": 1.25}),
            }),
            rounds: vec![round(0, 0.2, 8), r1],
            calls,
            headline: "h".into(),
            notes: vec!["a note".into()],
            seconds: 1.0,
            plots: Vec::new(),
        };
        let md_path = write(tmp.path(), &rep).unwrap();
        let md = std::fs::read_to_string(md_path).unwrap();
        assert!(
            md.contains("Warm-up: before round 1 the base student trained on 2 seed answers (2 steps, loss 1.500 → 1.250)"),
            "{md}"
        );
        for f in [
            "plots/winrate.svg",
            "plots/mfd_r1.svg",
            "plots/task_mix.svg",
            "plots/calls.svg",
        ] {
            assert!(tmp.path().join(f).is_file(), "{f}");
            assert!(md.contains(&format!("]({f})")), "{f} not linked");
        }
        assert!(md.contains("| 0 (base)") && md.contains("- a note"));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(tmp.path().join("report.json")).unwrap())
                .unwrap();
        assert_eq!(json["plots"].as_array().unwrap().len(), 4);
    }
}
