//! `openexpert rocket`: Rocket end to end ([`openexpert::pipelines::rocket`]): rank the bank on
//! the K-shot set, retrieve open data, build and fine-tune the mixture of the chosen experts,
//! compare it with the base, the best single expert, the uniform merge, Arrow, a plain LoRA
//! (and LoraHub when asked) on the test set, and write `RUN/report.md`.
//!
//! Options come from `--config FILE` (TOML, every key of [`RocketConfig`]); the flags below
//! override it, `--set section.key=value` overrides any key. The effective config is written to
//! `RUN/config.toml`; `--resume` alone continues the run in `RUN` with that config.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use openexpert::pipelines::rocket::{RocketConfig, RunOptions, run, run_config};

use crate::cli::config_overrides::{set_key, shell_line};

/// Arguments of `rocket`.
#[derive(Debug, Args)]
pub struct RocketArgs {
    /// TOML config (see examples/configs/); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// K-shot JSONL of the target task (question, answer, rationale).
    #[arg(long)]
    pub kshot: Option<PathBuf>,
    /// Use the first K items of --kshot.
    #[arg(long)]
    pub k: Option<usize>,
    /// Held-out test JSONL of the target task.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Evaluate on the first N test items.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// LoRA bank directory (one PEFT adapter per subdirectory).
    #[arg(long)]
    pub bank: Option<PathBuf>,
    /// Open pool: JSONL file or glob pattern (repeatable; quote globs).
    #[arg(long)]
    pub pool: Vec<String>,
    /// The base model.
    #[arg(long)]
    pub model: Option<String>,
    /// Expert selection signal: accuracy, vanilla-ppl, reasoning-ppl, combined,
    /// combined-diversity, random.
    #[arg(long)]
    pub signal: Option<String>,
    /// Experts N.
    #[arg(long)]
    pub experts: Option<usize>,
    /// Experts per token.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Training data: kshot-only, random, similar, similar-dedup.
    #[arg(long)]
    pub data_mode: Option<String>,
    /// Training-set size, K-shot included.
    #[arg(long)]
    pub budget: Option<usize>,
    /// Train the routers only.
    #[arg(long)]
    pub router_only: bool,
    /// Override any config key: `--set train.lr=1e-3 --set evaluation.contenders=["base","moe"]`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The run directory.
    #[arg(long)]
    pub output: PathBuf,
    /// Continue the run in --output (with its own config.toml unless --config / flags are given).
    #[arg(long)]
    pub resume: bool,
    /// Use --output even though it holds a run of another config (the stages the differences
    /// touch run again).
    #[arg(long)]
    pub force: bool,
}

impl RocketArgs {
    fn has_overrides(&self) -> bool {
        self.config.is_some()
            || self.kshot.is_some()
            || self.k.is_some()
            || self.test.is_some()
            || self.test_limit.is_some()
            || self.bank.is_some()
            || !self.pool.is_empty()
            || self.model.is_some()
            || self.signal.is_some()
            || self.experts.is_some()
            || self.top_k.is_some()
            || self.data_mode.is_some()
            || self.budget.is_some()
            || self.router_only
            || !self.set.is_empty()
    }

    /// The effective config: the file (or the run's own config with `--resume`), then flags.
    pub fn config(&self) -> anyhow::Result<RocketConfig> {
        let mut config = match (&self.config, self.resume) {
            (Some(path), _) => RocketConfig::from_file(path)?,
            (None, true) => run_config(&self.output)?,
            (None, false) => RocketConfig::default(),
        };
        let i = &mut config.inputs;
        if let Some(v) = &self.kshot {
            i.kshot = Some(v.clone());
        }
        if self.k.is_some() {
            i.k = self.k;
        }
        if let Some(v) = &self.test {
            i.test = Some(v.clone());
        }
        if self.test_limit.is_some() {
            i.test_limit = self.test_limit;
        }
        if let Some(v) = &self.bank {
            i.bank = Some(v.clone());
        }
        if !self.pool.is_empty() {
            i.pool = self.pool.clone();
        }
        if let Some(v) = &self.model {
            config.model = v.clone();
        }
        if let Some(v) = &self.signal {
            config.selection.signal = v.parse().map_err(anyhow::Error::msg)?;
        }
        if let Some(v) = self.experts {
            config.selection.experts = v;
        }
        if let Some(v) = self.top_k {
            config.moe.top_k = v;
        }
        if let Some(v) = &self.data_mode {
            config.data.mode = v.parse().map_err(anyhow::Error::msg)?;
        }
        if let Some(v) = self.budget {
            config.data.budget = v;
        }
        if self.router_only {
            config.train.router_only = true;
        }
        if !self.set.is_empty() {
            let mut doc: toml::Value = toml::Value::try_from(&config)?;
            for s in &self.set {
                set_key(&mut doc, s)?;
            }
            config =
                RocketConfig::from_toml_str(&toml::to_string(&doc)?).context("applying --set")?;
        }
        absolute_inputs(&mut config)?;
        Ok(config)
    }
}

/// Makes the input paths absolute (against the working directory), so that the run's
/// `config.toml` can be resumed from anywhere.
fn absolute_inputs(config: &mut RocketConfig) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let abs = |p: &mut Option<PathBuf>| {
        if let Some(x) = p
            && x.is_relative()
        {
            *x = cwd.join(&*x);
        }
    };
    let i = &mut config.inputs;
    abs(&mut i.kshot);
    abs(&mut i.test);
    abs(&mut i.bank);
    for spec in &mut i.pool {
        if std::path::Path::new(spec.as_str()).is_relative() {
            *spec = cwd.join(&*spec).display().to_string();
        }
    }
    Ok(())
}

/// Runs `rocket`.
pub fn run_cli(args: RocketArgs, device: &str) -> anyhow::Result<()> {
    if args.resume && !args.has_overrides() && !args.output.join("config.toml").is_file() {
        bail!(
            "--resume: {} holds no Rocket run (no config.toml); start one with --config or the input flags",
            args.output.display()
        );
    }
    let config = args.config()?;
    let command: Vec<String> = std::env::args().collect();
    let options = RunOptions {
        output: args.output.clone(),
        force: args.force || (args.resume && !args.has_overrides()),
        progress: true,
        device: device.to_string(),
        command: shell_line(&command),
    };
    let outcome = run(&config, &options)?;
    eprint!("{}", outcome.summary);
    eprintln!(
        "The expert: {} (use with --moe in eval, generate, score)",
        outcome.expert.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_overrides_nested_keys_with_toml_values_or_strings() {
        let mut doc = toml::Value::try_from(RocketConfig::default()).unwrap();
        set_key(&mut doc, "train.lr=1e-3").unwrap();
        set_key(&mut doc, "data.mode=random").unwrap();
        set_key(&mut doc, "evaluation.contenders=[\"base\",\"moe\"]").unwrap();
        let c = RocketConfig::from_toml_str(&toml::to_string(&doc).unwrap()).unwrap();
        assert_eq!(c.train.lr, 1e-3);
        assert_eq!(c.data.mode.to_string(), "random");
        assert_eq!(c.evaluation.contenders, vec!["base", "moe"]);
        assert!(set_key(&mut doc, "no-equals").is_err());
        set_key(&mut doc, "train.lrr=1").unwrap();
        assert!(RocketConfig::from_toml_str(&toml::to_string(&doc).unwrap()).is_err());
    }
}
