//! Stages 3-4 and the trained baselines: the mixture of the chosen experts (ALGORITHMS.md 1(b)
//! "Token-wise gated LoRA-MoE layer"), its fine-tuning on the stage-2 data, Arrow routing over
//! the same experts, a plain LoRA trained on the same data with the same optimiser, and
//! LoraHub's static weights.
//!
//! Training checkpoints go to the stage's work directory and are resumed from whenever they
//! exist (the directory is keyed by the stage fingerprint, so a checkpoint is only ever resumed
//! into the run that wrote it).

use std::path::{Path, PathBuf};

use lm_core::model::expert_pack::detach_experts;
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::prompt::PromptFormat;
use lm_core::train::{LoraTrainer, TrainConfig, TrainExample, TrainReport};
use moe_router::train::MoeTrainable;
use moe_router::{ExpertSpec, LoraHubOptions, LoraHubResult, Moe, MoeConfig, RouterInit};

use super::config::RocketConfig;
use super::error::{Result, RocketError};

/// The mixture directory inside a stage output.
pub const MIXTURE_DIR: &str = "mixture";
/// The adapter directory inside the LoRA baseline's output.
pub const ADAPTER_DIR: &str = "adapter";

/// The expert specs of `names` in `bank`.
pub fn specs(bank: &Path, names: &[String]) -> Vec<ExpertSpec> {
    names
        .iter()
        .map(|n| ExpertSpec {
            name: n.clone(),
            path: bank.join(n),
        })
        .collect()
}

/// Builds the mixture (`init` = the config's router init, or Arrow) and saves it to
/// `dir/mixture`.
///
/// # Errors
/// moe-router's errors as [`RocketError::Stage`].
pub fn build(
    model: &mut LanguageModel,
    experts: Vec<ExpertSpec>,
    config: &RocketConfig,
    init: RouterInit,
    dir: &Path,
) -> Result<()> {
    detach_experts(&mut model.decoder);
    let m = &config.moe;
    let cfg = MoeConfig {
        balance_loss: m.balance_loss,
        z_loss: m.z_loss,
        ..MoeConfig::new(experts)
            .with_top_k(m.top_k)
            .with_router_init(init)
            .with_seed(m.seed)
    };
    let stage = if init == RouterInit::Arrow {
        "arrow"
    } else {
        "moe"
    };
    let moe =
        Moe::from_config(&mut model.decoder, cfg).map_err(|e| RocketError::stage(stage, e))?;
    std::fs::create_dir_all(dir.join(MIXTURE_DIR)).map_err(|e| RocketError::io(dir, e))?;
    moe.write_into(&model.decoder, &dir.join(MIXTURE_DIR))
        .map_err(|e| RocketError::stage(stage, e))?;
    detach_experts(&mut model.decoder);
    Ok(())
}

/// The trainer of both fine-tunings (mixture and plain LoRA): the run's training config and
/// prompt format, checkpoints in `work/checkpoints` (resumed from when present), progress bars.
fn trainer<'m>(
    model: &'m LanguageModel,
    config: &TrainConfig,
    format: &PromptFormat,
    work: &Path,
    progress: bool,
) -> LoraTrainer<'m> {
    LoraTrainer::new(model, config.clone())
        .with_format(format.clone())
        .with_checkpoints(work.join("checkpoints"), true)
        .with_progress(progress)
}

fn write_report(dir: &Path, report: &TrainReport, config: &TrainConfig) -> Result<()> {
    atomic_fs::write_json(&dir.join("train_report.json"), report)
        .and_then(|()| atomic_fs::write_json(&dir.join("train_config.json"), config))
        .map_err(|e| RocketError::stage("train", e))
}

/// Fine-tunes the mixture saved in `mixture` on `train`, writing the trained mixture to
/// `dir/mixture` and the training report next to it; checkpoints in `work`.
///
/// # Errors
/// The trainer's and moe-router's errors as [`RocketError::Stage`].
#[allow(clippy::too_many_arguments)]
pub fn train_moe(
    model: &mut LanguageModel,
    mixture: &Path,
    train: &[TrainExample],
    config: &RocketConfig,
    format: &PromptFormat,
    work: &Path,
    dir: &Path,
    progress: bool,
) -> Result<TrainReport> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| RocketError::stage("train-moe", e);
    detach_experts(&mut model.decoder);
    let moe = Moe::load(&mut model.decoder, mixture).map_err(|e| err(e.into()))?;
    let params = MoeTrainable::new(&moe, &model.decoder, config.train.router_only)
        .map_err(|e| err(e.into()))?;
    let tc = config.train.train_config();
    let (trained, report) = trainer(model, &tc, format, work, progress)
        .fit_trainable(params, train, &[])
        .map_err(|e| err(e.into()))?;
    trained
        .apply(&mut model.decoder)
        .map_err(|e| err(e.into()))?;
    std::fs::create_dir_all(dir.join(MIXTURE_DIR)).map_err(|e| RocketError::io(dir, e))?;
    moe.write_into(&model.decoder, &dir.join(MIXTURE_DIR))
        .map_err(|e| err(e.into()))?;
    write_report(dir, &report, &tc)?;
    detach_experts(&mut model.decoder);
    Ok(report)
}

/// Trains the plain-LoRA baseline on `train` into `dir/adapter` (a PEFT adapter).
///
/// # Errors
/// The trainer's and lora-zoo's errors as [`RocketError::Stage`].
#[allow(clippy::too_many_arguments)]
pub fn train_lora(
    model: &mut LanguageModel,
    model_name: &str,
    train: &[TrainExample],
    config: &RocketConfig,
    format: &PromptFormat,
    work: &Path,
    dir: &Path,
    progress: bool,
) -> Result<TrainReport> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| RocketError::stage("train-lora", e);
    detach_experts(&mut model.decoder);
    let tc = config.train.train_config();
    let outcome = trainer(model, &tc, format, work, progress)
        .fit(train, &[])
        .map_err(|e| err(e.into()))?;
    let adapter = lora_zoo::adapter_from_trained(&outcome.weights, Some(model_name))
        .map_err(|e| err(e.into()))?;
    adapter
        .save(&dir.join(ADAPTER_DIR))
        .map_err(|e| err(e.into()))?;
    write_report(dir, &outcome.report, &tc)?;
    Ok(outcome.report)
}

/// LoraHub (Huang et al. 2023): CMA-ES over static expert weights minimising the mean
/// response-token loss on the K-shot set plus an L1 penalty; the experts stay attached to
/// `model` afterwards (callers detach).
///
/// # Errors
/// lora-zoo's, lm-core's and moe-router's errors as [`RocketError::Stage`].
pub fn lorahub(
    model: &mut LanguageModel,
    experts: &[ExpertSpec],
    kshot: &[TrainExample],
    format: &PromptFormat,
    options: &LoraHubOptions,
    progress: bool,
) -> Result<LoraHubResult> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| RocketError::stage("lorahub", e);
    detach_experts(&mut model.decoder);
    let adapters = moe_router::load_experts(&MoeConfig::new(experts.to_vec()), None)
        .map_err(|e| err(e.into()))?;
    let refs: Vec<&lora_zoo::LoraAdapter> = adapters.iter().collect();
    lora_zoo::apply::attach_adapters(&mut model.decoder, &refs).map_err(|e| err(e.into()))?;
    let config = TrainConfig::new(lm_core::train::LoraTrainConfig::new());
    let (tokenized, _) = lm_core::train::data::tokenize_examples(
        model,
        kshot,
        format,
        config.max_len.min(model.max_context()),
        config.overflow,
    )
    .map_err(|e| err(e.into()))?;
    let pad = model.eos_ids.first().copied().unwrap_or(0);
    let batches = lm_core::train::data::make_batches(
        &tokenized,
        config.batch_size,
        config.max_len,
        false,
        pad,
        None,
    );
    let targets: usize = batches.iter().map(|b| b.num_targets()).sum();
    let bar = lm_core::progress::bar_if(
        progress,
        options.budget as u64 + 1,
        "lorahub",
        "evaluations",
    );
    let loss = |w: &[f32]| -> f64 {
        let mix = ExpertMix::Static(w.to_vec());
        let nll: f64 = batches
            .iter()
            .map(|b| {
                f64::from(
                    lm_core::train::trainer::loss_sum_with(&model.decoder, b, &model.device, &mix)
                        .into_scalar::<f32>(),
                )
            })
            .sum();
        bar.inc(1);
        nll / targets.max(1) as f64
    };
    let result =
        moe_router::lorahub_search(adapters.len(), loss, options).map_err(|e| err(e.into()))?;
    bar.finish_and_clear();
    Ok(result)
}

/// The path of a stage output's mixture.
pub fn mixture_dir(stage_dir: &Path) -> PathBuf {
    stage_dir.join(MIXTURE_DIR)
}
