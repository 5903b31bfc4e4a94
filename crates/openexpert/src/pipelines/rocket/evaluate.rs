//! Stage 5: every contender on the held-out test set, with the same prompts, generation
//! settings and metrics (exact match with a bootstrap standard error; reasoning perplexity when
//! the test items have rationales), and the trained mixture's routing over the test set.

use kshot_eval::eval::{Evaluation, Experts, Metrics, evaluate};
use kshot_eval::{EvalConfig, KShotItem};
use lm_core::model::expert_pack::detach_experts;
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::prompt::PromptFormat;
use lm_core::score::ScoreRequest;
use lora_zoo::LoraAdapter;
use moe_router::Moe;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::config::{Contender, RocketConfig};
use super::error::{Result, RocketError};

/// What a contender runs on.
#[derive(Debug, Clone)]
pub enum Setup {
    /// No adapter.
    Base,
    /// Static combination of PEFT adapters with these weights.
    Adapters(Vec<PathBuf>, Vec<f32>),
    /// A saved mixture directory.
    Mixture(PathBuf),
}

/// The evaluation config of stage 5.
pub fn eval_config(config: &RocketConfig, format: PromptFormat) -> EvalConfig {
    let e = &config.evaluation;
    EvalConfig {
        format,
        max_new_tokens: e.max_new_tokens,
        batch_size: e.batch_size,
        bootstrap_resamples: e.bootstrap_resamples,
        show_progress: true,
        ..EvalConfig::default()
    }
}

/// Attaches `setup` to `model` and returns the mix to run with.
///
/// # Errors
/// lora-zoo's or moe-router's load errors as [`RocketError::Stage`].
pub fn attach(model: &mut LanguageModel, setup: &Setup) -> Result<ExpertMix> {
    detach_experts(&mut model.decoder);
    let err = |e: Box<dyn std::error::Error + Send + Sync>| RocketError::stage("evaluate", e);
    match setup {
        Setup::Base => Ok(ExpertMix::Base),
        Setup::Adapters(dirs, weights) => {
            let loaded = dirs
                .iter()
                .map(|d| LoraAdapter::load(d))
                .collect::<lora_zoo::Result<Vec<_>>>()
                .map_err(|e| err(e.into()))?;
            let refs: Vec<&LoraAdapter> = loaded.iter().collect();
            lora_zoo::apply::attach_adapters(&mut model.decoder, &refs)
                .map_err(|e| err(e.into()))?;
            Ok(ExpertMix::Static(weights.clone()))
        }
        Setup::Mixture(dir) => {
            let moe = Moe::load(&mut model.decoder, dir).map_err(|e| err(e.into()))?;
            Ok(moe.mix())
        }
    }
}

/// The metrics of the test set: exact match, reasoning perplexity when every item has a
/// rationale, multiple choice when every item has choices.
pub fn metrics(test: &[KShotItem]) -> Metrics {
    let auto = Metrics::auto(test);
    Metrics {
        exact_match: true,
        reasoning_ppl: auto.reasoning_ppl,
        answer_ppl: false,
        multiple_choice: auto.multiple_choice,
    }
}

/// Evaluates one contender.
///
/// # Errors
/// As [`attach`], and kshot-eval's errors as [`RocketError::Stage`].
pub fn run(
    model: &mut LanguageModel,
    contender: Contender,
    setup: &Setup,
    test: &[KShotItem],
    config: &EvalConfig,
) -> Result<Evaluation> {
    let mix = attach(model, setup)?;
    eprintln!("evaluating {contender} on {} test items", test.len());
    let mut out = evaluate(
        model,
        Experts::Shared(&mix),
        &[contender.to_string()],
        &[],
        test,
        metrics(test),
        config,
    )
    .map_err(|e| RocketError::stage("evaluate", e))?;
    detach_experts(&mut model.decoder);
    Ok(out.remove(0))
}

/// Mean load share per layer and expert of the trained mixture over the test items (prompt and
/// reference response).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Routing {
    /// Expert names (columns).
    pub experts: Vec<String>,
    /// `(layer, load share per expert)` rows.
    pub layers: Vec<(usize, Vec<f64>)>,
    /// Load share per expert over every routed module.
    pub overall: Vec<f64>,
    /// Normalised entropy of the gates (1 = uniform).
    pub normalized_entropy: f64,
    /// Tokens routed per module.
    pub tokens: u64,
}

/// Routes the test items through the mixture in `dir`.
///
/// # Errors
/// moe-router's and lm-core's errors as [`RocketError::Stage`].
pub fn routing(model: &mut LanguageModel, dir: &Path, test: &[KShotItem]) -> Result<Routing> {
    let err = |e: Box<dyn std::error::Error + Send + Sync>| RocketError::stage("routing", e);
    detach_experts(&mut model.decoder);
    let moe = Moe::load(&mut model.decoder, dir).map_err(|e| err(e.into()))?;
    let requests = test
        .iter()
        .map(|t| {
            let (p, r) = t.prompt_response();
            model.encode(&format!("{p}\n{r}")).map(ScoreRequest::text)
        })
        .collect::<lm_core::Result<Vec<_>>>()
        .map_err(|e| err(e.into()))?;
    let recorders = moe.route(model, &requests).map_err(|e| err(e.into()))?;
    let modules = recorders.stats();
    let experts: Vec<String> = moe.experts.iter().map(|e| e.name.clone()).collect();
    let layers = moe_router::layer_load_share(&modules, experts.len());
    let overall = recorders.overall();
    detach_experts(&mut model.decoder);
    Ok(Routing {
        experts,
        layers,
        overall: overall
            .as_ref()
            .map(|o| o.load_share.clone())
            .unwrap_or_default(),
        normalized_entropy: overall.as_ref().map_or(f64::NAN, |o| o.normalized_entropy),
        tokens: overall.as_ref().map_or(0, |o| o.tokens),
    })
}
