//! A small ablation grid of Rocket (ALGORITHMS.md 1(e)) on the default assets, written as one
//! table: expert selection signal × training data, plus router-only training, each compared
//! with the base model and a plain LoRA on the same data.
//!
//! Every grid point runs in one shared run directory with `force`, so the stages two points have
//! in common (the bank's ranking, the retrieval, a trained LoRA) run once and are reused: the
//! stage store is keyed by fingerprints. Each point's report is kept under `points/`.
//!
//! Run from the repository root (about 30 minutes on 2 CPU cores; `--quick` runs 3 points):
//! `cargo run --release -p openexpert-examples --example rocket_ablation -- [--quick] [RUN_DIR]`

use std::fmt::Write as _;
use std::path::PathBuf;

use openexpert::pipelines::rocket::{DataMode, RocketConfig, RunOptions, SelectionSignal, run};
use openexpert::report::table::{fmt_mean_se, fmt_opt, markdown_table};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or_else(|| PathBuf::from("runs/rocket-ablation"), PathBuf::from);
    let base = RocketConfig::from_file("examples/configs/rocket-quick.toml".as_ref())?;
    let mut grid: Vec<(String, RocketConfig)> = Vec::new();
    let signals = [
        SelectionSignal::CombinedDiversity,
        SelectionSignal::Accuracy,
        SelectionSignal::Random,
    ];
    let modes = if quick {
        vec![DataMode::SimilarDedup]
    } else {
        vec![
            DataMode::SimilarDedup,
            DataMode::Random,
            DataMode::KshotOnly,
        ]
    };
    for mode in &modes {
        for signal in signals {
            let mut c = base.clone();
            c.selection.signal = signal;
            c.data.mode = *mode;
            grid.push((format!("{signal} / {mode}"), c));
        }
    }
    if !quick {
        let mut c = base.clone();
        c.train.router_only = true;
        grid.push(("combined-diversity / similar-dedup / router only".into(), c));
    }
    std::fs::create_dir_all(dir.join("points"))?;
    let mut rows = Vec::new();
    for (i, (name, config)) in grid.iter().enumerate() {
        eprintln!("\n=== grid point {}/{}: {name}", i + 1, grid.len());
        let mut options = RunOptions::new("rocket", &dir);
        options.force = true;
        let outcome = run(config, &options)?;
        std::fs::copy(
            &outcome.report_md,
            dir.join("points").join(format!("{i:02}.md")),
        )?;
        let r = &outcome.report;
        let em = |c: &str| {
            r.row(c).map_or("—".to_string(), |x| {
                x.exact_match
                    .map_or("—".into(), |m| fmt_mean_se(m, x.exact_match_stderr, 3))
            })
        };
        rows.push(vec![
            name.clone(),
            r.chosen.join(", "),
            format!("{}", r.data.kshot + r.data.selected.len()),
            em("moe"),
            fmt_opt(r.row("moe").and_then(|x| x.reasoning_ppl), 2),
            em("lora"),
            em("base"),
        ]);
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Rocket ablation on {}\n\nOne row per grid point (`signal / data`); test-set exact match ± bootstrap standard error. Reports per point: `points/`.\n",
        base.inputs
            .kshot
            .as_ref()
            .map_or("?".into(), |p| p.display().to_string())
    );
    md.push_str(&markdown_table(
        &[
            "grid point",
            "experts",
            "training items",
            "mixture",
            "mixture rPPL",
            "plain LoRA",
            "base",
        ],
        &[false, false, true, true, true, true, true],
        &rows,
    ));
    let out = dir.join("ablation.md");
    atomic_fs::write_atomic(&out, md.as_bytes())?;
    println!("{md}\nwritten to {}", out.display());
    Ok(())
}
