//! `openexpert select evolve`: the DiverseEvol loop on a JSONL pool with LoRA training each
//! round (see `openexpert::pipelines::diverse_evol` and `data_select::evolve` for the files it
//! writes and how `--resume` works).
//!
//! With `--test T.jsonl` every round's adapter is evaluated on the test items
//! (`rd_{t}/test_eval.json`, see `openexpert::pipelines::evolve_test`), a random-selection run of
//! the same sizes goes to `OUTPUT/random/` (unless `--no-baseline`), and `OUTPUT/report.{md,json}`
//! with `evolve_accuracy.svg` compare the two round by round (`pipelines::evolve_report`).

use std::path::PathBuf;

use anyhow::Context;
use std::sync::LazyLock;

use clap::{Args, ValueEnum};
use data_select::Metric;
use data_select::evolve::{EvolveConfig, EvolveReport, EvolveStrategy, run_evolve};
use kshot_eval::{EvalConfig, KShotSet};
use lm_core::device::device_from_name;
use lm_core::train::{TrainConfig, TrainExample};
use openexpert::pipelines::diverse_evol::LoraEvolveModel;
use openexpert::pipelines::evolve_report::{Arm, EvolveComparison, TestSummary};
use openexpert::pipelines::evolve_test::{
    RoundTestEval, TestSet, TestedEvolveModel, evaluate_base, evaluate_rounds, overlap_with_pool,
    share_round_zero,
};
use openexpert::training_data::{example_from_value, read_training_jsonl};

use crate::cli::args::model::{ModelArgs, PrecisionArgs};
use crate::cli::args::named;
use crate::cli::args::trainer::TrainerFlags;
use crate::cli::jsonl::read_objects;
use atomic_fs::write_atomic;

static DEFAULTS: LazyLock<EvolveConfig> = LazyLock::new(EvolveConfig::default);

/// The baseline run's directory inside `--output`.
const BASELINE_DIR: &str = "random";

/// The comparison run of `--baseline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BaselineArg {
    /// The same sizes per round (and the same round 0), uniformly random picks afterwards.
    Random,
}

/// Arguments of `select evolve`.
#[derive(Debug, Args)]
pub struct EvolveArgs {
    /// The pool: JSONL with prompt/response, question/answer[/rationale], Alpaca, ShareGPT or chat lines.
    #[arg(long)]
    pub pool: PathBuf,
    /// Run directory (picks, adapters and reports of every round; see docs/data-select.md).
    #[arg(long)]
    pub output: PathBuf,
    /// The decoder trained (and embedding the pool) each round.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Items drawn at random in round 0.
    #[arg(long, default_value_t = DEFAULTS.init)]
    pub init: usize,
    /// Items added per round.
    #[arg(long, default_value_t = DEFAULTS.per_round)]
    pub per_round: usize,
    /// Rounds after round 0.
    #[arg(long, default_value_t = DEFAULTS.rounds)]
    pub rounds: usize,
    /// How each round's items are chosen.
    #[arg(long, value_parser = named::<EvolveStrategy>(), default_value_t = DEFAULTS.strategy)]
    pub strategy: EvolveStrategy,
    /// Distance of the k-center picks.
    #[arg(long, value_parser = named::<Metric>(), default_value_t = DEFAULTS.metric)]
    pub metric: Metric,
    /// Seed of round 0's draw (and of the random strategy).
    #[arg(long, default_value_t = DEFAULTS.seed)]
    pub select_seed: u64,
    /// Continue each round's training from the previous round's adapter (default: from the base).
    #[arg(long)]
    pub warm_start: bool,
    /// Continue the run in --output (completed rounds are kept, the interrupted one resumes).
    #[arg(long)]
    pub resume: bool,
    /// Held-out JSONL whose loss every round reports.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Test JSONL (question/answer[/rationale]): every round's adapter is evaluated on it (exact
    /// match with a bootstrap standard error; reasoning perplexity when items have rationales)
    /// into rd_T/test_eval.json, and OUTPUT/report.md, report.json and evolve_accuracy.svg
    /// compare the run with its --baseline.
    #[arg(long, value_name = "T.jsonl")]
    pub test: Option<PathBuf>,
    /// Evaluate the first N test items.
    #[arg(long, value_name = "N", default_value_t = 50, requires = "test")]
    pub test_limit: usize,
    /// Most new tokens per generated test answer.
    #[arg(long, default_value_t = 64, requires = "test")]
    pub max_new_tokens: usize,
    /// With --test: a comparison run in OUTPUT/random/ with the same sizes per round and the same
    /// round 0, then uniformly random picks (default with --test and the kcenter strategy).
    #[arg(long, value_enum, requires = "test", conflicts_with = "no_baseline")]
    pub baseline: Option<BaselineArg>,
    /// With --test: no baseline run.
    #[arg(long, requires = "test")]
    pub no_baseline: bool,
    /// LoRA and per-round training settings (`--max-len` also bounds the embedded sequences).
    #[command(flatten)]
    pub trainer: TrainerFlags,
}

impl EvolveArgs {
    /// The per-round trainer config these flags describe.
    pub fn train_config(&self) -> TrainConfig {
        self.trainer.config()
    }

    /// The loop's settings these flags describe.
    pub fn evolve_config(&self) -> EvolveConfig {
        EvolveConfig {
            init: self.init,
            per_round: self.per_round,
            rounds: self.rounds,
            seed: self.select_seed,
            warm_start: self.warm_start,
            metric: self.metric,
            strategy: self.strategy,
        }
    }

    /// The baseline run's strategy: `--baseline`, or random by default with `--test` when the run
    /// itself is k-center; none with `--no-baseline`.
    ///
    /// # Errors
    /// `--baseline random` on a run whose own strategy is random.
    pub fn baseline_strategy(&self) -> anyhow::Result<Option<EvolveStrategy>> {
        if self.no_baseline || self.test.is_none() {
            return Ok(None);
        }
        match self.baseline {
            Some(BaselineArg::Random) if self.strategy == EvolveStrategy::Random => anyhow::bail!(
                "--baseline random compares with random picks, but this run already picks at random (--strategy random); drop --baseline or use --strategy kcenter"
            ),
            Some(BaselineArg::Random) => Ok(Some(EvolveStrategy::Random)),
            None if self.strategy == EvolveStrategy::KCenter => Ok(Some(EvolveStrategy::Random)),
            None => Ok(None),
        }
    }

    /// The test set of `--test`: its first `--test-limit` items, evaluated in the training
    /// format. Returns it with the number of items in the file.
    fn test_set(&self) -> anyhow::Result<Option<(TestSet, usize)>> {
        let Some(path) = &self.test else {
            return Ok(None);
        };
        if self.test_limit == 0 {
            anyhow::bail!("--test-limit must be at least 1");
        }
        if !path.is_file() {
            anyhow::bail!(
                "--test {}: no such file (expected a JSONL of question/answer[/rationale] items)",
                path.display()
            );
        }
        let set = KShotSet::from_jsonl(path)
            .with_context(|| format!("reading the --test set {}", path.display()))?;
        let file_items = set.len();
        let config = EvalConfig {
            format: self.trainer.prompt_format(),
            max_new_tokens: self.max_new_tokens,
            show_progress: true,
            ..EvalConfig::default()
        };
        let test = TestSet::new(
            path.display().to_string(),
            set.take(self.test_limit).items,
            config,
        )?;
        Ok(Some((test, file_items)))
    }
}

/// Runs `select evolve`.
pub fn run(args: EvolveArgs, device: &str) -> anyhow::Result<()> {
    let baseline = args.baseline_strategy()?;
    let baseline_dir = args.output.join(BASELINE_DIR);
    // Refuse an existing run before the model is loaded (run_evolve checks it again).
    for dir in [&args.output, &baseline_dir] {
        if !args.resume && dir.join("evolve.json").exists() {
            anyhow::bail!(
                "{} already holds a DiverseEvol run: pass --resume to continue it, or choose another --output",
                dir.display()
            );
        }
    }
    let objects = read_objects(&args.pool)?;
    let examples = objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            example_from_value(serde_json::Value::Object(o.clone())).map_err(|e| {
                anyhow::anyhow!(
                    "{}: record {} (0-based, blank lines not counted): {e}",
                    args.pool.display(),
                    i
                )
            })
        })
        .collect::<anyhow::Result<Vec<TrainExample>>>()?;
    let eval = match &args.eval {
        Some(p) => read_training_jsonl(p)?,
        None => Vec::new(),
    };
    let test = args.test_set()?;
    let overlap = match &test {
        Some((t, _)) => overlap_with_pool(&examples, &t.items),
        None => Vec::new(),
    };
    if let Some((t, _)) = &test
        && !overlap.is_empty()
    {
        eprintln!(
            "warning: {} of the {} --test items also appear in the pool (same question); their accuracy is not held-out (recorded in report.md)",
            overlap.len(),
            t.items.len()
        );
    }
    let device = device_from_name(device)?;
    let model = args.precision.load(&args.model.model, &device)?;
    let format = args.trainer.prompt_format();
    let mut evolve = LoraEvolveModel::new(
        model,
        &args.model.model,
        examples,
        args.train_config(),
        format,
    )?
    .with_eval(eval)
    .with_progress(true);
    let fingerprint = evolve.fingerprint();

    // The base model first: a broken test setup fails before any training.
    let base_eval = match &test {
        Some((t, _)) => {
            let base = evaluate_base(
                &mut evolve,
                t,
                &args.output.join("base_test_eval.json"),
                args.resume,
            )?;
            eprintln!(
                "base model: test acc {} on {} items",
                base.accuracy
                    .map(|a| openexpert::report::table::fmt_mean_se(a, base.stderr, 3))
                    .unwrap_or_else(|| "—".into()),
                t.items.len()
            );
            Some(base)
        }
        None => None,
    };

    let config = args.evolve_config();
    let run_name = config.strategy.to_string();
    if test.is_some() {
        eprintln!("{run_name} run in {}", args.output.display());
    }
    let (report, evals) = run_one(
        &mut evolve,
        test.as_ref().map(|t| &t.0),
        &config,
        &args.output,
        &fingerprint,
        args.resume,
    )?;
    finish_run(&args.output, &objects, &report)?;
    print_rounds(&run_name, &report, &evals);

    let mut baseline_run = None;
    if let (Some(strategy), Some((t, _))) = (baseline, &test) {
        let config = EvolveConfig {
            strategy,
            ..args.evolve_config()
        };
        // Round 0 is the same seeded draw: copy it rather than train it again.
        let shared = share_round_zero(&args.output, &baseline_dir)?;
        eprintln!(
            "{strategy} baseline run in {} (same sizes per round{})",
            baseline_dir.display(),
            if shared { ", round 0 shared" } else { "" }
        );
        let (b, b_evals) = run_one(
            &mut evolve,
            Some(t),
            &config,
            &baseline_dir,
            &fingerprint,
            args.resume || shared,
        )?;
        finish_run(&baseline_dir, &objects, &b)?;
        print_rounds(&strategy.to_string(), &b, &b_evals);
        baseline_run = Some((strategy.to_string(), b, b_evals));
    }

    if let Some((t, file_items)) = &test {
        let summary = TestSummary {
            source: t.source.clone(),
            items: t.items.len(),
            file_items: *file_items,
            limit: args.test_limit,
            max_new_tokens: args.max_new_tokens,
            metrics: t.metrics,
            overlap_with_pool: overlap.len(),
            overlapping_ids: overlap.iter().map(|&i| t.items[i].id_or(i)).collect(),
            fingerprint: t.fingerprint(),
        };
        let comparison = EvolveComparison::build(
            summary,
            base_eval.as_ref(),
            Arm {
                strategy: &run_name,
                records: &report.rounds,
                evals: &evals,
            },
            baseline_run.as_ref().map(|(s, b, e)| Arm {
                strategy: s,
                records: &b.rounds,
                evals: e,
            }),
            t.config.bootstrap_resamples,
            t.config.seed,
        );
        write_report(&args.output, &comparison)?;
        eprintln!(
            "report: {} (report.json, evolve_accuracy.svg)",
            args.output.join("report.md").display()
        );
    }
    eprintln!(
        "{} items selected{}; selected.jsonl and the rounds' adapters in {}",
        report.labeled.len(),
        if report.pool_exhausted {
            " (the whole pool)"
        } else {
            ""
        },
        args.output.display()
    );
    Ok(())
}

/// One run of the loop in `dir`, every round evaluated on `test` when given (rounds completed
/// earlier without an evaluation are evaluated from their saved adapters).
fn run_one(
    evolve: &mut LoraEvolveModel,
    test: Option<&TestSet>,
    config: &EvolveConfig,
    dir: &std::path::Path,
    fingerprint: &str,
    resume: bool,
) -> anyhow::Result<(EvolveReport, Vec<RoundTestEval>)> {
    Ok(match test {
        Some(t) => {
            let report = run_evolve(
                &mut TestedEvolveModel::new(evolve, t),
                config,
                dir,
                fingerprint,
                resume,
            )?;
            let evals = evaluate_rounds(evolve, t, dir, &report.rounds)?;
            (report, evals)
        }
        None => (
            run_evolve(evolve, config, dir, fingerprint, resume)?,
            Vec::new(),
        ),
    })
}

/// `selected.jsonl` (the labelled pool records, in the order they were added) and
/// `evolve_report.json` of the run in `dir`.
fn finish_run(
    dir: &std::path::Path,
    objects: &[serde_json::Map<String, serde_json::Value>],
    report: &EvolveReport,
) -> anyhow::Result<()> {
    let mut lines = String::new();
    for &i in &report.labeled {
        lines.push_str(&serde_json::to_string(&objects[i])?);
        lines.push('\n');
    }
    write_atomic(&dir.join("selected.jsonl"), lines.as_bytes())?;
    write_atomic(
        &dir.join("evolve_report.json"),
        serde_json::to_string_pretty(report)?.as_bytes(),
    )
    .context("writing the run report")?;
    Ok(())
}

/// One line per round on stderr.
fn print_rounds(name: &str, report: &EvolveReport, evals: &[RoundTestEval]) {
    for r in &report.rounds {
        let loss = |k: &str| r.train.get(k).and_then(serde_json::Value::as_f64);
        let test = evals
            .iter()
            .find(|e| e.round == Some(r.round))
            .and_then(|e| Some((e.accuracy?, e.stderr)))
            .map(|(a, se)| {
                format!(
                    ", test acc {}",
                    openexpert::report::table::fmt_mean_se(a, se, 3)
                )
            })
            .unwrap_or_default();
        eprintln!(
            "{name} round {}: +{} -> {} items, embed {:.1}s, select {:.2}s, train {:.1}s, loss {:.4}{}{}{}",
            r.round,
            r.new_items,
            r.labeled,
            r.embed_seconds,
            r.select_seconds,
            r.train_seconds,
            loss("final_train_loss").unwrap_or(f64::NAN),
            loss("eval_loss")
                .map(|e| format!(", held-out {e:.4}"))
                .unwrap_or_default(),
            test,
            if report.skipped_rounds.contains(&r.round) {
                " (done earlier)"
            } else {
                ""
            }
        );
    }
}

/// `report.json`, `report.md`, `evolve_accuracy.svg` and, with held-out losses,
/// `evolve_heldout_loss.svg` in `dir`.
fn write_report(dir: &std::path::Path, comparison: &EvolveComparison) -> anyhow::Result<()> {
    write_atomic(
        &dir.join("report.json"),
        serde_json::to_string_pretty(comparison)?.as_bytes(),
    )?;
    let svg = match comparison.accuracy_svg() {
        Ok(svg) => Some(svg),
        Err(e) => {
            eprintln!("warning: no accuracy plot: {e}");
            None
        }
    };
    if let Some(svg) = &svg {
        write_atomic(&dir.join("evolve_accuracy.svg"), svg.as_bytes())?;
    }
    if let Some(loss) = comparison.loss_svg() {
        write_atomic(&dir.join("evolve_heldout_loss.svg"), loss?.as_bytes())?;
    }
    let md = comparison.markdown(svg.is_some().then_some("evolve_accuracy.svg"));
    write_atomic(&dir.join("report.md"), md.as_bytes())?;
    Ok(())
}
