//! TAPIR end to end (Yue et al. 2024, "Distilling Instruction-following Abilities of Large
//! Language Models with Task-aware Curriculum Planning"; ALGORITHMS.md section 3): a teacher,
//! a judge and a classifier (local lm-core models or OpenAI-compatible endpoints) distil
//! instruction following into a LoRA student over rounds of rising difficulty.
//!
//! The algorithms are model-free in [`tapir_curriculum`]; this module gives them their models
//! and a run directory:
//! - [`config`]: the TOML config ([`TapirConfig`]);
//! - [`backend`]: [`backend::LocalChat`] (an lm-core model with its chat template) and
//!   [`backend::RemoteChat`] (`llm_client::ChatClient`), both behind one on-disk call cache;
//! - [`student`]: [`student::LoraStudent`], the lm-core model plus a LoRA adapter continued
//!   round after round;
//! - [`inputs`]: instructions from JSONL;
//! - [`report`]: `report.md`, `report.json` and the plots;
//! - [`stages`]: judge, classify and refine on JSONL, one stage at a time.
//!
//! Why here and not in `tapir-curriculum`: the crate stays free of burn and HTTP (like
//! data-select), so its algorithms build and test in seconds with fakes; every model-dependent
//! part goes through its traits, as ARCHITECTURE.md prescribes, and the facade hosts the
//! pipelines (REVIEW.md 1.5).
//!
//! # Run directory
//! ```text
//! RUN/config.toml          the effective config (a run of another config is refused)
//! RUN/cache/calls/         every teacher / judge / classifier call (llm-client's CallCache)
//! RUN/prepare/             classes, teacher answers (tapir_curriculum::curriculum)
//! RUN/rounds/r{r}/         each round's files, train/adapter/ the student's PEFT adapter
//! RUN/report.md, report.json, plots/*.svg
//! ```
//! A `kill -9` at any point loses at most the calls in flight and the training steps since the
//! last checkpoint: `--resume` replays the cache and the finished round files and ends with the
//! same result.
//!
//! ```no_run
//! use openexpert::pipelines::tapir::{RunOptions, TapirConfig, run};
//! let config = TapirConfig::from_file("examples/configs/tapir-quick.toml".as_ref())?;
//! let outcome = run(&config, &RunOptions::new("tapir", "runs/tapir"))?;
//! println!("{}", outcome.summary);
//! # Ok::<(), openexpert::pipelines::tapir::TapirRunError>(())
//! ```

pub mod backend;
pub mod config;
pub mod error;
pub mod inputs;
pub mod report;
pub mod stages;
pub mod student;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use lm_core::assets::{FetchOptions, fetch, resolve_model};
use lm_core::model::LanguageModel;
use serde_json::Value;
use tapir_curriculum::chat::ChatBackend;
use tapir_curriculum::expand::DedupMeasure;
use tapir_curriculum::prompted::{ChatClassifier, ChatJudge, ChatTeacher};
use tapir_curriculum::similarity::{EmbeddingSimilarity, NearDuplicates, RougeL, TextEmbedder};
use tapir_curriculum::{Roles, run_curriculum};

pub use config::TapirConfig;
pub use error::{Result, TapirRunError};
pub use report::TapirReport;

use backend::{LocalChat, RemoteChat};
use config::{RoleIdentity, RoleSection};
use student::LoraStudent;

pub use super::RunOptions;

/// What [`run`] returns.
#[derive(Debug, Clone)]
pub struct TapirOutcome {
    /// The report.
    pub report: TapirReport,
    /// `RUN/report.md`.
    pub report_md: PathBuf,
    /// A few lines for the terminal.
    pub summary: String,
    /// The final student's PEFT adapter (`--adapter DIR` in `generate`, `eval`).
    pub adapter: Option<PathBuf>,
}

/// The config file a run directory keeps.
pub const CONFIG_FILE: &str = "config.toml";

/// Reads the config a run directory was made with.
///
/// # Errors
/// [`TapirRunError::RunDir`] when `dir` holds no run.
pub fn run_config(dir: &Path) -> Result<TapirConfig> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(TapirRunError::RunDir(format!(
            "{}: expected a TAPIR run directory with {CONFIG_FILE}, found none; start a run with --config",
            dir.display()
        )));
    }
    TapirConfig::from_file(&path)
}

/// Dotted keys whose values differ between two JSON documents.
fn differing_keys(a: &Value, b: &Value, prefix: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                differing_keys(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &p,
                    out,
                );
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// The keys in which `b` differs from `a`.
pub fn config_differences(a: &TapirConfig, b: &TapirConfig) -> Vec<String> {
    let mut out = Vec::new();
    differing_keys(&serde_json::json!(a), &serde_json::json!(b), "", &mut out);
    out
}

/// Makes sure a model named by `spec` is on disk, fetching a default asset on first use.
fn ensure_model(role: &'static str, spec: &str) -> Result<()> {
    match resolve_model(spec) {
        Ok(_) => Ok(()),
        Err(lm_core::LmError::Asset { .. }) => {
            eprintln!("fetching the model asset {spec} for the {role} (first run only)");
            fetch(&[spec.to_string()], &FetchOptions::default())
                .map_err(|e| TapirRunError::setup(role, spec, e))?;
            Ok(())
        }
        Err(e) => Err(TapirRunError::setup(role, spec, e)),
    }
}

/// What a run writes besides its config and call cache (removed by `--force`).
const RESULTS: [&str; 6] = [
    "prepare",
    "warmup",
    "rounds",
    "plots",
    "report.md",
    "report.json",
];

/// Checks the run directory and writes the config into it (see [`RunOptions::force`]).
fn prepare_run_dir(config: &TapirConfig, options: &RunOptions) -> Result<()> {
    let dir = &options.output;
    if dir.exists() && !dir.is_dir() {
        return Err(TapirRunError::RunDir(format!(
            "--output {}: expected a directory, found a file",
            dir.display()
        )));
    }
    if dir.join(CONFIG_FILE).is_file() {
        let previous = run_config(dir)?;
        let diff = config_differences(&previous, config);
        // A run that stopped before its first step (a model that could not be loaded, an
        // endpoint that was down) holds nothing to protect: the new config replaces its own.
        let started = RESULTS.iter().any(|sub| dir.join(sub).exists());
        if !diff.is_empty() {
            if !started {
                tracing::info!(
                    "{} holds a run that had not started yet; its config is replaced (differences: {})",
                    dir.display(),
                    diff.join(", ")
                );
            } else if !options.force {
                return Err(TapirRunError::RunDir(format!(
                    "{} holds a TAPIR run of another config (differences: {}). Pass --force to start it over with this config (its call cache is kept, so unchanged calls replay), --resume alone to continue it with its own config, or pick another --output",
                    dir.display(),
                    diff.join(", ")
                )));
            }
            for sub in RESULTS {
                let p = dir.join(sub);
                if p.is_dir() {
                    std::fs::remove_dir_all(&p).map_err(|e| TapirRunError::io(&p, e))?;
                } else if p.is_file() {
                    std::fs::remove_file(&p).map_err(|e| TapirRunError::io(&p, e))?;
                }
            }
        }
    } else if dir.is_dir()
        && std::fs::read_dir(dir)
            .map_err(|e| TapirRunError::io(dir, e))?
            .next()
            .is_some()
        && !options.force
    {
        return Err(TapirRunError::RunDir(format!(
            "{} exists, is not empty and holds no TAPIR run; pick another --output, or pass --force to use it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| TapirRunError::io(dir, e))?;
    atomic_fs::write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
    Ok(())
}

/// Local models already loaded, shared between roles that name the same one.
pub type LoadedModels = Vec<(RoleIdentity, Arc<dyn ChatBackend>)>;

/// The chat backend of a role: a local model (shared with an earlier role of `loaded` that
/// names the same one) or an endpoint client, answering from `cache` when given.
///
/// # Errors
/// The model cannot be fetched or loaded, or the endpoint settings are unusable.
pub fn chat_backend<S>(
    role: &'static str,
    section: &RoleSection<S>,
    cache: Option<&llm_client::CallCache>,
    device: &lm_core::burn::tensor::Device,
    loaded: &mut LoadedModels,
    progress: bool,
) -> Result<Arc<dyn ChatBackend>> {
    if section.is_remote() {
        let r = RemoteChat::new(role, section.endpoint(), cache.cloned())
            .map_err(|e| TapirRunError::setup(role, section.describe(), e))?
            .with_progress(progress);
        r.preflight()
            .map_err(|e| TapirRunError::setup(role, section.describe(), e))?;
        return Ok(Arc::new(r));
    }
    let id = section.identity();
    if let Some((_, b)) = loaded.iter().find(|(k, _)| *k == id) {
        return Ok(b.clone());
    }
    ensure_model(role, &section.model)?;
    eprintln!("loading the {role} {}", section.describe());
    let mut local = LocalChat::load(&section.model, &section.adapters, section.dtype, device)
        .map_err(|e| TapirRunError::Setup {
            role,
            at: section.describe(),
            source: e,
        })?
        .with_batch_size(section.batch_size)
        .with_progress(progress);
    if let Some(c) = cache {
        local = local.with_cache(c.clone());
    }
    let b: Arc<dyn ChatBackend> = Arc::new(local);
    loaded.push((id, b.clone()));
    Ok(b)
}

/// A sentence encoder as the expansion's embedding measure.
struct Encoder(crate::embedders::SentenceEmbedder);

impl TextEmbedder for Encoder {
    fn embed(&mut self, texts: &[String]) -> tapir_curriculum::Result<Vec<Vec<f32>>> {
        use data_select::embed::Embedder;
        let m = self.0.embed(texts).map_err(|e| {
            tapir_curriculum::TapirError::role(
                "embedder",
                self.0.model_id(),
                "embedding instructions",
                e,
            )
        })?;
        Ok(m.rows().into_iter().map(|r| r.to_vec()).collect())
    }
}

/// Runs TAPIR into `options.output` (see the module docs).
///
/// # Errors
/// [`TapirRunError`]: a bad config or input (checked before any model loads), a run directory
/// of another config without `force`, a role that cannot be set up or fails as a whole, a
/// judge that scores nothing.
pub fn run(config: &TapirConfig, options: &RunOptions) -> Result<TapirOutcome> {
    let started = Instant::now();
    config.validate()?;
    let resolved = config.resolved();
    let seeds = inputs::read_instructions(
        &config.data.seeds,
        config.data.seeds_per_file,
        config.data.seed,
    )?;
    let heldout = if config.data.heldout.is_empty() {
        Vec::new()
    } else {
        inputs::read_instructions(
            &config.data.heldout,
            config.data.heldout_per_file,
            config.data.seed,
        )?
    };
    if seeds.is_empty() {
        return Err(TapirRunError::Input {
            path: config.data.seeds.join(", ").into(),
            detail: "no seed instruction found".into(),
        });
    }
    // Held-out instructions never seed: drop seeds equal to one.
    let held: std::collections::HashSet<&str> = heldout.iter().map(|h| h.text.as_str()).collect();
    let seeds: Vec<_> = seeds
        .into_iter()
        .filter(|s| !held.contains(s.text.as_str()))
        .collect();
    prepare_run_dir(config, options)?;
    let run_dir = &options.output;

    let cache_dir = run_dir.join("cache").join("calls");
    let cache = backend::open_cache(&cache_dir)
        .map_err(|e| TapirRunError::setup("teacher", "call cache", e))?;
    let device = lm_core::device::device_from_name(&options.device)
        .map_err(|e| TapirRunError::setup("teacher", &options.device, e))?;
    let mut loaded = LoadedModels::new();
    let p = options.progress;
    let tb = chat_backend(
        "teacher",
        &resolved.teacher,
        Some(&cache),
        &device,
        &mut loaded,
        p,
    )?;
    let jb = chat_backend(
        "judge",
        &resolved.judge,
        Some(&cache),
        &device,
        &mut loaded,
        p,
    )?;
    let cb = chat_backend(
        "classifier",
        &resolved.classifier,
        Some(&cache),
        &device,
        &mut loaded,
        p,
    )?;
    let mut teacher = ChatTeacher::new(tb, resolved.teacher.sampling.clone());
    let mut judge = ChatJudge::new(jb, resolved.judge.sampling.clone());
    let mut classifier = ChatClassifier::new(cb, resolved.classifier.sampling.clone());
    ensure_model("student", &config.student.model)?;
    eprintln!(
        "loading the student local {}{}",
        config.student.model,
        match config.student.dtype {
            lm_core::model::Precision::F32 => String::new(),
            p => format!(" in {p}"),
        }
    );
    let mut student_model = LanguageModel::load(&config.student.model, &device)
        .map_err(|e| TapirRunError::setup("student", &config.student.model, e))?;
    student_model
        .set_precision(config.student.dtype)
        .map_err(|e| TapirRunError::setup("student", &config.student.model, e))?;
    if student_model.chat_template.is_none() {
        return Err(TapirRunError::setup(
            "student",
            &config.student.model,
            "the model has no chat template; the student answers and trains in chat format, so it needs an instruct model with one",
        ));
    }
    let mut student = LoraStudent::new(
        student_model,
        &config.student.model,
        config.student.train.config(),
        config.student.max_new_tokens,
        config.student.batch_size,
    )
    .with_progress(p);
    let mut dedup: Box<dyn NearDuplicates> = match config.curriculum.expansion.dedup {
        DedupMeasure::RougeL => Box::new(RougeL::default()),
        DedupMeasure::Embedding => {
            ensure_model("embedder", &config.dedup.embedder)?;
            let e = crate::embedders::SentenceEmbedder::load(&config.dedup.embedder, &device)
                .map_err(|e| TapirRunError::setup("embedder", &config.dedup.embedder, e))?;
            Box::new(EmbeddingSimilarity::new(Encoder(e)))
        }
    };

    let roles = Roles {
        teacher: &mut teacher,
        judge: &mut judge,
        classifier: &mut classifier,
        student: &mut student,
        dedup: dedup.as_mut(),
    };
    let mut notify = |line: &str| {
        if p {
            eprintln!("{line}");
        }
        tracing::info!("{line}");
    };
    let outcome = run_curriculum(
        run_dir,
        &seeds,
        &heldout,
        roles,
        &config.curriculum,
        &mut notify,
    )?;
    let rep = report::build(config, &outcome, options, started.elapsed().as_secs_f64());
    let report_md = report::write(run_dir, &rep)?;
    let summary = report::summary(&rep, &report_md);
    Ok(TapirOutcome {
        adapter: outcome.final_student.map(|d| d.join("adapter")),
        report: rep,
        report_md,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_dotted_keys() {
        let a = TapirConfig::default();
        let mut b = a.clone();
        b.curriculum.mfd.delta = 2.0;
        b.teacher.url = "http://h/v1".into();
        assert_eq!(
            config_differences(&a, &b),
            vec!["curriculum.mfd.delta", "teacher.url"]
        );
        assert!(config_differences(&a, &a).is_empty());
    }

    #[test]
    fn a_run_dir_of_another_config_is_refused_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let a = TapirConfig::default();
        let opts = RunOptions::new("tapir", tmp.path().join("run"));
        prepare_run_dir(&a, &opts).unwrap();
        // same config: fine
        prepare_run_dir(&a, &opts).unwrap();
        let mut b = a.clone();
        b.curriculum.seed = 7;
        // a run that never reached its first step (only config and cache): replaced
        std::fs::create_dir_all(opts.output.join("cache/calls")).unwrap();
        prepare_run_dir(&b, &opts).unwrap();
        assert_eq!(run_config(&opts.output).unwrap(), b);
        prepare_run_dir(&a, &opts).unwrap();
        std::fs::create_dir_all(opts.output.join("rounds/r0")).unwrap();
        std::fs::create_dir_all(opts.output.join("warmup/train")).unwrap();
        std::fs::create_dir_all(opts.output.join("cache/calls")).unwrap();
        let e = prepare_run_dir(&b, &opts).unwrap_err().to_string();
        assert!(
            e.contains("another config") && e.contains("curriculum.seed") && e.contains("--force"),
            "{e}"
        );
        // force: round files go, the cache stays, the new config is written
        let forced = RunOptions {
            force: true,
            ..opts.clone()
        };
        prepare_run_dir(&b, &forced).unwrap();
        assert!(!opts.output.join("rounds").exists());
        assert!(!opts.output.join("warmup").exists());
        assert!(opts.output.join("cache/calls").is_dir());
        assert_eq!(run_config(&opts.output).unwrap(), b);
        // a non-empty directory that holds no run
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("x"), "y").unwrap();
        let e = prepare_run_dir(&a, &RunOptions::new("tapir", &other))
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no TAPIR run"), "{e}");
    }
}
