//! Markdown tables for people, next to the JSON reports.

use std::fmt::Write as _;

use crate::eval::Evaluation;
use crate::rank::RankReport;

fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.digits$}"),
        Some(_) => "nan".into(),
        None => "–".into(),
    }
}

/// One row per evaluation: accuracy ± stderr, unextracted, MC acc / acc_norm, perplexities.
pub fn evaluations_markdown(evals: &[Evaluation]) -> String {
    let mut s = String::from(
        "| model | exact match | ± se | unextracted | mc acc | mc acc_norm | reasoning PPL (mean) | reasoning PPL (pooled) | answer PPL (mean) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for e in evals {
        let em = e.exact_match.as_ref();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            e.name,
            em.map_or("–".into(), |r| format!(
                "{:.3} ({}/{})",
                r.accuracy, r.correct, r.total
            )),
            opt(em.map(|r| r.stderr), 3),
            em.map_or("–".into(), |r| r.unextracted.to_string()),
            opt(e.multiple_choice.as_ref().map(|r| r.acc), 3),
            opt(e.multiple_choice.as_ref().map(|r| r.acc_norm), 3),
            opt(e.reasoning_ppl.as_ref().map(|r| r.mean_ppl), 2),
            opt(e.reasoning_ppl.as_ref().map(|r| r.pooled_ppl), 2),
            opt(e.answer_ppl.as_ref().map(|r| r.mean_ppl), 2),
        );
    }
    s
}

/// The ranking table of `rank-bank` plus the chosen experts and the best tuples.
pub fn rank_markdown(r: &RankReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "K-shot items: {}, in-context shots: {}, accuracy: {:?}, perplexity: {:?}, shortlist M = {}, experts N = {}, {:?} / {:?}, {} tuples scored, evaluation {:.1} s.\n",
        r.items,
        r.shots,
        r.accuracy_signal,
        r.ppl_signal,
        r.selection.shortlist,
        r.selection.config.experts,
        r.selection.config.shortlist_rule,
        r.selection.config.tuple_rule,
        r.selection.tuples_scored,
        r.eval_seconds
    );
    let _ = writeln!(
        s,
        "**Selected experts:** {}\n",
        r.selection.selected.join(", ")
    );
    s.push_str("| # | adapter | accuracy | ± se | reasoning PPL (mean) | reasoning PPL (pooled) | answer PPL | rank acc | rank PPL | shortlisted | selected | blind guesser | lucky items |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|:---:|---:|\n");
    let signal = |name: &str| r.signals.iter().find(|x| x.name == name);
    if let Some(b) = signal(crate::bank::BASE_NAME) {
        let _ = writeln!(
            s,
            "| – | *base* | {} | {} | {} | {} | {} | | | | | | |",
            opt(b.accuracy.or(b.mc_acc), 3),
            opt(b.accuracy_stderr, 3),
            opt(b.reasoning_ppl_mean, 2),
            opt(b.reasoning_ppl_pooled, 2),
            opt(b.answer_ppl_mean, 2)
        );
    }
    for v in &r.selection.adapters {
        let x = signal(&v.name);
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            v.position,
            v.name,
            v.accuracy,
            opt(x.and_then(|x| x.accuracy_stderr), 3),
            opt(x.and_then(|x| x.reasoning_ppl_mean), 2),
            opt(x.and_then(|x| x.reasoning_ppl_pooled), 2),
            opt(x.and_then(|x| x.answer_ppl_mean), 2),
            v.rank_accuracy,
            v.rank_ppl,
            if v.shortlisted { "✓" } else { "" },
            if v.selected { "✓" } else { "" },
            if v.blind_guesser { "⚠" } else { "" },
            v.lucky_items
        );
    }
    s.push_str("\n| tuple | group similarity | group diversity | mean accuracy | mean PPL |\n|---|---:|---:|---:|---:|\n");
    for t in &r.selection.tuples {
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.4} | {:.3} | {:.2} |",
            t.members.join(", "),
            t.group_similarity,
            t.group_diversity,
            t.mean_accuracy,
            t.mean_ppl
        );
    }
    s
}

/// Writes `bytes` to `path` atomically; re-exported from [`atomic_fs`], its one home.
pub use atomic_fs::write_atomic;
