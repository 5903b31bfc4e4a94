//! `openexpert lora ...`: PEFT adapters: `inspect`, `combine`, `similarity` (model-free), `merge`
//! (into the base model, exported as an HF checkpoint with a logit check) and `export` (a base
//! model unchanged, GGUF → HF).

use std::path::PathBuf;
use std::sync::LazyLock;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use lm_core::export::{ExportDtype, export_base};
use lora_zoo::bank::CARD_FILE;
use lora_zoo::combine::{CombineMethod, CombineOptions, MajoritySign, combine};
use lora_zoo::merge::{VerifyOptions, load_named, merge_into_base, plain_merge_options};
use lora_zoo::similarity::{SimilarityMode, similarity_report};
use lora_zoo::{AdapterLoadOptions, LoraAdapter, LoraBank};

use crate::cli::args::adapters::AdapterArgs;
use crate::cli::args::model::ModelArgs;
use crate::cli::args::named;
use atomic_fs::write_atomic;

/// The library's combination defaults (linear, density, seed, sign election, λ).
static DEFAULTS: LazyLock<CombineOptions> = LazyLock::new(|| plain_merge_options(0));

/// `openexpert lora <command>`.
#[derive(Debug, Subcommand)]
pub enum LoraCommand {
    /// Print an adapter's config summary, modules, ranks and parameter count.
    Inspect {
        /// The PEFT adapter directory.
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Refuse an adapter whose file holds factors for modules its config does not target
        /// (by default they are dropped with a warning, as PEFT ignores them).
        #[arg(long)]
        strict: bool,
    },
    /// Combine adapters into a new PEFT adapter directory.
    Combine(CombineArgs),
    /// Merge adapters (or a combination of them) into the base model and export an HF checkpoint
    /// directory (model.safetensors, config.json, tokenizer files, merge_report.json).
    Merge(MergeArgs),
    /// Export a base model unchanged as an HF checkpoint directory (GGUF → HF conversion).
    Export(ExportArgs),
    /// Pairwise similarity matrix of every adapter in a bank directory, as JSON.
    Similarity {
        /// Bank directory (one adapter per sub-directory).
        #[arg(long)]
        bank: PathBuf,
        /// rocket: per-factor |cos| (the paper's code); delta: gauge-invariant ΔW cosine.
        #[arg(long, value_parser = named::<SimilarityMode>(), default_value_t = SimilarityMode::default())]
        mode: SimilarityMode,
        /// Output JSON file.
        #[arg(long)]
        output: PathBuf,
    },
}

/// How adapters are combined (`combine`, `merge`).
#[derive(Debug, Clone, Args)]
pub struct CombineFlags {
    /// The adapters and their weights (at least one adapter).
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Output rank per module (SVD truncation); default exact for linear/cat, largest input rank
    /// otherwise.
    #[arg(long)]
    pub rank: Option<usize>,
    /// Fraction of ΔW entries kept by ties / dare / dare_ties / magnitude_prune.
    #[arg(long, default_value_t = DEFAULTS.density)]
    pub density: f32,
    /// Seed of DARE's random drops.
    #[arg(long, default_value_t = DEFAULTS.seed)]
    pub seed: u64,
    /// TIES sign election.
    #[arg(long, value_parser = named::<MajoritySign>(), default_value_t = DEFAULTS.majority_sign)]
    pub majority_sign: MajoritySign,
    /// Global multiplier on the combined update.
    #[arg(long, default_value_t = DEFAULTS.lambda, allow_negative_numbers = true)]
    pub lambda: f32,
}

impl CombineFlags {
    /// The combination these flags describe, with `method`.
    pub fn options(&self, method: CombineMethod) -> anyhow::Result<CombineOptions> {
        if self.adapter.moe.is_some() {
            bail!(
                "--moe routes a mixture per token and cannot be combined into one adapter; give the experts with --adapter (they are in MOE/experts/)"
            );
        }
        if self.adapter.is_empty() {
            bail!("give at least one --adapter");
        }
        Ok(CombineOptions {
            method,
            weights: self.adapter.weights()?,
            rank: self.rank,
            density: self.density,
            seed: self.seed,
            majority_sign: self.majority_sign,
            lambda: self.lambda,
        })
    }
}

/// Arguments of `lora combine`.
#[derive(Debug, Clone, Args)]
pub struct CombineArgs {
    /// Combination method.
    #[arg(long, value_parser = named::<CombineMethod>())]
    pub method: CombineMethod,
    /// Adapters, weights and method settings.
    #[command(flatten)]
    pub combine: CombineFlags,
    /// Output directory.
    #[arg(long)]
    pub output: PathBuf,
}

/// Arguments of `lora merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The base model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Combination method (linear = exact weighted sum of the updates).
    #[arg(long, value_parser = named::<CombineMethod>(), default_value_t = DEFAULTS.method)]
    pub method: CombineMethod,
    /// Adapters, weights and method settings.
    #[command(flatten)]
    pub combine: CombineFlags,
    /// Exported weights.
    #[command(flatten)]
    pub export: ExportFlags,
    /// Skip the merged-vs-unmerged logit check (run on --device).
    #[arg(long)]
    pub no_verify: bool,
    /// Prompt of the logit check (default: lora_zoo::merge::DEFAULT_PROMPT).
    #[arg(long)]
    pub prompt: Option<String>,
}

/// Where and how a checkpoint is exported (`merge`, `export`).
#[derive(Debug, Clone, Args)]
pub struct ExportFlags {
    /// Output directory (must not exist or be empty, unless --force).
    #[arg(long)]
    pub output: PathBuf,
    /// Element type of the exported weights: f32, f16 or bf16.
    #[arg(long, default_value = ExportDtype::default().safetensors_name())]
    pub dtype: ExportDtype,
    /// Replace a non-empty output directory.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `lora export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The base model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Exported weights.
    #[command(flatten)]
    pub export: ExportFlags,
}

/// Runs a `lora` subcommand; `device` runs `merge`'s logit check.
pub fn run(command: LoraCommand, device: &str) -> anyhow::Result<()> {
    match command {
        LoraCommand::Inspect { dir, json, strict } => inspect(&dir, json, strict),
        LoraCommand::Combine(a) => run_combine(a),
        LoraCommand::Merge(a) => merge(a, device),
        LoraCommand::Export(a) => {
            let e = &a.export;
            let dir = export_base(&a.model.model, &e.output, e.dtype, e.force)?;
            println!("wrote {}", dir.display());
            Ok(())
        }
        LoraCommand::Similarity { bank, mode, output } => {
            let bank = LoraBank::scan(&bank)?;
            let loaded = bank.load_all()?;
            let refs: Vec<&LoraAdapter> = loaded.iter().map(|a| a.as_ref()).collect();
            let report = similarity_report(bank.names(), &refs, mode);
            write_atomic(&output, serde_json::to_string_pretty(&report)?.as_bytes())?;
            println!(
                "wrote {} ({} adapters, mode {mode})",
                output.display(),
                report.names.len(),
            );
            Ok(())
        }
    }
}

fn inspect(dir: &std::path::Path, json: bool, strict: bool) -> anyhow::Result<()> {
    let (a, load) = LoraAdapter::load_with(dir, AdapterLoadOptions { strict })
        .with_context(|| format!("loading adapter {}", dir.display()))?;
    if json {
        let modules: Vec<_> = a
            .modules
            .iter()
            .map(|(n, m)| {
                serde_json::json!({"name": n, "rank": m.rank(), "d_in": m.d_in(), "d_out": m.d_out(),
                                   "alpha": m.alpha, "scale": m.scale})
            })
            .collect();
        let unmatched: Vec<_> = load
            .unmatched_pattern_keys
            .iter()
            .map(|(field, key)| serde_json::json!({"field": field, "key": key}))
            .collect();
        let v = serde_json::json!({"config": a.config, "modules": modules, "num_params": a.num_params(),
                                   "untargeted_dropped": load.untargeted.len(),
                                   "untargeted_modules": load.untargeted,
                                   "unmatched_pattern_keys": unmatched});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("adapter      {}", dir.display());
    println!(
        "base model   {}",
        a.config.base_model_name_or_path.as_deref().unwrap_or("?")
    );
    println!(
        "r / alpha    {} / {}{}",
        a.config.r,
        a.config.lora_alpha,
        if a.config.use_rslora { " (rsLoRA)" } else { "" }
    );
    println!("targets      {:?}", a.target_suffixes());
    println!("modules      {}", a.modules.len());
    println!("parameters   {}", a.num_params());
    if !load.untargeted.is_empty() {
        println!(
            "dropped      {} untargeted module(s) (not in target_modules / layers_to_transform)",
            load.untargeted.len()
        );
    }
    for (field, key) in &load.unmatched_pattern_keys {
        println!("unmatched    {field} key {key:?} (matches no module)");
    }
    for (n, m) in &a.modules {
        println!(
            "  {n:<48} r={:<3} [{} -> {}] scale={}",
            m.rank(),
            m.d_in(),
            m.d_out(),
            m.scale
        );
    }
    Ok(())
}

fn run_combine(a: CombineArgs) -> anyhow::Result<()> {
    let options = a.combine.options(a.method)?;
    let loaded = a.combine.adapter.load()?;
    let refs: Vec<&LoraAdapter> = loaded.iter().collect();
    let (combined, report) = combine(&refs, &options)?;
    combined.save(&a.output)?;
    let card = serde_json::json!({
        "combined_from": a.combine.adapter.adapters.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "method": a.method.name(), "weights": options.weights, "rank": options.rank,
        "density": options.density, "seed": options.seed, "lambda": options.lambda,
        "min_energy_kept": report.min_energy_kept,
    });
    write_atomic(
        &a.output.join(CARD_FILE),
        serde_json::to_string_pretty(&card)?.as_bytes(),
    )?;
    println!(
        "wrote {} ({} modules, max rank {}, min energy kept {:.6})",
        a.output.display(),
        report.modules,
        report.max_rank,
        report.min_energy_kept
    );
    Ok(())
}

fn merge(a: MergeArgs, device: &str) -> anyhow::Result<()> {
    let combine = a.combine.options(a.method)?;
    let named = load_named(&a.combine.adapter.adapters)?;
    let options = lora_zoo::merge::MergeOptions {
        combine,
        dtype: a.export.dtype,
        force: a.export.force,
        verify: (!a.no_verify).then(|| VerifyOptions {
            prompt: a
                .prompt
                .clone()
                .unwrap_or_else(|| VerifyOptions::default().prompt),
            device: device.to_string(),
        }),
        progress: true,
    };
    let output = &a.export.output;
    let report = merge_into_base(&a.model.model, &named, &options, output)?;
    println!(
        "wrote {} ({} tensors, {:.1} MB {}, {} modules merged, {} in {:.2} s)",
        output.display(),
        report.tensors,
        report.weights_bytes as f64 / 1e6,
        report.dtype,
        report.modules.len(),
        report.method,
        report.timings.merge_write_s
    );
    if let Some(v) = &report.verification {
        println!(
            "max |Δlogit| merged vs unmerged: {:.3e} over {} tokens (max |logit| {:.2}, argmax agree: {}, tokenizer ids equal: {})",
            v.max_abs_logit_diff, v.tokens, v.max_abs_logit, v.argmax_agree, v.tokenizer_ids_equal
        );
    }
    Ok(())
}
