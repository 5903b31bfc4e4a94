//! Command-line interface: one module per subcommand.

mod adapters;
mod bench;
mod bench_train;
mod embed;
mod evolve;
mod fetch;
mod generate;
mod jsonl;
mod score;
mod train;

use clap::{Parser, Subcommand};

/// openexpert: task experts from open LoRA adapters, open data and a few labelled examples.
#[derive(Debug, Parser)]
#[command(name = "openexpert", version, about)]
pub struct Cli {
    /// Device to run on: cpu, flex, ndarray, wgpu, cuda (GPU ones need their cargo feature).
    #[arg(long, global = true, env = "OPENEXPERT_DEVICE", default_value = "cpu")]
    pub device: String,
    /// Worker threads for CPU kernels (default: all cores).
    #[arg(long, global = true, env = "OPENEXPERT_THREADS")]
    pub threads: Option<usize>,
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
    /// Measure scoring, decoding and embedding throughput (for benches/compare).
    BenchRuntime(bench::BenchArgs),
    /// Measure LoRA training throughput (for benches/compare/train).
    BenchTrain(bench_train::BenchTrainArgs),
    /// Data selection: DiverseEvol (evolve, k-center), K-shot retrieval + dedup (Rocket), baselines.
    Select {
        /// Sentence encoder used by `select retrieve` when no precomputed embeddings are given.
        #[arg(long, default_value = "minilm-l6-v2")]
        embedder: String,
        /// The selection to run.
        #[command(subcommand)]
        command: evolve::SelectCommand,
    },
    /// Fine-tune a LoRA adapter on a JSONL file (written as a PEFT adapter).
    Train(Box<train::TrainArgs>),
    /// Evaluate a model (and adapters) on a task JSONL: exact match, multiple choice,
    /// reasoning and answer perplexity.
    Eval(kshot_eval::cli::EvalArgs),
    /// Rank a LoRA bank on a K-shot set and choose diverse experts (Rocket).
    RankBank(kshot_eval::cli::RankBankArgs),
    /// LoRA adapters: inspect, combine, similarity.
    Lora {
        /// The adapter operation.
        #[command(subcommand)]
        command: lora_zoo::cli::LoraCommand,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(n) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("could not set {n} threads: {e}"))?;
    }
    match cli.command {
        Command::Fetch(a) => fetch::run(a),
        Command::Generate(a) => generate::run(a, &cli.device),
        Command::Score(a) => score::run(a, &cli.device),
        Command::Embed(a) => embed::run(a, &cli.device),
        Command::BenchRuntime(a) => bench::run(a, &cli.device),
        Command::BenchTrain(a) => bench_train::run(a, &cli.device),
        Command::Select { embedder, command } => match command {
            evolve::SelectCommand::Evolve(a) => evolve::run(a, &cli.device),
            evolve::SelectCommand::Other(c) => select(c, &embedder, &cli.device),
        },
        Command::Train(a) => train::run(*a, &cli.device),
        Command::Lora { command } => Ok(lora_zoo::cli::run(command)?),
        Command::Eval(a) => Ok(kshot_eval::cli::run_eval(a, &cli.device)?),
        Command::RankBank(a) => Ok(kshot_eval::cli::run_rank_bank(a, &cli.device)?),
    }
}

/// Runs a `select` subcommand, loading the sentence encoder only when retrieval needs it.
fn select(
    command: data_select::cli::SelectCommand,
    embedder: &str,
    device: &str,
) -> anyhow::Result<()> {
    use data_select::cli::SelectCommand;
    let needs_embedder = matches!(
        &command,
        SelectCommand::Retrieve {
            pool_embeddings: None,
            ..
        } | SelectCommand::Retrieve {
            kshot_embeddings: None,
            ..
        }
    );
    if needs_embedder {
        let device = lm_core::device::device_from_name(device)?;
        let encoder = openexpert::embedders::SentenceEmbedder::load(embedder, &device)?;
        Ok(data_select::cli::run_with_embedder(
            command,
            Some(&encoder),
        )?)
    } else {
        Ok(data_select::cli::run(command)?)
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub(crate) fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} rows, {per_sec}, eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
