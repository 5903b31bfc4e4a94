//! [`LoraTrainer`]: supervised LoRA fine-tuning of a [`LanguageModel`] with the base frozen.
//!
//! Each micro-batch runs the decoder on an autodiff device with the LoRA factors as fresh
//! gradient-tracked leaves; the loss is the summed negative log-likelihood of the response
//! tokens divided by the number of response tokens in the whole optimiser step (so gradient
//! accumulation gives exactly the gradient of one large batch). Logits are computed only at
//! the positions that predict a response token. The gradients go to a host-side AdamW.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::checkpoint::{self, CheckpointMeta};
use super::config::TrainConfig;
use super::data::{Batch, DatasetStats, TrainExample, make_batches, tokenize_examples};
use super::lora::LoraWeights;
use super::optim::{AdamW, AdamWParams, clip_global_norm, lr_factor, warmup_steps};
use super::trainable::{Trainable, gather_grads};
use crate::error::{LmError, Result};
use crate::model::{AttentionMask, Decoder, ExpertMix, LanguageModel, Precision};
use crate::progress;
use crate::prompt::PromptFormat;

/// One optimiser step, as reported to observers and the progress bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// 1-based step number.
    pub step: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Mean response-token loss of this step.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real (non-padding) tokens processed in this step.
    pub tokens: usize,
    /// Wall time of this step in seconds.
    pub seconds: f64,
}

/// What a finished run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Optimiser steps of the run (including those restored from a checkpoint).
    pub steps: usize,
    /// Step the run resumed from (0 for a fresh run).
    pub resumed_from: usize,
    /// Micro-batches per epoch.
    pub batches_per_epoch: usize,
    /// Training set statistics after tokenisation.
    pub train_data: DatasetStats,
    /// Held-out set statistics.
    pub eval_data: Option<DatasetStats>,
    /// Loss of every step.
    pub losses: Vec<f64>,
    /// Mean loss over all steps (what HF's Trainer reports as `train_loss`).
    pub mean_train_loss: f64,
    /// Mean loss of the last 10% of steps (at least one).
    pub final_train_loss: f64,
    /// `(step, held-out loss)` of every evaluation, the last at the end of training.
    pub eval_losses: Vec<(usize, f64)>,
    /// Held-out loss of the base model (before training), if a held-out set was given.
    pub base_eval_loss: Option<f64>,
    /// Real tokens per second over the steps run in this process.
    pub tokens_per_second: f64,
    /// Wall time of this process's training in seconds.
    pub seconds: f64,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// Precision of the frozen base the run trained on (`f32` for reports written before
    /// `--dtype` existed); the LoRA factors and the optimiser state are f32 whatever it is.
    #[serde(default)]
    pub precision: Precision,
}

/// The trained adapter and how training went.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The LoRA factors.
    pub weights: LoraWeights,
    /// The run's report.
    pub report: TrainReport,
}

/// Fine-tunes LoRA adapters on a frozen [`LanguageModel`].
///
/// ```no_run
/// use lm_core::model::LanguageModel;
/// use lm_core::train::{LoraTrainer, TrainConfig, LoraTrainConfig, TrainExample};
/// let device = lm_core::device::device_from_name("cpu")?;
/// let model = LanguageModel::load("smollm2-135m-instruct", &device)?;
/// let data = vec![TrainExample::PromptResponse { prompt: "2+2?".into(), response: "4".into() }];
/// let config = TrainConfig::new(LoraTrainConfig::new().with_r(8)).with_epochs(3);
/// let outcome = LoraTrainer::new(&model, config).fit(&data, &[])?;
/// println!("final loss {:.3}", outcome.report.final_train_loss);
/// # Ok::<(), lm_core::LmError>(())
/// ```
pub struct LoraTrainer<'a> {
    model: &'a LanguageModel,
    config: TrainConfig,
    format: PromptFormat,
    checkpoint_dir: Option<PathBuf>,
    resume: bool,
    progress: bool,
    observer: Option<StepObserver<'a>>,
    initial: Option<LoraWeights>,
}

/// A callback run after every optimiser step.
type StepObserver<'a> = Box<dyn FnMut(&StepLog) + 'a>;

impl<'a> LoraTrainer<'a> {
    /// A trainer with the model's chat template, no checkpoints and no progress bar.
    pub fn new(model: &'a LanguageModel, config: TrainConfig) -> Self {
        Self {
            model,
            config,
            format: PromptFormat::default(),
            checkpoint_dir: None,
            resume: false,
            progress: false,
            observer: None,
            initial: None,
        }
    }

    /// Start from these factors instead of a fresh initialisation (warm start, e.g. continuing
    /// from an earlier round's adapter). They must have the config's rank and the same modules
    /// as a fresh initialisation would; the optimiser state still starts fresh.
    pub fn with_initial_weights(mut self, weights: LoraWeights) -> Self {
        self.initial = Some(weights);
        self
    }

    /// How examples become text.
    pub fn with_format(mut self, format: PromptFormat) -> Self {
        self.format = format;
        self
    }

    /// Write checkpoints under `dir` (every `config.checkpoint_every` steps and at the end);
    /// with `resume`, continue from the newest one there.
    pub fn with_checkpoints(mut self, dir: impl Into<PathBuf>, resume: bool) -> Self {
        self.checkpoint_dir = Some(dir.into());
        self.resume = resume;
        self
    }

    /// Show a progress bar (loss, tokens/s, ETA) on stderr.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Call `f` after every optimiser step.
    pub fn with_observer(mut self, f: impl FnMut(&StepLog) + 'a) -> Self {
        self.observer = Some(Box::new(f));
        self
    }

    /// Trains a LoRA adapter (`config.lora`; from the initial weights when given) on `train`,
    /// evaluating the held-out loss on `eval` (may be empty).
    pub fn fit(mut self, train: &[TrainExample], eval: &[TrainExample]) -> Result<TrainOutcome> {
        let cfg = self.config.clone();
        let mut weights = LoraWeights::init(&self.model.decoder, &cfg.lora, cfg.seed)?;
        if let Some(initial) = self.initial.take() {
            if initial.config.r != cfg.lora.r || initial.slots != weights.slots {
                return Err(LmError::InvalidInput(format!(
                    "the initial LoRA weights (rank {}, {} modules) do not fit this training config \
                     (rank {}, {} modules): warm-start with weights trained under the same LoRA config",
                    initial.config.r,
                    initial.slots.len(),
                    cfg.lora.r,
                    weights.slots.len()
                )));
            }
            weights.values = initial.values;
        }
        let (weights, report) = self.fit_trainable(weights, train, eval)?;
        Ok(TrainOutcome { weights, report })
    }

    /// Trains any [`Trainable`] parameters (a LoRA, a mixture's routers and experts) starting
    /// from `params`, with this trainer's data handling, schedule, checkpoints and reports;
    /// returns the trained parameters and the report. `config.lora` is not used here.
    pub fn fit_trainable<P: Trainable>(
        mut self,
        mut weights: P,
        train: &[TrainExample],
        eval: &[TrainExample],
    ) -> Result<(P, TrainReport)> {
        let cfg = self.config.clone();
        if cfg.batch_size == 0 || cfg.grad_accum_steps == 0 {
            return Err(LmError::InvalidInput(format!(
                "batch_size and grad_accum_steps must be at least 1, found {} and {}",
                cfg.batch_size, cfg.grad_accum_steps
            )));
        }
        if !(cfg.lr.is_finite() && cfg.lr > 0.0) {
            return Err(LmError::InvalidInput(format!(
                "the learning rate must be a positive number, found {}",
                cfg.lr
            )));
        }
        let max_len = cfg.max_len.min(self.model.max_context());
        let (train_tok, train_stats) =
            tokenize_examples(self.model, train, &self.format, max_len, cfg.overflow)?;
        if train_tok.is_empty() {
            return Err(LmError::EmptyDataset {
                given: train.len(),
                too_long: train_stats.skipped_too_long.len(),
                no_response: train_stats.skipped_no_response.len(),
            });
        }
        let eval_tok = if eval.is_empty() {
            None
        } else {
            Some(tokenize_examples(
                self.model,
                eval,
                &self.format,
                max_len,
                cfg.overflow,
            )?)
        };
        let pad = self.model.eos_ids.first().copied().unwrap_or(0);
        let batches_of_epoch = |epoch: usize| {
            make_batches(
                &train_tok,
                cfg.batch_size,
                max_len,
                cfg.packing,
                pad,
                Some((cfg.seed, epoch)),
            )
        };
        let per_epoch = batches_of_epoch(0).len();
        let total_micro = match cfg.max_steps {
            Some(s) => s * cfg.grad_accum_steps,
            None => cfg.epochs.max(1) * per_epoch,
        };
        let total_steps = total_micro.div_ceil(cfg.grad_accum_steps);
        let warmup = warmup_steps(total_steps, cfg.warmup_ratio);
        let precision = self.model.decoder.precision();
        let fingerprint = fingerprint(&cfg, &self.format, &train_tok, weights.values(), precision);
        let slots = weights.slots();
        let mix = weights.mix();
        let num_params = weights.values().len();
        let mut optimizer = AdamW::new(num_params);
        let mut losses = Vec::new();
        let mut eval_losses = Vec::new();
        let mut start_step = 0;
        let mut last_checkpoint = None;
        if let (Some(dir), true) = (&self.checkpoint_dir, self.resume)
            && let Some(ck) = checkpoint::load_latest(dir)?
        {
            if ck.meta.fingerprint != fingerprint || ck.meta.slots != slots {
                return Err(LmError::Checkpoint {
                    path: dir.clone(),
                    detail: "it was written for another config, model, precision (`--dtype`) or \
                             training data; resume with the same ones, or start fresh in another \
                             directory"
                        .into(),
                });
            }
            start_step = ck.meta.step;
            if ck.values.len() != num_params {
                return Err(LmError::Checkpoint {
                    path: dir.clone(),
                    detail: format!(
                        "it holds {} values, this run trains {num_params}; start fresh in another directory",
                        ck.values.len()
                    ),
                });
            }
            weights.values_mut().copy_from_slice(&ck.values);
            optimizer = ck.optimizer;
            losses = ck.meta.losses;
            eval_losses = ck.meta.eval_losses;
            last_checkpoint = Some(checkpoint::list(dir)?.pop().map(|(_, p)| p));
            tracing::info!(step = start_step, "resuming from checkpoint");
        }
        let mut last_checkpoint = last_checkpoint.flatten();

        let eval_device = self.model.device.clone();
        let base_eval_loss = match &eval_tok {
            Some((ex, _)) if start_step == 0 => {
                let mut base = self.model.decoder.clone();
                Some(eval_loss(
                    &mut base,
                    None::<&P>,
                    ex,
                    &cfg,
                    pad,
                    &eval_device,
                )?)
            }
            _ => None,
        };

        let adev = self.model.device.clone().autodiff();
        let mut train_decoder = self.model.decoder.clone().to_device(&adev).no_grad();
        let bar = progress::bar_if(self.progress, total_steps as u64, "train", "steps");
        bar.set_position(start_step as u64);

        let started = Instant::now();
        let mut run_tokens = 0usize;
        let mut epoch_cache: Option<(usize, Vec<Batch>)> = None;
        for step in start_step..total_steps {
            let t0 = Instant::now();
            let micro: Vec<usize> = (step * cfg.grad_accum_steps
                ..((step + 1) * cfg.grad_accum_steps).min(total_micro))
                .collect();
            let mut step_batches = Vec::with_capacity(micro.len());
            for &g in &micro {
                let epoch = g / per_epoch;
                if epoch_cache.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    epoch_cache = Some((epoch, batches_of_epoch(epoch)));
                }
                let batches = &epoch_cache.as_ref().expect("filled above").1;
                step_batches.push((g, batches[g % per_epoch].clone()));
            }
            let step_targets: usize = step_batches.iter().map(|(_, b)| b.num_targets()).sum();
            let mut grads = vec![0f32; num_params];
            let mut loss_sum = 0f64;
            let mut tokens = 0usize;
            for (j, (g, batch)) in step_batches.iter().enumerate() {
                let dropout_seed = cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (*g as u64);
                let leaves = weights.attach_for_training(&mut train_decoder, &adev, dropout_seed);
                let nll = loss_sum_with(&train_decoder, batch, &adev, &mix);
                let mut loss = nll / step_targets as f64;
                if let Some(aux) = weights.aux_loss(&train_decoder, batch, &adev) {
                    // The auxiliary term is a mean per micro-batch: share it like the targets.
                    let share = batch.num_targets() as f64 / step_targets as f64;
                    loss = loss + aux * share;
                }
                let value = f64::from(loss.clone().into_scalar::<f32>());
                if !value.is_finite() {
                    return Err(LmError::NonFiniteLoss {
                        step: step + 1,
                        micro_batch: j,
                        examples: batch.examples.clone(),
                        last_checkpoint,
                    });
                }
                let gradients = loss.backward();
                let g = gather_grads(&leaves, &gradients);
                if let Some(bad) = g.iter().position(|x| !x.is_finite()) {
                    return Err(LmError::NonFiniteLoss {
                        step: step + 1,
                        micro_batch: j,
                        examples: batch.examples.clone(),
                        last_checkpoint: last_checkpoint.clone().or_else(|| {
                            tracing::warn!(index = bad, "non-finite gradient");
                            None
                        }),
                    });
                }
                grads.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
                loss_sum += value;
                tokens += batch.real_tokens;
            }
            let grad_norm = clip_global_norm(&mut grads, cfg.max_grad_norm);
            let lr = cfg.lr * lr_factor(step, total_steps, warmup, cfg.min_lr_ratio);
            optimizer.step(
                weights.values_mut(),
                &grads,
                AdamWParams {
                    lr,
                    beta1: cfg.beta1,
                    beta2: cfg.beta2,
                    eps: cfg.eps,
                    weight_decay: cfg.weight_decay,
                },
            );
            losses.push(loss_sum);
            run_tokens += tokens;
            let log = StepLog {
                step: step + 1,
                total_steps,
                loss: loss_sum,
                lr,
                grad_norm,
                tokens,
                seconds: t0.elapsed().as_secs_f64(),
            };
            let rate = run_tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {loss_sum:.4} | {rate:.0} tok/s"));
            bar.inc(1);
            tracing::debug!(
                step = log.step,
                loss = log.loss,
                lr,
                grad_norm,
                "train step"
            );
            if let Some(f) = self.observer.as_mut() {
                f(&log);
            }
            let done = step + 1;
            let last = done == total_steps;
            if let Some((ex, _)) = &eval_tok
                && (last || (cfg.eval_every > 0 && done % cfg.eval_every == 0))
            {
                let mut d = self.model.decoder.clone();
                let l = eval_loss(&mut d, Some(&weights), ex, &cfg, pad, &eval_device)?;
                eval_losses.push((done, l));
                bar.println(format!("step {done}: held-out loss {l:.4}"));
            }
            if let Some(dir) = &self.checkpoint_dir
                && (last || (cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0))
            {
                let meta = CheckpointMeta {
                    step: done,
                    fingerprint: fingerprint.clone(),
                    slots: slots.clone(),
                    losses: losses.clone(),
                    eval_losses: eval_losses.clone(),
                };
                last_checkpoint = Some(checkpoint::save(
                    dir,
                    &meta,
                    weights.values(),
                    &optimizer,
                    cfg.keep_checkpoints,
                )?);
            }
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        let tail = (losses.len() / 10).max(1).min(losses.len().max(1));
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let report = TrainReport {
            steps: total_steps,
            resumed_from: start_step,
            batches_per_epoch: per_epoch,
            train_data: train_stats,
            eval_data: eval_tok.map(|(_, s)| s),
            mean_train_loss: mean(&losses),
            final_train_loss: mean(&losses[losses.len().saturating_sub(tail)..]),
            losses,
            eval_losses,
            base_eval_loss,
            tokens_per_second: run_tokens as f64 / seconds.max(1e-9),
            seconds,
            trainable_params: num_params,
            precision,
        };
        Ok((weights, report))
    }
}

/// Hash of everything that determines the run's trajectory.
fn fingerprint(
    cfg: &TrainConfig,
    format: &PromptFormat,
    data: &[super::data::TokenizedExample],
    initial: &[f32],
    precision: Precision,
) -> String {
    let mut h = Sha256::new();
    // The base's precision changes the trajectory; f32 keeps the hash it had before `--dtype`,
    // so older checkpoints still resume.
    if precision != Precision::F32 {
        h.update(format!("precision:{precision}").as_bytes());
    }
    h.update(b"initial");
    for v in initial {
        h.update(v.to_le_bytes());
    }
    let mut c = cfg.clone();
    // Bookkeeping that does not change the trajectory may differ on resume.
    c.eval_every = 0;
    c.checkpoint_every = 0;
    c.keep_checkpoints = 0;
    h.update(serde_json::to_vec(&c).expect("config serialises"));
    h.update(format!("{format:?}").as_bytes());
    for e in data {
        h.update((e.ids.len() as u64).to_le_bytes());
        for (&id, &t) in e.ids.iter().zip(&e.target) {
            h.update(id.to_le_bytes());
            h.update([t as u8]);
        }
    }
    format!("{:x}", h.finalize())
}

/// The attention mask of a batch: causal, or block-diagonal causal for packed rows.
fn attention_mask(batch: &Batch, device: &Device) -> AttentionMask {
    let Some(seg) = &batch.segments else {
        return AttentionMask::Causal;
    };
    let (b, s) = (batch.batch, batch.seq);
    let mut hidden = vec![true; b * s * s];
    for r in 0..b {
        for q in 0..s {
            let sq = seg[r * s + q];
            for k in 0..=q {
                let visible = if sq == u32::MAX {
                    k == q // padding attends to itself only, so no row is fully masked
                } else {
                    seg[r * s + k] == sq
                };
                if visible {
                    hidden[(r * s + q) * s + k] = false;
                }
            }
        }
    }
    AttentionMask::Explicit(Box::new(Tensor::<4, Bool>::from_data(
        TensorData::new(hidden, [b, 1, s, s]),
        device,
    )))
}

/// Summed negative log-likelihood of the batch's targets under `decoder` (with whatever experts
/// are attached, mixed statically with coefficient 1): the training objective before division
/// by the number of targets. Differentiable on an autodiff device.
///
/// # Shapes
/// - returns `[1]`
pub fn loss_sum_of(decoder: &Decoder, batch: &Batch, device: &Device) -> Tensor<1> {
    loss_sum_with(decoder, batch, device, &ExpertMix::Static(vec![1.0]))
}

/// [`loss_sum_of`] with the experts mixed by `mix` (a mixture's routers, for example).
///
/// # Shapes
/// - returns `[1]`
pub fn loss_sum_with(
    decoder: &Decoder,
    batch: &Batch,
    device: &Device,
    mix: &ExpertMix,
) -> Tensor<1> {
    let (b, s) = (batch.batch, batch.seq);
    let ids: Vec<i64> = batch.tokens.iter().map(|&t| i64::from(t)).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), device);
    let positions =
        Tensor::<2, Int>::from_data(TensorData::new(batch.positions.clone(), [b, s]), device);
    let mask = attention_mask(batch, device);
    let hidden = decoder.forward_hidden(tokens, positions, &mask, None, mix);
    let d = hidden.dims()[2];
    let n = batch.predict_at.len();
    let at: Vec<i64> = batch.predict_at.iter().map(|&i| i as i64).collect();
    let at = Tensor::<1, Int>::from_data(TensorData::new(at, [n]), device);
    let rows = hidden.reshape([b * s, d]).select(0, at).reshape([1, n, d]);
    let logits = decoder.logits(rows).reshape([n, decoder.config.vocab_size]);
    let targets: Vec<i64> = batch.target_ids.iter().map(|&t| i64::from(t)).collect();
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), device);
    let picked = log_softmax(logits, 1).gather(1, targets);
    picked.sum().neg()
}

/// Mean response-token loss (nats per response token) of `examples` under the model with the
/// given LoRA weights attached (or the base model with `None`): the held-out metric of training.
pub fn evaluate_loss(
    model: &LanguageModel,
    weights: Option<&LoraWeights>,
    examples: &[TrainExample],
    config: &TrainConfig,
    format: &PromptFormat,
) -> Result<f64> {
    evaluate_loss_of(model, weights, examples, config, format)
}

/// [`evaluate_loss`] for any [`Trainable`] parameters (a mixture of experts, for example),
/// forwarded with their own [`Trainable::mix`].
pub fn evaluate_loss_of<P: Trainable>(
    model: &LanguageModel,
    weights: Option<&P>,
    examples: &[TrainExample],
    config: &TrainConfig,
    format: &PromptFormat,
) -> Result<f64> {
    let max_len = config.max_len.min(model.max_context());
    let (tokenized, _) = tokenize_examples(model, examples, format, max_len, config.overflow)?;
    let pad = model.eos_ids.first().copied().unwrap_or(0);
    let mut decoder = model.decoder.clone();
    eval_loss(
        &mut decoder,
        weights,
        &tokenized,
        config,
        pad,
        &model.device,
    )
}

/// Mean response-token loss over a tokenised set (no dropout, no gradients).
fn eval_loss<P: Trainable>(
    decoder: &mut Decoder,
    weights: Option<&P>,
    examples: &[super::data::TokenizedExample],
    cfg: &TrainConfig,
    pad: u32,
    device: &Device,
) -> Result<f64> {
    let mix = match weights {
        Some(w) => {
            w.attach(decoder, device);
            w.mix()
        }
        None => ExpertMix::Base,
    };
    let mut nll = 0f64;
    let mut count = 0usize;
    for batch in make_batches(
        examples,
        cfg.batch_size,
        cfg.max_len,
        cfg.packing,
        pad,
        None,
    ) {
        let v = f64::from(loss_sum_with(decoder, &batch, device, &mix).into_scalar::<f32>());
        nll += v;
        count += batch.num_targets();
    }
    if count == 0 {
        return Err(LmError::InvalidInput(
            "the held-out set has no response tokens".into(),
        ));
    }
    Ok(nll / count as f64)
}
