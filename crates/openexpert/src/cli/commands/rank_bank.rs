//! `openexpert rank-bank`: Rocket expert selection. Every adapter of `--bank` is evaluated on
//! its own on the K-shot set (packed into shared batches), ranked, and a diverse tuple of
//! experts is chosen.

use std::path::PathBuf;
use std::sync::LazyLock;

use clap::Args;
use kshot_eval::rank::{AccuracySignal, PplSignal};
use kshot_eval::report::{rank_markdown, write_atomic};
use kshot_eval::{KShotSet, RankConfig, SelectionConfig, ShortlistRule, TupleRule, rank_bank};
use lora_zoo::{LoraBank, SimilarityMode};

use crate::cli::args::evaluation::EvalFlags;
use crate::cli::args::named;
use crate::cli::args::output::ReportOutput;

static DEFAULTS: LazyLock<RankConfig> = LazyLock::new(RankConfig::default);

/// Arguments of `rank-bank`.
#[derive(Debug, Clone, Args)]
pub struct RankBankArgs {
    /// Model, shots and generation settings.
    #[command(flatten)]
    pub eval: EvalFlags,
    /// Bank directory (one PEFT adapter per sub-directory), each evaluated on its own.
    #[arg(long)]
    pub bank: PathBuf,
    /// Only these adapters of the bank (comma separated names).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// K-shot JSONL of the target task.
    #[arg(long)]
    pub kshot: PathBuf,
    /// Experts to choose (N).
    #[arg(long, default_value_t = DEFAULTS.selection.experts)]
    pub experts: usize,
    /// Shortlist size (M).
    #[arg(long, default_value_t = DEFAULTS.selection.shortlist)]
    pub shortlist: usize,
    /// Shortlist ranking.
    #[arg(long, value_parser = named::<ShortlistRule>(), default_value_t = DEFAULTS.selection.shortlist_rule)]
    pub shortlist_rule: ShortlistRule,
    /// Tuple choice.
    #[arg(long, value_parser = named::<TupleRule>(), default_value_t = DEFAULTS.selection.tuple_rule)]
    pub tuple_rule: TupleRule,
    /// Adapter similarity for group diversity.
    #[arg(long, value_parser = named::<SimilarityMode>(), default_value_t = DEFAULTS.similarity)]
    pub similarity: SimilarityMode,
    /// Perplexity signal.
    #[arg(long, value_parser = named::<PplSignal>(), default_value_t = DEFAULTS.ppl_signal)]
    pub ppl_signal: PplSignal,
    /// Accuracy signal.
    #[arg(long, value_parser = named::<AccuracySignal>(), default_value_t = DEFAULTS.accuracy_signal)]
    pub accuracy_signal: AccuracySignal,
    /// Do not evaluate the base model alongside the bank.
    #[arg(long)]
    pub no_base: bool,
    /// Report JSON and Markdown table.
    #[command(flatten)]
    pub output: ReportOutput,
}

impl RankBankArgs {
    /// The ranking config these flags describe.
    pub fn config(&self) -> anyhow::Result<RankConfig> {
        Ok(RankConfig {
            eval: self.eval.config()?,
            selection: SelectionConfig {
                shortlist: self.shortlist,
                experts: self.experts,
                shortlist_rule: self.shortlist_rule,
                tuple_rule: self.tuple_rule,
                ..SelectionConfig::default()
            },
            similarity: self.similarity,
            ppl_signal: self.ppl_signal,
            accuracy_signal: self.accuracy_signal,
            include_base: !self.no_base,
        })
    }
}

/// Runs `rank-bank`.
pub fn run(args: RankBankArgs, device: &str) -> anyhow::Result<()> {
    let config = args.config()?;
    let set = KShotSet::from_jsonl(&args.kshot)?;
    let split = set.split(args.eval.shots, args.eval.seed)?;
    let mut items = split.test;
    args.eval.limit(&mut items);
    let bank = LoraBank::scan(&args.bank)?;
    let model_name = &args.eval.model.model;
    let device = lm_core::device::device_from_name(device)?;
    let mut model = args.eval.precision.load(model_name, &device)?;
    let report = rank_bank(
        &mut model,
        &bank,
        args.only.as_deref(),
        &split.shots,
        &items,
        &config,
    )?;
    let json = serde_json::json!({
        "model": model_name,
        "dtype": args.eval.precision.precision,
        "bank": args.bank,
        "kshot": args.kshot,
        "config": config,
        "report": report,
    });
    write_atomic(
        &args.output.output,
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let md = format!(
        "# rank-bank: {} on {}\n\n{}",
        args.bank.display(),
        args.kshot.display(),
        rank_markdown(&report)
    );
    write_atomic(&args.output.markdown_path(), md.as_bytes())?;
    eprint!("{}", rank_markdown(&report));
    Ok(())
}
