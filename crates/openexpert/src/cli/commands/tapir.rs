//! `openexpert tapir`: TAPIR curriculum distillation ([`openexpert::pipelines::tapir`]) end to
//! end, or one stage at a time on JSONL.
//!
//! - `openexpert tapir --config tapir.toml --output RUN [--resume] [--force] [--set k=v]`: the
//!   whole run; `RUN/report.md` at the end. `--resume` alone continues `RUN` with its own
//!   `config.toml`; after a `kill -9` it replays the call cache and the finished round files.
//! - `openexpert tapir judge --input pairs.jsonl --output judged.jsonl`: pairwise scores in both
//!   orders (`score_a`, `score_b`, `diff`, `hard`, ...);
//! - `openexpert tapir classify --input x.jsonl --output y.jsonl`: task categories;
//! - `openexpert tapir refine --input x.jsonl --output y.jsonl`: task-aware refinement.
//!
//! The single stages take their role from `--config` (its `[judge]`, `[classifier]` or
//! `[teacher]` section) or from `--model` / `--url` / `--api-key-env`; `--cache DIR` replays and
//! stores calls.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use openexpert::pipelines::tapir::config::RoleSection;
use openexpert::pipelines::tapir::{
    LoadedModels, RunOptions, TapirConfig, chat_backend, run, run_config, stages,
};
use tapir_curriculum::prompted::{ChatClassifier, ChatJudge, ChatTeacher};

use crate::cli::config_overrides::{set_key, shell_line};
use crate::cli::jsonl::read_objects;

/// Arguments of `tapir`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TapirArgs {
    /// A single stage on JSONL instead of a whole run.
    #[command(subcommand)]
    pub stage: Option<TapirStage>,
    /// TOML config (see examples/configs/tapir-quick.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any config key: `--set curriculum.rounds=1 --set curriculum.alpha=[0.5]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The run directory.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Continue the run in --output (with its own config.toml unless --config / --set are given).
    #[arg(long)]
    pub resume: bool,
    /// Start --output over with this config although it holds a run of another one (its call
    /// cache is kept).
    #[arg(long)]
    pub force: bool,
}

/// A single TAPIR stage.
#[derive(Debug, Subcommand)]
pub enum TapirStage {
    /// Pairwise judge scores in both orders for rows {instruction, answer_a, answer_b} (or
    /// teacher / student); adds score_a, score_b, diff (= a − b, the MFD when a is the
    /// teacher), hard, winner, consistency and the raw outputs.
    Judge(StageArgs),
    /// Task categories of rows {instruction}; adds category, route and raw.
    Classify(StageArgs),
    /// Task-aware refinement of rows {instruction, response, category?}; adds refined and
    /// refined_used.
    Refine(StageArgs),
}

/// Arguments of a single stage.
#[derive(Debug, Args)]
pub struct StageArgs {
    /// Input JSONL.
    #[arg(long)]
    pub input: PathBuf,
    /// Output JSONL (the input rows with the stage's fields added).
    #[arg(long)]
    pub output: PathBuf,
    /// A TAPIR config whose role section (judge / classifier / teacher) and settings to use.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The role's model: a local model, or the served model's name with --url.
    #[arg(long)]
    pub model: Option<String>,
    /// An OpenAI-compatible endpoint's base URL up to /v1 (without it the model runs locally).
    #[arg(long)]
    pub url: Option<String>,
    /// The environment variable holding the endpoint's API key.
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// A call cache directory (replayed and filled).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// judge: asks per presentation order before a pair is left unscored.
    #[arg(long)]
    pub max_attempts: Option<usize>,
    /// judge: `hard` when diff >= this.
    #[arg(long)]
    pub delta: Option<f64>,
}

impl StageArgs {
    fn config(&self) -> anyhow::Result<TapirConfig> {
        let mut c = match &self.config {
            Some(p) => TapirConfig::from_file(p)?,
            None => TapirConfig::default(),
        };
        if let Some(n) = self.max_attempts {
            c.curriculum.mfd.pairwise.max_attempts = n;
        }
        if let Some(d) = self.delta {
            c.curriculum.mfd.delta = d;
        }
        Ok(c)
    }

    /// The role section with the flags applied.
    fn role<S: Clone>(&self, section: &RoleSection<S>) -> RoleSection<S> {
        let mut s = section.clone();
        if let Some(m) = &self.model {
            s.model = m.clone();
            s.url = self.url.clone().unwrap_or_default();
            s.adapters.clear();
        } else if let Some(u) = &self.url {
            s.url = u.clone();
        }
        if let Some(k) = &self.api_key_env {
            s.api_key_env = Some(k.clone());
        }
        s
    }
}

fn write_rows(
    path: &std::path::Path,
    rows: &[serde_json::Map<String, serde_json::Value>],
) -> anyhow::Result<()> {
    let mut out = String::new();
    for r in rows {
        out.push_str(&serde_json::to_string(r)?);
        out.push('\n');
    }
    atomic_fs::write_atomic(path, out.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn run_stage(stage: TapirStage, device: &str) -> anyhow::Result<()> {
    let (name, kind, args) = match &stage {
        TapirStage::Judge(a) => ("judge", stages::Stage::Judge, a),
        TapirStage::Classify(a) => ("classify", stages::Stage::Classify, a),
        TapirStage::Refine(a) => ("refine", stages::Stage::Refine, a),
    };
    let config = args.config()?.resolved();
    config.validate()?;
    let rows = read_objects(&args.input)?;
    if rows.is_empty() {
        bail!(
            "{}: no rows; expected one JSON object per line",
            args.input.display()
        );
    }
    stages::check_rows(kind, &rows).with_context(|| args.input.display().to_string())?;
    let cache = match &args.cache {
        Some(d) => Some(llm_client::CallCache::open(d)?),
        None => None,
    };
    let dev = lm_core::device::device_from_name(device)?;
    let mut loaded = LoadedModels::new();
    let (out, line) = match name {
        "judge" => {
            let b = chat_backend(
                "judge",
                &args.role(&config.judge),
                cache.as_ref(),
                &dev,
                &mut loaded,
                true,
            )?;
            let mut judge = ChatJudge::new(b, config.judge.sampling.clone());
            stages::judge_rows(&mut judge, rows, &config.curriculum.mfd)?
        }
        "classify" => {
            let b = chat_backend(
                "classifier",
                &args.role(&config.classifier),
                cache.as_ref(),
                &dev,
                &mut loaded,
                true,
            )?;
            let mut c = ChatClassifier::new(b, config.classifier.sampling.clone());
            stages::classify_rows(&mut c, rows)?
        }
        _ => {
            let tb = chat_backend(
                "teacher",
                &args.role(&config.teacher),
                cache.as_ref(),
                &dev,
                &mut loaded,
                true,
            )?;
            let cb = chat_backend(
                "classifier",
                &args.role(&config.classifier),
                cache.as_ref(),
                &dev,
                &mut loaded,
                true,
            )?;
            let mut t = ChatTeacher::new(tb, config.teacher.sampling.clone());
            let mut c = ChatClassifier::new(cb, config.classifier.sampling.clone());
            stages::refine_rows(&mut t, &mut c, rows)?
        }
    };
    write_rows(&args.output, &out)?;
    eprintln!("{line}; wrote {}", args.output.display());
    Ok(())
}

/// Runs `tapir`.
pub fn run_cli(args: TapirArgs, device: &str) -> anyhow::Result<()> {
    if let Some(stage) = args.stage {
        return run_stage(stage, device);
    }
    let Some(output) = args.output.clone() else {
        bail!(
            "tapir: --output RUN is required for a run (or give a stage: tapir judge | classify | refine)"
        );
    };
    let overrides = args.config.is_some() || !args.set.is_empty();
    if args.resume && !overrides && !output.join("config.toml").is_file() {
        bail!(
            "--resume: {} holds no TAPIR run (no config.toml); start one with --config",
            output.display()
        );
    }
    let mut config = match (&args.config, args.resume) {
        (Some(p), _) => TapirConfig::from_file(p)?,
        (None, true) => run_config(&output)?,
        (None, false) => TapirConfig::default(),
    };
    if !args.set.is_empty() {
        let mut doc = toml::Value::try_from(&config)?;
        for s in &args.set {
            set_key(&mut doc, s)?;
        }
        config = TapirConfig::from_toml_str(&toml::to_string(&doc)?).context("applying --set")?;
    }
    let command: Vec<String> = std::env::args().collect();
    let options = RunOptions {
        output: output.clone(),
        force: args.force,
        progress: true,
        device: device.to_string(),
        command: shell_line(&command),
    };
    let outcome = run(&config, &options)?;
    eprint!("{}", outcome.summary);
    if let Some(a) = outcome.adapter {
        eprintln!(
            "The student's adapter: {} (use with --adapter in generate, eval)",
            a.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("openexpert").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn run_and_stage_lines_parse() {
        let Command::Tapir(t) = parse(&[
            "tapir",
            "--config",
            "c.toml",
            "--output",
            "run",
            "--resume",
            "--set",
            "curriculum.rounds=1",
        ])
        .command
        else {
            panic!("expected tapir")
        };
        assert!(t.stage.is_none() && t.resume);
        assert_eq!(t.set, vec!["curriculum.rounds=1"]);
        let Command::Tapir(t) = parse(&[
            "tapir",
            "judge",
            "--input",
            "p.jsonl",
            "--output",
            "o.jsonl",
            "--url",
            "http://h/v1",
            "--model",
            "m",
        ])
        .command
        else {
            panic!("expected tapir")
        };
        let Some(super::TapirStage::Judge(a)) = t.stage else {
            panic!("expected judge")
        };
        let section = a.role(
            &openexpert::pipelines::tapir::TapirConfig::default()
                .resolved()
                .judge,
        );
        assert!(section.is_remote());
        assert_eq!(section.model, "m");
        // a stage without its required flags is refused
        assert!(Cli::try_parse_from(["openexpert", "tapir", "classify", "--input", "x"]).is_err());
    }
}
