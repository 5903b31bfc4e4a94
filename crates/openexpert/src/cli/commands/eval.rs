//! `openexpert eval`: metrics of a model on a task JSONL: exact match, multiple choice,
//! reasoning and answer perplexity.
//!
//! `--adapter` (repeatable) evaluates *one* expert, the adapters combined as in every command;
//! `--each-adapter` (repeatable) evaluates every adapter on its own, packed into shared batches;
//! `--with-base` adds the base model to either.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use kshot_eval::eval::{Experts, Metrics, evaluate};
use kshot_eval::report::{evaluations_markdown, write_atomic};
use kshot_eval::{KShotSet, evaluate_adapters};
use lm_core::model::ExpertMix;
use lora_zoo::LoraAdapter;

use crate::cli::args::adapters::{AdapterArgs, dir_name};
use crate::cli::args::evaluation::EvalFlags;
use crate::cli::args::output::ReportOutput;

/// Arguments of `eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Model, shots and generation settings.
    #[command(flatten)]
    pub eval: EvalFlags,
    /// Adapters combined into the one expert evaluated.
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// A PEFT adapter evaluated on its own (repeat: each is evaluated separately, packed in
    /// shared batches).
    #[arg(long, value_name = "DIR", conflicts_with = "adapters")]
    pub each_adapter: Vec<PathBuf>,
    /// With --adapter or --each-adapter: evaluate the base model too.
    #[arg(long)]
    pub with_base: bool,
    /// Task JSONL ({question, answer, rationale?, choices?}; GSM8K `#### N` answers accepted),
    /// or `gsm8k-test` for the fetched GSM8K test split.
    #[arg(long)]
    pub task: String,
    /// Metrics, comma separated: em (exact match), rppl (reasoning perplexity), ppl (answer
    /// perplexity), mc (multiple choice); `auto` picks what the items support.
    #[arg(long, default_value = "auto")]
    pub metrics: String,
    /// Report JSON and Markdown table.
    #[command(flatten)]
    pub output: ReportOutput,
}

/// The task set named by `--task`: `gsm8k-test` or a JSONL file.
fn load_set(spec: &str) -> kshot_eval::Result<KShotSet> {
    if spec == "gsm8k-test" {
        KShotSet::gsm8k_test()
    } else {
        KShotSet::from_jsonl(Path::new(spec))
    }
}

/// Runs `eval`.
pub fn run(args: EvalArgs, device: &str) -> anyhow::Result<()> {
    let config = args.eval.config()?;
    let set = load_set(&args.task)?;
    let split = set.split(args.eval.shots, args.eval.seed)?;
    let mut test = split.test;
    args.eval.limit(&mut test);
    let metrics = Metrics::parse(&args.metrics, &test)?;
    let model_name = &args.eval.model.model;
    let device = lm_core::device::device_from_name(device)?;
    let mut model = args.eval.precision.load(model_name, &device)?;
    let start = Instant::now();
    let evaluations = if args.each_adapter.is_empty() {
        let mix = args.adapter.apply(&mut model)?;
        let mut evaluations = Vec::new();
        let mut one = |mix: &ExpertMix, name: String| -> anyhow::Result<()> {
            evaluations.extend(evaluate(
                &model,
                Experts::Shared(mix),
                &[name],
                &split.shots,
                &test,
                metrics,
                &config,
            )?);
            Ok(())
        };
        if args.with_base && !args.adapter.is_empty() {
            one(&ExpertMix::Base, "base".into())?;
        }
        one(&mix, args.adapter.label()?)?;
        evaluations
    } else {
        let loaded = args
            .each_adapter
            .iter()
            .map(|d| LoraAdapter::load(d))
            .collect::<lora_zoo::Result<Vec<_>>>()?;
        let refs: Vec<&LoraAdapter> = loaded.iter().collect();
        let names: Vec<String> = args.each_adapter.iter().map(|d| dir_name(d)).collect();
        evaluate_adapters(
            &mut model,
            &names,
            &refs,
            args.with_base,
            &split.shots,
            &test,
            metrics,
            &config,
        )?
        .evaluations
    };
    let seconds = start.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "model": model_name,
        "dtype": args.eval.precision.precision,
        "task": args.task,
        "set": set.name,
        "items": test.len(),
        "shots": split.shots.len(),
        "metrics": metrics,
        "config": config,
        "seconds": seconds,
        "evaluations": evaluations,
    });
    write_atomic(
        &args.output.output,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let md = format!(
        "# {} ({}) on {} ({} items, {} shots)\n\n{}",
        model_name,
        args.eval.precision.precision,
        set.name,
        test.len(),
        split.shots.len(),
        evaluations_markdown(&evaluations)
    );
    write_atomic(&args.output.markdown_path(), md.as_bytes())?;
    eprint!("{}", evaluations_markdown(&evaluations));
    Ok(())
}
