//! Evaluating every adapter of a [`LoraBank`] against one loaded base model.
//!
//! The adapters are attached side by side as experts `0..E` of the base
//! ([`lora_zoo::apply::attach_adapters`]) and every `(adapter, item)` pair becomes one row;
//! rows of different adapters share batches through lm-core's per-row expert index, so the base
//! weights are read once per batch for all adapters and small evaluations fill the batches that
//! one adapter alone would leave mostly empty.

use std::time::Instant;

use lm_core::model::LanguageModel;
use lora_zoo::{LoraAdapter, LoraBank};
use serde::{Deserialize, Serialize};

use crate::error::{KshotError, Result};
use crate::eval::{EvalConfig, Evaluation, Experts, Metrics, evaluate};
use crate::kshot::KShotItem;

/// Name of the base model's row in bank reports.
pub const BASE_NAME: &str = "base";

/// A bank evaluation: one [`Evaluation`] per adapter (and the base, if asked).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BankEvaluation {
    /// Per adapter, in bank order; the base first when included.
    pub evaluations: Vec<Evaluation>,
    /// Wall-clock seconds of the evaluation (model work only, adapters already loaded).
    pub seconds: f64,
    /// The metrics computed.
    pub metrics: Metrics,
}

impl BankEvaluation {
    /// The evaluation named `name`.
    pub fn get(&self, name: &str) -> Option<&Evaluation> {
        self.evaluations.iter().find(|e| e.name == name)
    }
}

/// Loads the adapters `names` of `bank` (all when `None`), attaches them to `model` and evaluates
/// them (plus the base when `include_base`) on `items`, rows packed across adapters. The adapters
/// stay attached as experts `0..E` in `names` order.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_bank(
    model: &mut LanguageModel,
    bank: &LoraBank,
    names: Option<&[String]>,
    include_base: bool,
    shots: &[KShotItem],
    items: &[KShotItem],
    metrics: Metrics,
    config: &EvalConfig,
) -> Result<BankEvaluation> {
    let names: Vec<String> = match names {
        Some(n) => n.to_vec(),
        None => bank.names(),
    };
    if names.is_empty() {
        return Err(KshotError::EmptySet {
            what: format!("the bank at {}", bank.root().display()),
        });
    }
    let loaded = names
        .iter()
        .map(|n| bank.load(n))
        .collect::<lora_zoo::Result<Vec<_>>>()?;
    let refs: Vec<&LoraAdapter> = loaded.iter().map(|a| a.as_ref()).collect();
    evaluate_adapters(
        model,
        &names,
        &refs,
        include_base,
        shots,
        items,
        metrics,
        config,
    )
}

/// [`evaluate_bank`] for adapters already in memory.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_adapters(
    model: &mut LanguageModel,
    names: &[String],
    adapters: &[&LoraAdapter],
    include_base: bool,
    shots: &[KShotItem],
    items: &[KShotItem],
    metrics: Metrics,
    config: &EvalConfig,
) -> Result<BankEvaluation> {
    if names.len() != adapters.len() {
        return Err(KshotError::InvalidConfig(format!(
            "expected one name per adapter ({}), found {}",
            adapters.len(),
            names.len()
        )));
    }
    lora_zoo::apply::attach_adapters(&mut model.decoder, adapters)?;
    let mut arm_names: Vec<String> = Vec::new();
    let mut experts: Vec<Option<usize>> = Vec::new();
    if include_base {
        arm_names.push(BASE_NAME.into());
        experts.push(None);
    }
    for (i, n) in names.iter().enumerate() {
        arm_names.push(n.clone());
        experts.push(Some(i));
    }
    let start = Instant::now();
    let evaluations = evaluate(
        model,
        Experts::PerRow(&experts),
        &arm_names,
        shots,
        items,
        metrics,
        config,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    tracing::info!(
        adapters = names.len(),
        items = items.len(),
        seconds,
        "bank evaluated"
    );
    Ok(BankEvaluation {
        evaluations,
        seconds,
        metrics,
    })
}
