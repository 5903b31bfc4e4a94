//! `openexpert moe ...`: mixtures of LoRA experts (Rocket stages 6-7) and their baselines.
//!
//! - `moe build`: the chosen bank adapters become experts with a router in every adapted module
//!   (`--router-init kaiming|zero|arrow`); written as a mixture directory.
//! - `moe arrow`: the same with training-free Arrow routing (`build --router-init arrow`).
//! - `moe train`: fine-tunes the routers (`--router-only`) or routers and experts on a JSONL file,
//!   with the trainer of `openexpert train` (checkpoints, `--resume`); writes a new directory.
//! - `moe routes`: routing statistics over the rows of a JSONL file (per module, layer and
//!   expert: load share, mean gate, entropy), with an SVG heatmap layer × expert.
//! - `moe lorahub`: LoraHub's gradient-free search of static expert weights on a K-shot set;
//!   writes `lorahub.json` (apply with `--adapter e1,e2,... --adapter-weight w1,w2,...`).
//!
//! A mixture directory is accepted by `score`, `generate` and `eval` through `--moe DIR`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use atomic_fs::{write_atomic, write_json};
use clap::{Args, Subcommand};
use lm_core::device::device_from_name;
use lm_core::model::LanguageModel;
use lm_core::score::ScoreRequest;
use lm_core::train::{LoraTrainer, TrainExample, Trainable};
use moe_router::config::{default_balance_loss, default_seed, default_top_k, default_z_loss};
use moe_router::train::MoeTrainable;
use moe_router::{ExpertSpec, LoraHubOptions, Moe, MoeConfig, RouterInit};

use crate::cli::args::model::{ModelArgs, PrecisionArgs};
use crate::cli::args::trainer::OptimFlags;
use crate::cli::jsonl::read_objects;
use crate::cli::run_dir;

/// The `moe` operations.
#[derive(Debug, Subcommand)]
pub enum MoeCommand {
    /// Build a mixture of bank adapters with a learned router per adapted module.
    Build(BuildArgs),
    /// Build a training-free Arrow mixture (routers = experts' top singular directions).
    Arrow(MixtureArgs),
    /// Fine-tune a mixture's routers (and experts) on a JSONL file.
    Train(Box<MoeTrainArgs>),
    /// Routing statistics of a mixture over JSONL rows, with an SVG heatmap layer × expert.
    Routes(RoutesArgs),
    /// LoraHub: search static expert weights on a K-shot set (CMA-ES), written as lorahub.json.
    Lorahub(LoraHubArgs),
}

/// The experts of a mixture: bank adapters by name, or adapter directories.
#[derive(Debug, Clone, Args)]
pub struct ExpertArgs {
    /// The bank directory holding the experts' PEFT adapters (one subdirectory each).
    #[arg(long)]
    pub bank: Option<PathBuf>,
    /// Expert names (subdirectories of --bank) or adapter directories, comma-separated, in order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub experts: Vec<String>,
}

impl ExpertArgs {
    /// The expert specs: `BANK/name` for names, the path itself otherwise.
    pub fn specs(&self) -> anyhow::Result<Vec<ExpertSpec>> {
        if let Some(bank) = &self.bank
            && !bank.is_dir()
        {
            bail!(
                "--bank {}: expected a directory of PEFT adapters, found {}",
                bank.display(),
                if bank.exists() { "a file" } else { "nothing" }
            );
        }
        if self.experts.iter().any(|e| e.trim().is_empty()) {
            bail!(
                "--experts {:?}: found an empty expert name (a stray comma?); expected names or adapter directories separated by commas",
                self.experts.join(",")
            );
        }
        self.experts
            .iter()
            .map(|e| {
                let path = match &self.bank {
                    Some(bank) => bank.join(e),
                    None => PathBuf::from(e),
                };
                if !path.join("adapter_config.json").is_file() {
                    if self.experts.len() == 1 && e.trim().parse::<usize>().is_ok() && !path.exists() {
                        bail!(
                            "--experts {e}: expected adapter names (or directories), found a number. Here --experts lists \
                             the experts by name, e.g. --experts gcd,syllogism; in rank-bank and rocket it is how many to \
                             choose. To build from a ranking, pass the names rank-bank selected (`selected` in its JSON)"
                        );
                    }
                    let hint = match &self.bank {
                        Some(bank) => format!("; the adapters of {} are: {}", bank.display(), bank_adapters(bank).join(", ")),
                        None => "; give --bank DIR to name bank adapters".into(),
                    };
                    bail!(
                        "expert {e:?}: expected a PEFT adapter directory at {} (adapter_config.json), found none{hint}",
                        path.display(),
                    );
                }
                let name = path
                    .file_name()
                    .map_or_else(|| e.clone(), |n| n.to_string_lossy().into_owned());
                Ok(ExpertSpec { name, path })
            })
            .collect()
    }
}

/// The PEFT adapters of a bank directory (subdirectories with an `adapter_config.json`), sorted.
fn bank_adapters(bank: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bank)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("adapter_config.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        names.push("(none)".into());
    }
    names
}

/// Refuses, before any model is loaded, an output directory that is an existing file.
fn check_output_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!(
            "--output {}: expected a directory to write the mixture into, found a file; pick another --output",
            dir.display()
        );
    }
    Ok(())
}

/// Refuses, before any model is loaded, an output file whose folder does not exist or that is
/// an existing directory (so no output is written when another cannot be).
fn check_output_file(flag: &str, file: &Path) -> anyhow::Result<()> {
    if file.is_dir() {
        bail!(
            "{flag} {}: expected a file path, found a directory; name a file",
            file.display()
        );
    }
    let parent = file.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent
        && !parent.is_dir()
    {
        bail!(
            "{flag} {}: the folder {} does not exist; create it or pick another path",
            file.display(),
            parent.display()
        );
    }
    Ok(())
}

/// What `moe build` and `moe arrow` share: the base, the experts, k, the losses, the output.
#[derive(Debug, Args)]
pub struct MixtureArgs {
    /// The base decoder the experts were trained on. Building runs no forward pass, so there
    /// is no `--dtype` here: the mixture is the same in every precision (and records the base's
    /// f32 weights probe).
    #[command(flatten)]
    pub model: ModelArgs,
    /// The experts.
    #[command(flatten)]
    pub experts: ExpertArgs,
    /// Experts kept per token (1..=E; E = dense soft routing).
    #[arg(long, default_value_t = default_top_k())]
    pub top_k: usize,
    /// Switch load-balancing loss coefficient used when the mixture trains.
    #[arg(long, default_value_t = default_balance_loss())]
    pub balance_loss: f32,
    /// Router z-loss coefficient used when the mixture trains.
    #[arg(long, default_value_t = default_z_loss())]
    pub z_loss: f32,
    /// Output mixture directory (replaced as a whole).
    #[arg(long)]
    pub output: PathBuf,
}

/// Arguments of `moe build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Base, experts, k, losses, output.
    #[command(flatten)]
    pub mixture: MixtureArgs,
    /// Router initialisation: kaiming (the authors' code), zero (uniform gates) or arrow.
    #[arg(long, value_parser = parse_init, default_value = "kaiming")]
    pub router_init: RouterInit,
    /// Seed of the router initialisation.
    #[arg(long, default_value_t = default_seed())]
    pub seed: u64,
}

fn parse_init(s: &str) -> Result<RouterInit, String> {
    match s {
        "kaiming" => Ok(RouterInit::Kaiming),
        "zero" => Ok(RouterInit::Zero),
        "arrow" => Ok(RouterInit::Arrow),
        other => Err(format!(
            "unknown router init {other:?}; expected kaiming, zero or arrow"
        )),
    }
}

/// Arguments of `moe train`.
#[derive(Debug, Args)]
pub struct MoeTrainArgs {
    /// The base decoder.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// The mixture to train.
    #[arg(long = "moe")]
    pub moe: PathBuf,
    /// Training JSONL (the same shapes as `openexpert train`).
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out JSONL for the evaluation loss.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Train the routers only (the authors' `train_router_only`); experts stay frozen.
    #[arg(long)]
    pub router_only: bool,
    /// Override the mixture's balance-loss coefficient.
    #[arg(long)]
    pub balance_loss: Option<f32>,
    /// Override the mixture's router z-loss coefficient.
    #[arg(long)]
    pub z_loss: Option<f32>,
    /// Output mixture directory (the trained mixture, reports, checkpoints).
    #[arg(long)]
    pub output: PathBuf,
    /// Continue from the newest checkpoint in OUTPUT/checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// Optimisation settings (the experts keep their own LoRA shapes).
    #[command(flatten)]
    pub trainer: OptimFlags,
}

/// Arguments of `moe routes`.
#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// The base decoder.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// The mixture.
    #[arg(long = "moe")]
    pub moe: PathBuf,
    /// JSONL rows: `{"text"}`, `{"prompt", "target"}` or K-shot `{"question", ...}` (question).
    #[arg(long)]
    pub input: PathBuf,
    /// Statistics JSON (per module, per layer, overall).
    #[arg(long)]
    pub output: PathBuf,
    /// Also draw the mean load share per layer and expert as an SVG heatmap.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

/// Arguments of `moe lorahub`.
#[derive(Debug, Args)]
pub struct LoraHubArgs {
    /// The base decoder.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// The experts.
    #[command(flatten)]
    pub experts: ExpertArgs,
    /// K-shot JSONL (question/answer[/rationale]): the loss is the mean response-token loss.
    #[arg(long)]
    pub kshot: PathBuf,
    /// Objective evaluations (LoraHub's max_inference_step).
    #[arg(long, default_value_t = LoraHubOptions::default().budget)]
    pub budget: usize,
    /// L1 penalty λ on the mean absolute weight.
    #[arg(long, default_value_t = LoraHubOptions::default().l1)]
    pub l1: f64,
    /// Seed of the search.
    #[arg(long, default_value_t = LoraHubOptions::default().seed)]
    pub seed: u64,
    /// Output JSON (weights per expert, losses, the --adapter line that applies them).
    #[arg(long)]
    pub output: PathBuf,
}

/// Runs a `moe` operation.
pub fn run(command: MoeCommand, device: &str) -> anyhow::Result<()> {
    match command {
        MoeCommand::Build(a) => build(a.mixture, a.router_init, a.seed, device),
        MoeCommand::Arrow(a) => build(a, RouterInit::Arrow, default_seed(), device),
        MoeCommand::Train(a) => train(*a, device),
        MoeCommand::Routes(a) => routes(a, device),
        MoeCommand::Lorahub(a) => lorahub(a, device),
    }
}

fn load_model(
    model: &ModelArgs,
    precision: &PrecisionArgs,
    device: &str,
) -> anyhow::Result<LanguageModel> {
    precision.load(&model.model, &device_from_name(device)?)
}

fn build(a: MixtureArgs, init: RouterInit, seed: u64, device: &str) -> anyhow::Result<()> {
    check_output_dir(&a.output)?;
    let specs = a.experts.specs()?;
    let mut model = LanguageModel::load(&a.model.model, &device_from_name(device)?)?;
    let config = MoeConfig {
        balance_loss: a.balance_loss,
        z_loss: a.z_loss,
        ..MoeConfig::new(specs)
            .with_top_k(a.top_k)
            .with_router_init(init)
            .with_seed(seed)
    };
    let moe = Moe::from_config(&mut model.decoder, config)?;
    moe.save(&model.decoder, &a.output)?;
    eprintln!(
        "mixture of {} experts (top-{}, {:?} routers) over {} modules written to {}",
        moe.experts.len(),
        moe.config.top_k,
        moe.config.router_init,
        moe.modules.len(),
        a.output.display()
    );
    Ok(())
}

fn train(a: MoeTrainArgs, device: &str) -> anyhow::Result<()> {
    check_output_dir(&a.output)?;
    let inputs = run_dir::prepare(&a.output, a.resume, &a.data, a.eval.as_deref())?;
    let (checkpoints, train, eval) = (inputs.checkpoints, inputs.train, inputs.eval);
    let mut model = load_model(&a.model, &a.precision, device)?;
    let mut moe = Moe::load(&mut model.decoder, &a.moe)
        .with_context(|| format!("loading the mixture {}", a.moe.display()))?;
    if let Some(b) = a.balance_loss {
        moe.config.balance_loss = b;
    }
    if let Some(z) = a.z_loss {
        moe.config.z_loss = z;
    }
    let params = MoeTrainable::new(&moe, &model.decoder, a.router_only)?;
    let config = a.trainer.config(lm_core::train::LoraTrainConfig::new());
    let (trained, report) = LoraTrainer::new(&model, config.clone())
        .with_format(a.trainer.prompt_format())
        .with_checkpoints(&checkpoints, a.resume)
        .with_progress(true)
        .fit_trainable(params, &train, &eval)?;
    trained.apply(&mut model.decoder)?;
    run_dir::commit(&a.output, |dir| {
        moe.write_into(&model.decoder, dir)?;
        write_json(&dir.join("train_report.json"), &report)?;
        write_json(&dir.join("train_config.json"), &config)?;
        Ok(())
    })?;
    eprintln!(
        "trained {} of a {}-expert mixture for {} steps ({} parameters), loss {:.4} -> {:.4}{}; written to {}",
        if a.router_only {
            "the routers"
        } else {
            "routers and experts"
        },
        moe.experts.len(),
        report.steps,
        trained.values().len(),
        report.losses.first().copied().unwrap_or(f64::NAN),
        report.final_train_loss,
        match (report.base_eval_loss, report.eval_losses.last()) {
            (Some(b), Some((_, e))) => format!(", held-out {b:.4} (base) -> {e:.4}"),
            _ => String::new(),
        },
        a.output.display()
    );
    Ok(())
}

/// The text a row is routed on.
fn row_text(row: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let s = |k: &str| row.get(k).and_then(|v| v.as_str()).map(str::to_string);
    s("text")
        .or_else(|| {
            Some(format!(
                "{}{}",
                s("prompt")?,
                s("target").unwrap_or_default()
            ))
        })
        .or_else(|| s("question"))
}

fn routes(a: RoutesArgs, device: &str) -> anyhow::Result<()> {
    check_output_file("--output", &a.output)?;
    if let Some(svg) = &a.svg {
        check_output_file("--svg", svg)?;
    }
    let mut model = load_model(&a.model, &a.precision, device)?;
    let moe = Moe::load(&mut model.decoder, &a.moe)
        .with_context(|| format!("loading the mixture {}", a.moe.display()))?;
    let rows = read_objects(&a.input)?;
    let mut requests = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let Some(text) = row_text(row) else {
            bail!(
                "{} row {}: expected a \"text\", \"prompt\" or \"question\" field",
                a.input.display(),
                i + 1
            );
        };
        requests.push(ScoreRequest::text(model.encode(&text)?));
    }
    let recorders = moe.route(&mut model, &requests)?;
    let modules = recorders.stats();
    let experts: Vec<String> = moe.experts.iter().map(|e| e.name.clone()).collect();
    let layers = moe_router::layer_load_share(&modules, experts.len());
    let report = serde_json::json!({
        "experts": experts,
        "top_k": moe.config.top_k,
        "dtype": a.precision.precision,
        "rows": rows.len(),
        "overall": recorders.overall(),
        "layers": layers.iter().map(|(l, share)| serde_json::json!({"layer": l, "load_share": share})).collect::<Vec<_>>(),
        "modules": modules,
    });
    let heatmap = match &a.svg {
        Some(_) => {
            let rows: Vec<String> = layers.iter().map(|(l, _)| format!("layer {l}")).collect();
            let values: Vec<Vec<f64>> = layers.iter().map(|(_, s)| s.clone()).collect();
            Some(openexpert::report::plots::heatmap_svg(
                "Routing load share per layer and expert",
                &rows,
                &experts,
                &values,
            )?)
        }
        None => None,
    };
    if let (Some(svg), Some(text)) = (&a.svg, &heatmap) {
        write_atomic(svg, text.as_bytes())?;
    }
    write_json(&a.output, &report)?;
    if let Some(o) = recorders.overall() {
        eprintln!(
            "{} rows, {} tokens per module; overall load share {}; normalised entropy {:.3}",
            rows.len(),
            o.tokens,
            experts
                .iter()
                .zip(&o.load_share)
                .map(|(n, s)| format!("{n} {:.1}%", 100.0 * s))
                .collect::<Vec<_>>()
                .join(", "),
            o.normalized_entropy
        );
    }
    Ok(())
}

fn lorahub(a: LoraHubArgs, device: &str) -> anyhow::Result<()> {
    check_output_file("--output", &a.output)?;
    let specs = a.experts.specs()?;
    let mut model = load_model(&a.model, &a.precision, device)?;
    let kshot = kshot_eval::KShotSet::from_jsonl(&a.kshot)?;
    let examples: Vec<TrainExample> = kshot
        .items
        .iter()
        .map(|it| {
            let (prompt, response) = it.prompt_response();
            TrainExample::PromptResponse { prompt, response }
        })
        .collect();
    let options = LoraHubOptions {
        budget: a.budget,
        l1: a.l1,
        seed: a.seed,
        ..LoraHubOptions::default()
    };
    let result = openexpert::pipelines::rocket::experts::lorahub(
        &mut model,
        &specs,
        &examples,
        &lm_core::prompt::PromptFormat::default(),
        &options,
        true,
    )?;
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let adapter_line = format!(
        "--adapter {} --adapter-weight {}",
        specs
            .iter()
            .map(|s| s.path.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
        result
            .weights
            .iter()
            .map(|w| format!("{w:.4}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    write_json(
        &a.output,
        &serde_json::json!({
            "experts": names,
            "paths": specs.iter().map(|s| s.path.clone()).collect::<Vec<_>>(),
            "dtype": a.precision.precision,
            "result": result,
            "apply_with": adapter_line,
        }),
    )?;
    eprintln!(
        "LoraHub over {} experts: K-shot loss {:.4} (base {:.4}) after {} evaluations; weights {:?}\napply with: {adapter_line}",
        names.len(),
        result.loss,
        result.initial_loss,
        result.evaluations,
        result.weights
    );
    Ok(())
}
