//! `openexpert select evolve`: the DiverseEvol loop on a JSONL pool with LoRA training each
//! round (see `openexpert::pipelines::diverse_evol` and `data_select::evolve` for the files it
//! writes and how `--resume` works).

use std::path::PathBuf;

use anyhow::Context;
use std::sync::LazyLock;

use clap::Args;
use data_select::Metric;
use data_select::evolve::{EvolveConfig, EvolveStrategy, run_evolve};
use lm_core::device::device_from_name;
use lm_core::model::LanguageModel;
use lm_core::train::{TrainConfig, TrainExample};
use openexpert::pipelines::diverse_evol::LoraEvolveModel;
use openexpert::training_data::{example_from_value, read_training_jsonl};

use crate::cli::args::model::ModelArgs;
use crate::cli::args::named;
use crate::cli::args::trainer::TrainerFlags;
use crate::cli::jsonl::read_objects;
use atomic_fs::write_atomic;

static DEFAULTS: LazyLock<EvolveConfig> = LazyLock::new(EvolveConfig::default);

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
}

/// Runs `select evolve`.
pub fn run(args: EvolveArgs, device: &str) -> anyhow::Result<()> {
    // Refuse an existing run before the model is loaded (run_evolve checks it again).
    if !args.resume && args.output.join("evolve.json").exists() {
        anyhow::bail!(
            "{} already holds a DiverseEvol run: pass --resume to continue it, or choose another --output",
            args.output.display()
        );
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
    let device = device_from_name(device)?;
    let model = LanguageModel::load(&args.model.model, &device)?;
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
    let report = run_evolve(
        &mut evolve,
        &args.evolve_config(),
        &args.output,
        &fingerprint,
        args.resume,
    )?;

    let mut lines = String::new();
    for &i in &report.labeled {
        lines.push_str(&serde_json::to_string(&objects[i])?);
        lines.push('\n');
    }
    write_atomic(&args.output.join("selected.jsonl"), lines.as_bytes())?;
    write_atomic(
        &args.output.join("evolve_report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )
    .context("writing the run report")?;
    for r in &report.rounds {
        let loss = |k: &str| r.train.get(k).and_then(serde_json::Value::as_f64);
        eprintln!(
            "round {}: +{} -> {} items, embed {:.1}s, select {:.2}s, train {:.1}s, loss {:.4}{}{}",
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
            if report.skipped_rounds.contains(&r.round) {
                " (done earlier)"
            } else {
                ""
            }
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
