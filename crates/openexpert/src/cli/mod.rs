//! Command-line interface: one module per subcommand.

mod bench;
mod embed;
mod fetch;
mod generate;
mod jsonl;
mod score;

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
