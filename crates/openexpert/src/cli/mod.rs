//! The `openexpert` command line: every command of the workspace, in one place.
//!
//! - [`args`]: option groups shared by several commands (`--model`, `--adapter`, outputs, the
//!   trainer's and the evaluator's flags), flattened into each command;
//! - [`commands`]: one module per command (`fetch`, `generate`, `score`, `embed`, `train`,
//!   `select ...`, `eval`, `rank-bank`, `rocket`, `tapir [judge|classify|refine]`, `lora ...`, `moe ...`, `serve`;
//!   `bench-runtime` and `bench-train` with the
//!   cargo feature `bench`).
//!
//! The libraries hold no command-line code: the commands call their plain functions over config
//! structs, and every default shown in `--help` is the library's own.

pub mod args;
pub mod commands;
mod config_overrides;
mod jsonl;
mod run_dir;

use clap::{Parser, Subcommand};

use args::model::DeviceArgs;
use commands::{
    embed, eval, fetch, generate, lora, moe, rank_bank, rocket, score, select, serve, tapir, train,
};

/// openexpert: task experts from open LoRA adapters, open data and a few labelled examples.
#[derive(Debug, Parser)]
#[command(name = "openexpert", version, about)]
pub struct Cli {
    /// Device and threads.
    #[command(flatten)]
    pub device: DeviceArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download and verify default assets (models) into OPENEXPERT_HOME.
    Fetch(fetch::FetchArgs),
    /// Generate text from a prompt.
    Generate(generate::GenerateArgs),
    /// Score texts or prompt/target pairs: per-row log-prob, token count and perplexity.
    Score(score::ScoreArgs),
    /// Embed texts to a .npy matrix (sentence encoder or mean-pooled decoder states).
    Embed(embed::EmbedArgs),
    /// Fine-tune a LoRA adapter on a JSONL file (written as a PEFT adapter).
    Train(Box<train::TrainArgs>),
    /// Data selection: DiverseEvol (evolve, k-center), K-shot retrieval + dedup (Rocket), baselines.
    Select {
        /// The selection to run.
        #[command(subcommand)]
        command: select::SelectCommand,
    },
    /// Evaluate a model (optionally with adapters) on a task JSONL: exact match, multiple
    /// choice, reasoning and answer perplexity.
    Eval(Box<eval::EvalArgs>),
    /// Rank a LoRA bank on a K-shot set and choose diverse experts (Rocket).
    RankBank(Box<rank_bank::RankBankArgs>),
    /// Rocket end to end: rank the bank on the K-shot set, retrieve open data, build and
    /// fine-tune a mixture of the chosen experts, compare it with the alternatives, write a report.
    Rocket(Box<rocket::RocketArgs>),
    /// TAPIR curriculum distillation from a local or OpenAI-compatible teacher and judge into a
    /// LoRA student (`--config tapir.toml --output RUN [--resume]`), or one stage on JSONL:
    /// judge, classify, refine.
    Tapir(Box<tapir::TapirArgs>),
    /// LoRA adapters: inspect, combine, merge, export, similarity.
    Lora {
        /// The adapter operation.
        #[command(subcommand)]
        command: lora::LoraCommand,
    },
    /// Mixtures of LoRA experts: build, arrow, train, routes, lorahub (Rocket stages 6-7).
    Moe {
        /// The mixture operation.
        #[command(subcommand)]
        command: moe::MoeCommand,
    },
    /// Serve a model (with adapters or a mixture) over an OpenAI-compatible HTTP API
    /// (/v1/models, /v1/chat/completions), batching concurrent requests.
    Serve(Box<serve::ServeArgs>),
    /// Measure scoring, decoding and embedding throughput (for benches/compare).
    #[cfg(feature = "bench")]
    BenchRuntime(commands::bench_runtime::BenchArgs),
    /// Measure LoRA training throughput (for benches/compare/train).
    #[cfg(feature = "bench")]
    BenchTrain(commands::bench_train::BenchTrainArgs),
}

/// The message of an error and its causes, joined by `: ` like anyhow's `{:#}`, without a cause
/// that the messages before it already show (many error types print their source in their own
/// message, sometimes followed by advice, which would otherwise show the cause twice).
pub fn error_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(n) = cli.device.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("could not set {n} threads: {e}"))?;
    }
    let device = cli.device.device.as_str();
    match cli.command {
        Command::Fetch(a) => fetch::run(a),
        Command::Generate(a) => generate::run(a, device),
        Command::Score(a) => score::run(a, device),
        Command::Embed(a) => embed::run(a, device),
        Command::Train(a) => train::run(*a, device),
        Command::Select { command } => select::run(command, device),
        Command::Eval(a) => eval::run(*a, device),
        Command::RankBank(a) => rank_bank::run(*a, device),
        Command::Rocket(a) => rocket::run_cli(*a, device),
        Command::Tapir(a) => tapir::run_cli(*a, device),
        Command::Lora { command } => lora::run(command, device),
        Command::Moe { command } => moe::run(command, device),
        Command::Serve(a) => serve::run(*a, device),
        #[cfg(feature = "bench")]
        Command::BenchRuntime(a) => commands::bench_runtime::run(a, device),
        #[cfg(feature = "bench")]
        Command::BenchTrain(a) => commands::bench_train::run(a, device),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("openexpert").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn error_message_shows_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "File exists");
        let e = anyhow::Error::new(atomic_fs::Error::Io {
            path: "out".into(),
            source: io,
        })
        .context("writing routes.svg");
        assert_eq!(
            error_message(&e),
            "writing routes.svg: I/O error on out: File exists"
        );
        // a cause shown mid-message (before advice) is not repeated either
        #[derive(Debug, thiserror::Error)]
        #[error("the judge endpoint is unreachable: {source}; check the server")]
        struct Down {
            source: std::io::Error,
        }
        let down = anyhow::Error::new(Down {
            source: std::io::Error::other("Connection refused"),
        })
        .context("setting up the judge");
        assert_eq!(
            error_message(&down),
            "setting up the judge: the judge endpoint is unreachable: Connection refused; check the server"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_message(&plain), "outer: inner");
    }

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn eval_and_rank_bank_lines_parse() {
        let Command::Eval(e) = parse(&[
            "eval",
            "--task",
            "t.jsonl",
            "--shots",
            "3",
            "--each-adapter",
            "a/",
            "--each-adapter",
            "b/",
            "--metrics",
            "em,rppl",
            "--format",
            "plain",
            "--output",
            "r.json",
        ])
        .command
        else {
            panic!("expected eval")
        };
        assert_eq!((e.eval.shots, e.each_adapter.len()), (3, 2));
        assert!(e.adapter.is_empty());
        assert_eq!(e.eval.model.model, lm_core::assets::DEFAULT_MODEL);
        assert_eq!(e.output.markdown_path(), std::path::PathBuf::from("r.md"));
        // no flag given: the library's evaluation config
        let config = e.eval.config().unwrap();
        let lib = kshot_eval::EvalConfig::default();
        assert_eq!(
            (
                config.max_new_tokens,
                config.batch_size,
                config.bootstrap_resamples
            ),
            (lib.max_new_tokens, lib.batch_size, lib.bootstrap_resamples)
        );
        assert_eq!(config.seed, lib.seed);
        assert_eq!(config.extractor, lib.extractor);
        assert_eq!(
            kshot_eval::AnswerExtractor::parse("answer-is,auto").unwrap(),
            lib.extractor,
            "--extractor's documented default"
        );

        let Command::RankBank(r) = parse(&[
            "rank-bank",
            "--bank",
            "bank/",
            "--kshot",
            "k.jsonl",
            "--only",
            "x,y",
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
        .command
        else {
            panic!("expected rank-bank")
        };
        assert_eq!((r.experts, r.shortlist), (2, 5));
        assert_eq!(
            r.only.as_deref(),
            Some(&["x".to_string(), "y".to_string()][..])
        );
        let c = r.config().unwrap();
        assert_eq!(c.selection.tuple_rule, kshot_eval::TupleRule::CombinedRank);
        assert_eq!(
            c.selection.shortlist_rule,
            kshot_eval::ShortlistRule::RankSum
        );
        assert_eq!(c.similarity, lora_zoo::SimilarityMode::Delta);
        assert!(c.include_base);
        assert!(Cli::try_parse_from(["openexpert", "eval", "--output", "r.json"]).is_err());
    }

    /// `--format` means the same in `train` and `eval`; `raw` is the old spelling of `plain`.
    #[test]
    fn format_is_chat_plain_or_raw_everywhere() {
        for (spelling, want) in [
            ("chat", args::format::FormatArg::Chat),
            ("plain", args::format::FormatArg::Plain),
            ("raw", args::format::FormatArg::Raw),
        ] {
            let Command::Train(t) = parse(&[
                "train", "--data", "d.jsonl", "--output", "o", "--format", spelling,
            ])
            .command
            else {
                panic!("expected train")
            };
            assert_eq!(t.trainer.optim.format, want);
        }
        let help = Cli::command()
            .find_subcommand_mut("eval")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("chat") && help.contains("plain") && help.contains("raw"),
            "{help}"
        );
    }

    /// `--device` is global: before or after the subcommand, and `lora merge` checks on it.
    #[test]
    fn device_is_global() {
        let cli = parse(&[
            "lora",
            "merge",
            "--adapter",
            "a",
            "--output",
            "o",
            "--device",
            "wgpu",
        ]);
        assert_eq!(cli.device.device, "wgpu");
        let cli = parse(&[
            "--device",
            "ndarray",
            "select",
            "kcenter",
            "--embeddings",
            "e.npy",
            "--k",
            "1",
            "--output",
            "p.json",
        ]);
        assert_eq!(cli.device.device, "ndarray");
    }
}
