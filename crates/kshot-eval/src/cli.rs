//! The `openexpert eval` and `openexpert rank-bank` subcommands. The binary mounts [`EvalArgs`]
//! and [`RankBankArgs`] and calls [`run_eval`] / [`run_rank_bank`] with its `--device`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lm_core::model::{ExpertMix, LanguageModel};
use lora_zoo::{LoraAdapter, LoraBank, SimilarityMode};

use crate::bank::evaluate_adapters;
use crate::error::{KshotError, Result};
use crate::eval::{EvalConfig, Experts, Metrics, evaluate};
use crate::extract::AnswerExtractor;
use crate::kshot::KShotSet;
use crate::prompt::PromptFormat;
use crate::rank::{AccuracySignal, PplSignal, RankConfig, rank_bank};
use crate::report::{evaluations_markdown, rank_markdown, write_atomic};
use crate::select::{SelectionConfig, ShortlistRule, TupleRule};

/// Prompt format names for the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// The model's chat template, shots as turns.
    Chat,
    /// lm-eval plain few-shot text.
    Plain,
}

/// Settings shared by `eval` and `rank-bank`.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// A GGUF file, an HF directory, or a default asset name.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub model: String,
    /// In-context shots drawn (seeded) from the set; the rest is evaluated.
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// Seed of the shot draw and of the bootstrap.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// Evaluate only the first N items (after the shots are drawn).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Prompt format.
    #[arg(long, value_enum, default_value_t = FormatArg::Chat)]
    pub format: FormatArg,
    /// Answer extractor steps, comma separated: answer-is, final-number, last-line, auto,
    /// letter:N, regex:PATTERN (last).
    #[arg(long, default_value = "answer-is,auto")]
    pub extractor: String,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Bootstrap resamples for standard errors.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Markdown table path (default: the output with a .md extension).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}

impl CommonArgs {
    fn config(&self) -> Result<EvalConfig> {
        Ok(EvalConfig {
            format: match self.format {
                FormatArg::Chat => PromptFormat::Chat { system: None },
                FormatArg::Plain => PromptFormat::plain(),
            },
            extractor: AnswerExtractor::parse(&self.extractor)?,
            max_new_tokens: self.max_new_tokens,
            stop: None,
            batch_size: self.batch_size,
            bootstrap_resamples: self.bootstrap,
            seed: self.seed,
            show_progress: true,
        })
    }

    fn markdown_path(&self, output: &Path) -> PathBuf {
        self.markdown
            .clone()
            .unwrap_or_else(|| output.with_extension("md"))
    }
}

/// `openexpert eval`: metrics of a model (and adapters) on a K-shot / task JSONL.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// A PEFT adapter to evaluate (repeat: each is evaluated on its own, packed in shared batches).
    #[arg(long = "adapter")]
    pub adapters: Vec<PathBuf>,
    /// With --adapter: evaluate the base model too.
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
    /// Report JSON.
    #[arg(long)]
    pub output: PathBuf,
}

/// `openexpert rank-bank`: Rocket expert selection from a bank on a K-shot set.
#[derive(Debug, Clone, clap::Args)]
pub struct RankBankArgs {
    /// Shared settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Bank directory (one PEFT adapter per sub-directory).
    #[arg(long)]
    pub bank: PathBuf,
    /// Only these adapters of the bank (comma separated names).
    #[arg(long, value_delimiter = ',')]
    pub adapters: Option<Vec<String>>,
    /// K-shot JSONL of the target task.
    #[arg(long)]
    pub kshot: PathBuf,
    /// Experts to choose (N).
    #[arg(long, default_value_t = 4)]
    pub experts: usize,
    /// Shortlist size (M).
    #[arg(long, default_value_t = 8)]
    pub shortlist: usize,
    /// Shortlist ranking.
    #[arg(long, value_enum, default_value_t = ShortlistRule::Lexicographic)]
    pub shortlist_rule: ShortlistRule,
    /// Tuple choice.
    #[arg(long, value_enum, default_value_t = TupleRule::Diversity)]
    pub tuple_rule: TupleRule,
    /// Adapter similarity for group diversity.
    #[arg(long, value_enum, default_value_t = SimilarityMode::Rocket)]
    pub similarity: SimilarityMode,
    /// Perplexity signal.
    #[arg(long, value_enum, default_value_t = PplSignal::ReasoningMean)]
    pub ppl_signal: PplSignal,
    /// Accuracy signal.
    #[arg(long, value_enum, default_value_t = AccuracySignal::ExactMatch)]
    pub accuracy_signal: AccuracySignal,
    /// Do not evaluate the base model alongside the bank.
    #[arg(long)]
    pub no_base: bool,
    /// Report JSON.
    #[arg(long)]
    pub output: PathBuf,
}

fn parse_metrics(spec: &str, items: &[crate::kshot::KShotItem]) -> Result<Metrics> {
    if spec.trim() == "auto" {
        return Ok(Metrics::auto(items));
    }
    let mut m = Metrics {
        exact_match: false,
        reasoning_ppl: false,
        answer_ppl: false,
        multiple_choice: false,
    };
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "em" => m.exact_match = true,
            "rppl" => m.reasoning_ppl = true,
            "ppl" => m.answer_ppl = true,
            "mc" => m.multiple_choice = true,
            other => {
                return Err(KshotError::InvalidConfig(format!(
                    "unknown metric {other:?}; expected em, rppl, ppl, mc or auto"
                )));
            }
        }
    }
    if m == (Metrics {
        exact_match: false,
        reasoning_ppl: false,
        answer_ppl: false,
        multiple_choice: false,
    }) {
        return Err(KshotError::InvalidConfig(
            "--metrics names no metric".into(),
        ));
    }
    Ok(m)
}

fn load_set(spec: &str) -> Result<KShotSet> {
    if spec == "gsm8k-test" {
        KShotSet::gsm8k_test()
    } else {
        KShotSet::from_jsonl(Path::new(spec))
    }
}

/// Runs `eval`.
pub fn run_eval(args: EvalArgs, device: &str) -> Result<()> {
    let config = args.common.config()?;
    let set = load_set(&args.task)?;
    let split = set.split(args.common.shots, args.common.seed)?;
    let mut test = split.test;
    if let Some(n) = args.common.limit {
        test.truncate(n);
    }
    let metrics = parse_metrics(&args.metrics, &test)?;
    let device = lm_core::device::device_from_name(device)?;
    let mut model = LanguageModel::load(&args.common.model, &device)?;
    let start = Instant::now();
    let evaluations = if args.adapters.is_empty() {
        evaluate(
            &model,
            Experts::Shared(&ExpertMix::Base),
            &["base".into()],
            &split.shots,
            &test,
            metrics,
            &config,
        )?
    } else {
        let loaded = args
            .adapters
            .iter()
            .map(|d| LoraAdapter::load(d))
            .collect::<lora_zoo::Result<Vec<_>>>()?;
        let refs: Vec<&LoraAdapter> = loaded.iter().collect();
        let names: Vec<String> = args
            .adapters
            .iter()
            .map(|d| {
                d.file_name().map_or_else(
                    || d.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                )
            })
            .collect();
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
        "model": args.common.model,
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
        &args.output,
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let md = format!(
        "# {} on {} ({} items, {} shots)\n\n{}",
        args.common.model,
        set.name,
        test.len(),
        split.shots.len(),
        evaluations_markdown(&evaluations)
    );
    write_atomic(&args.common.markdown_path(&args.output), md.as_bytes())?;
    eprint!("{}", evaluations_markdown(&evaluations));
    Ok(())
}

/// Runs `rank-bank`.
pub fn run_rank_bank(args: RankBankArgs, device: &str) -> Result<()> {
    let eval = args.common.config()?;
    let set = KShotSet::from_jsonl(&args.kshot)?;
    let split = set.split(args.common.shots, args.common.seed)?;
    let mut items = split.test;
    if let Some(n) = args.common.limit {
        items.truncate(n);
    }
    let bank = LoraBank::scan(&args.bank)?;
    let config = RankConfig {
        eval,
        selection: SelectionConfig {
            shortlist: args.shortlist,
            experts: args.experts,
            shortlist_rule: args.shortlist_rule,
            tuple_rule: args.tuple_rule,
            ..Default::default()
        },
        similarity: args.similarity,
        ppl_signal: args.ppl_signal,
        accuracy_signal: args.accuracy_signal,
        include_base: !args.no_base,
    };
    let device = lm_core::device::device_from_name(device)?;
    let mut model = LanguageModel::load(&args.common.model, &device)?;
    let report = rank_bank(
        &mut model,
        &bank,
        args.adapters.as_deref(),
        &split.shots,
        &items,
        &config,
    )?;
    let json = serde_json::json!({
        "model": args.common.model,
        "bank": args.bank,
        "kshot": args.kshot,
        "config": config,
        "report": report,
    });
    write_atomic(
        &args.output,
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    let md = format!(
        "# rank-bank: {} on {}\n\n{}",
        args.bank.display(),
        args.kshot.display(),
        rank_markdown(&report)
    );
    write_atomic(&args.common.markdown_path(&args.output), md.as_bytes())?;
    eprint!("{}", rank_markdown(&report));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Top {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Eval(EvalArgs),
        RankBank(RankBankArgs),
    }

    #[test]
    fn command_lines_parse() {
        Top::command().debug_assert();
        let t = Top::try_parse_from([
            "x",
            "eval",
            "--task",
            "t.jsonl",
            "--shots",
            "3",
            "--adapter",
            "a/",
            "--adapter",
            "b/",
            "--metrics",
            "em,rppl",
            "--format",
            "plain",
            "--output",
            "r.json",
        ])
        .unwrap();
        let Sub::Eval(e) = t.command else {
            panic!("expected eval")
        };
        assert_eq!((e.common.shots, e.adapters.len()), (3, 2));
        assert_eq!(e.common.markdown_path(&e.output), PathBuf::from("r.md"));
        let t = Top::try_parse_from([
            "x",
            "rank-bank",
            "--bank",
            "bank/",
            "--kshot",
            "k.jsonl",
            "--experts",
            "2",
            "--shortlist",
            "5",
            "--shortlist-rule",
            "rank-sum",
            "--tuple-rule",
            "combined-rank",
            "--similarity",
            "delta",
            "--output",
            "r.json",
        ])
        .unwrap();
        let Sub::RankBank(r) = t.command else {
            panic!("expected rank-bank")
        };
        assert_eq!((r.experts, r.shortlist), (2, 5));
        assert_eq!(r.tuple_rule, TupleRule::CombinedRank);
        assert!(Top::try_parse_from(["x", "eval", "--output", "r.json"]).is_err());
    }

    #[test]
    fn metric_specs() {
        let items = vec![crate::KShotItem::new("q", "1")];
        let auto = parse_metrics("auto", &items).unwrap();
        assert!(auto.exact_match && !auto.reasoning_ppl && !auto.multiple_choice);
        let m = parse_metrics("em, mc", &items).unwrap();
        assert!(m.exact_match && m.multiple_choice && !m.answer_ppl);
        assert!(parse_metrics("bleu", &items).is_err());
        assert!(parse_metrics(",", &items).is_err());
    }
}
