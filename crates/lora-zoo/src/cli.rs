//! The `openexpert lora ...` subcommands: `inspect`, `combine`, `similarity` (model-free) and
//! `merge` (into the base model, exported as an HF checkpoint). The binary mounts [`LoraCommand`] as a
//! clap subcommand and calls [`run`].

use std::io::Write;
use std::path::PathBuf;

use crate::adapter::LoraAdapter;
use crate::bank::{CARD_FILE, LoraBank};
use crate::combine::{CombineMethod, CombineOptions, MajoritySign, combine};
use crate::error::{LoraError, Result};
use crate::merge::{DEFAULT_PROMPT, MergeOptions, VerifyOptions, load_named, merge_into_base};
use crate::similarity::{SimilarityMode, similarity_report};
use lm_core::io::hf_export::ExportDtype;

/// `openexpert lora <command>`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LoraCommand {
    /// Print an adapter's config summary, modules, ranks and parameter count.
    Inspect {
        /// The PEFT adapter directory.
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Combine adapters into a new PEFT adapter directory.
    Combine {
        /// Combination method.
        #[arg(long, value_enum)]
        method: CombineMethod,
        /// Adapter directories, comma separated.
        #[arg(long, value_delimiter = ',', required = true)]
        adapters: Vec<PathBuf>,
        /// One weight per adapter, comma separated (default: 1 each); negative weights subtract.
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
        weights: Option<Vec<f32>>,
        /// Output rank per module (SVD truncation); default exact for linear/cat, largest input rank otherwise.
        #[arg(long)]
        rank: Option<usize>,
        /// Output directory.
        #[arg(long)]
        output: PathBuf,
        /// Fraction of ΔW entries kept by ties / dare / dare_ties / magnitude_prune.
        #[arg(long, default_value_t = 0.5)]
        density: f32,
        /// Seed of DARE's random drops.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// TIES sign election.
        #[arg(long, value_enum, default_value_t = MajoritySign::Total)]
        majority_sign: MajoritySign,
        /// Global multiplier on the combined update.
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        lambda: f32,
    },
    /// Merge adapters (or a combination of them) into the base model and export an HF checkpoint
    /// directory (model.safetensors, config.json, tokenizer files, merge_report.json).
    Merge {
        /// Base model: GGUF file, HF directory, or asset name (smollm2-135m-instruct).
        #[arg(long)]
        model: String,
        /// Adapter directory (repeat for several, or comma separated).
        #[arg(long = "adapter", value_delimiter = ',', required = true)]
        adapters: Vec<PathBuf>,
        /// One weight per adapter, comma separated (default: 1 each); negative weights subtract.
        #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
        weights: Option<Vec<f32>>,
        /// Combination method (linear = exact weighted sum of the updates).
        #[arg(long, value_enum, default_value_t = CombineMethod::Linear)]
        method: CombineMethod,
        /// Truncate each module's combined update to this rank by SVD (default: the full update).
        #[arg(long)]
        rank: Option<usize>,
        /// Fraction of ΔW entries kept by ties / dare / dare_ties / magnitude_prune.
        #[arg(long, default_value_t = 0.5)]
        density: f32,
        /// Seed of DARE's random drops.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// TIES sign election.
        #[arg(long, value_enum, default_value_t = MajoritySign::Total)]
        majority_sign: MajoritySign,
        /// Global multiplier on the combined update.
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        lambda: f32,
        /// Output directory (must not exist or be empty, unless --force).
        #[arg(long)]
        output: PathBuf,
        /// Element type of the exported weights: f32, f16 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Replace a non-empty output directory.
        #[arg(long)]
        force: bool,
        /// Skip the merged-vs-unmerged logit check.
        #[arg(long)]
        no_verify: bool,
        /// Prompt of the logit check.
        #[arg(long)]
        prompt: Option<String>,
        /// Device of the logit check (cpu, wgpu, cuda).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Export a base model unchanged as an HF checkpoint directory (GGUF → HF conversion).
    Export {
        /// Base model: GGUF file, HF directory, or asset name.
        #[arg(long)]
        model: String,
        /// Output directory (must not exist or be empty, unless --force).
        #[arg(long)]
        output: PathBuf,
        /// Element type of the exported weights: f32, f16 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Replace a non-empty output directory.
        #[arg(long)]
        force: bool,
    },
    /// Pairwise similarity matrix of every adapter in a bank directory, as JSON.
    Similarity {
        /// Bank directory (one adapter per sub-directory).
        #[arg(long)]
        bank: PathBuf,
        /// rocket: per-factor |cos| (the paper's code); delta: gauge-invariant ΔW cosine.
        #[arg(long, value_enum, default_value_t = SimilarityMode::Rocket)]
        mode: SimilarityMode,
        /// Output JSON file.
        #[arg(long)]
        output: PathBuf,
    },
}

/// Runs a command, printing to stdout.
pub fn run(cmd: LoraCommand) -> Result<()> {
    run_to(cmd, &mut std::io::stdout())
}

fn w(out: &mut dyn Write, s: String) -> Result<()> {
    writeln!(out, "{s}").map_err(|e| LoraError::io("<stdout>", e))
}

/// Runs a command, printing to `out`.
pub fn run_to(cmd: LoraCommand, out: &mut dyn Write) -> Result<()> {
    match cmd {
        LoraCommand::Inspect { dir, json } => {
            let a = LoraAdapter::load(&dir)?;
            if json {
                let modules: Vec<_> = a
                    .modules
                    .iter()
                    .map(|(n, m)| {
                        serde_json::json!({"name": n, "rank": m.rank(), "d_in": m.d_in(), "d_out": m.d_out(),
                                           "alpha": m.alpha, "scale": m.scale})
                    })
                    .collect();
                let v = serde_json::json!({"config": a.config, "modules": modules, "num_params": a.num_params()});
                w(
                    out,
                    serde_json::to_string_pretty(&v).expect("json value serialises"),
                )?;
            } else {
                w(out, format!("adapter      {}", dir.display()))?;
                w(
                    out,
                    format!(
                        "base model   {}",
                        a.config.base_model_name_or_path.as_deref().unwrap_or("?")
                    ),
                )?;
                w(
                    out,
                    format!(
                        "r / alpha    {} / {}{}",
                        a.config.r,
                        a.config.lora_alpha,
                        if a.config.use_rslora { " (rsLoRA)" } else { "" }
                    ),
                )?;
                w(out, format!("targets      {:?}", a.target_suffixes()))?;
                w(out, format!("modules      {}", a.modules.len()))?;
                w(out, format!("parameters   {}", a.num_params()))?;
                for (n, m) in &a.modules {
                    w(
                        out,
                        format!(
                            "  {n:<48} r={:<3} [{} -> {}] scale={}",
                            m.rank(),
                            m.d_in(),
                            m.d_out(),
                            m.scale
                        ),
                    )?;
                }
            }
            Ok(())
        }
        LoraCommand::Combine {
            method,
            adapters,
            weights,
            rank,
            output,
            density,
            seed,
            majority_sign,
            lambda,
        } => {
            let loaded = adapters
                .iter()
                .map(|d| LoraAdapter::load(d))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&LoraAdapter> = loaded.iter().collect();
            let weights = weights.unwrap_or_else(|| vec![1.0; refs.len()]);
            let opts = CombineOptions {
                method,
                weights: weights.clone(),
                rank,
                density,
                seed,
                majority_sign,
                lambda,
            };
            let (combined, report) = combine(&refs, &opts)?;
            combined.save(&output)?;
            let card = serde_json::json!({
                "combined_from": adapters.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "method": method.name(), "weights": weights, "rank": rank, "density": density,
                "seed": seed, "lambda": lambda, "min_energy_kept": report.min_energy_kept,
            });
            let card_path = output.join(CARD_FILE);
            std::fs::write(
                &card_path,
                serde_json::to_string_pretty(&card).expect("json value serialises"),
            )
            .map_err(|e| LoraError::io(&card_path, e))?;
            w(
                out,
                format!(
                    "wrote {} ({} modules, max rank {}, min energy kept {:.6})",
                    output.display(),
                    report.modules,
                    report.max_rank,
                    report.min_energy_kept
                ),
            )
        }
        LoraCommand::Merge {
            model,
            adapters,
            weights,
            method,
            rank,
            density,
            seed,
            majority_sign,
            lambda,
            output,
            dtype,
            force,
            no_verify,
            prompt,
            device,
        } => {
            let named = load_named(&adapters)?;
            let opts = MergeOptions {
                combine: CombineOptions {
                    method,
                    weights: weights.unwrap_or_else(|| vec![1.0; named.len()]),
                    rank,
                    density,
                    seed,
                    majority_sign,
                    lambda,
                },
                dtype: dtype.parse::<ExportDtype>()?,
                force,
                verify: (!no_verify).then(|| VerifyOptions {
                    prompt: prompt.unwrap_or_else(|| DEFAULT_PROMPT.to_string()),
                    device,
                }),
                progress: true,
            };
            let report = merge_into_base(&model, &named, &opts, &output)?;
            w(
                out,
                format!(
                    "wrote {} ({} tensors, {:.1} MB {}, {} modules merged, {} in {:.2} s)",
                    output.display(),
                    report.tensors,
                    report.weights_bytes as f64 / 1e6,
                    report.dtype,
                    report.modules.len(),
                    report.method,
                    report.timings.merge_write_s
                ),
            )?;
            if let Some(v) = &report.verification {
                w(
                    out,
                    format!(
                        "max |Δlogit| merged vs unmerged: {:.3e} over {} tokens (max |logit| {:.2}, argmax agree: {}, tokenizer ids equal: {})",
                        v.max_abs_logit_diff,
                        v.tokens,
                        v.max_abs_logit,
                        v.argmax_agree,
                        v.tokenizer_ids_equal
                    ),
                )?;
            }
            Ok(())
        }
        LoraCommand::Export {
            model,
            output,
            dtype,
            force,
        } => {
            let dir = lm_core::io::hf_export::export_base(
                &model,
                &output,
                dtype.parse::<ExportDtype>()?,
                force,
            )?;
            w(out, format!("wrote {}", dir.display()))
        }
        LoraCommand::Similarity { bank, mode, output } => {
            let bank = LoraBank::scan(&bank)?;
            let loaded = bank.load_all()?;
            let refs: Vec<&LoraAdapter> = loaded.iter().map(|a| a.as_ref()).collect();
            let report = similarity_report(bank.names(), &refs, mode);
            let text = serde_json::to_string_pretty(&report).map_err(|e| LoraError::Serialize {
                what: output.display().to_string(),
                message: e.to_string(),
            })?;
            std::fs::write(&output, text).map_err(|e| LoraError::io(&output, e))?;
            w(
                out,
                format!(
                    "wrote {} ({} adapters, mode {:?})",
                    output.display(),
                    report.names.len(),
                    mode
                ),
            )
        }
    }
}
