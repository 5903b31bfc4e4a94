//! The whole Rocket ranking of a bank on a K-shot set: packed bank evaluation, adapter
//! similarity, shortlist, tuple choice; one [`RankReport`] with every signal per adapter.

use lm_core::model::LanguageModel;
use lora_zoo::{LoraAdapter, LoraBank, SimilarityMode, similarity_matrix};
use serde::{Deserialize, Serialize};

use crate::bank::{BASE_NAME, BankEvaluation, evaluate_bank};
use crate::error::{KshotError, Result};
use crate::eval::{EvalConfig, Evaluation, Metrics};
use crate::kshot::KShotItem;
use crate::select::{AdapterInput, Selection, SelectionConfig, select_experts};

/// Which perplexity drives the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PplSignal {
    /// Mean of per-item reasoning perplexities (Rocket's code).
    #[default]
    ReasoningMean,
    /// Token-pooled reasoning perplexity.
    ReasoningPooled,
    /// Mean of per-item bare-answer perplexities (Rocket's "vanilla" ablation).
    AnswerMean,
}

lm_core::named_enum!(PplSignal, "perplexity signal", {
    ReasoningMean => "reasoning-mean",
    ReasoningPooled => "reasoning-pooled",
    AnswerMean => "answer-mean",
});

/// Which accuracy drives the ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccuracySignal {
    /// Generative exact match.
    #[default]
    ExactMatch,
    /// Multiple-choice `acc` (needs choices).
    MultipleChoice,
}

lm_core::named_enum!(AccuracySignal, "accuracy signal", { ExactMatch => "exact-match", MultipleChoice => "multiple-choice" });

/// Settings of [`rank_bank`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankConfig {
    /// Evaluation settings.
    pub eval: EvalConfig,
    /// Selection settings.
    pub selection: SelectionConfig,
    /// Adapter similarity for group diversity.
    pub similarity: SimilarityMode,
    /// Perplexity signal.
    pub ppl_signal: PplSignal,
    /// Accuracy signal.
    pub accuracy_signal: AccuracySignal,
    /// Also evaluate the base model (reported, not ranked).
    pub include_base: bool,
}

impl Default for RankConfig {
    fn default() -> Self {
        Self {
            eval: EvalConfig::default(),
            selection: SelectionConfig::default(),
            similarity: SimilarityMode::Rocket,
            ppl_signal: PplSignal::default(),
            accuracy_signal: AccuracySignal::default(),
            include_base: true,
        }
    }
}

/// One adapter's signals in a [`RankReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterSignals {
    /// Adapter (or `base`).
    pub name: String,
    /// Exact-match accuracy.
    pub accuracy: Option<f64>,
    /// Its bootstrap standard error.
    pub accuracy_stderr: Option<f64>,
    /// Items without an extractable answer.
    pub unextracted: Option<usize>,
    /// Multiple-choice acc / acc_norm.
    pub mc_acc: Option<f64>,
    /// Multiple-choice acc_norm.
    pub mc_acc_norm: Option<f64>,
    /// Mean of per-item reasoning perplexities.
    pub reasoning_ppl_mean: Option<f64>,
    /// Token-pooled reasoning perplexity.
    pub reasoning_ppl_pooled: Option<f64>,
    /// Mean of per-item answer perplexities.
    pub answer_ppl_mean: Option<f64>,
    /// Token-pooled answer perplexity.
    pub answer_ppl_pooled: Option<f64>,
}

/// Everything `rank-bank` produces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RankReport {
    /// K-shot items evaluated.
    pub items: usize,
    /// In-context shots used.
    pub shots: usize,
    /// The perplexity signal that was used (falls back to `answer_mean` without rationales).
    pub ppl_signal: PplSignal,
    /// The accuracy signal.
    pub accuracy_signal: AccuracySignal,
    /// Every signal per adapter (base first when evaluated).
    pub signals: Vec<AdapterSignals>,
    /// The selection.
    pub selection: Selection,
    /// Pairwise similarity of the adapters, bank order.
    pub similarity: Vec<Vec<f64>>,
    /// Adapter names in similarity order.
    pub names: Vec<String>,
    /// Seconds spent evaluating the bank.
    pub eval_seconds: f64,
    /// The full evaluations (per-item predictions and perplexities).
    pub evaluations: Vec<Evaluation>,
}

/// Signals of one evaluation.
pub fn signals_of(e: &Evaluation) -> AdapterSignals {
    AdapterSignals {
        name: e.name.clone(),
        accuracy: e.exact_match.as_ref().map(|r| r.accuracy),
        accuracy_stderr: e.exact_match.as_ref().map(|r| r.stderr),
        unextracted: e.exact_match.as_ref().map(|r| r.unextracted),
        mc_acc: e.multiple_choice.as_ref().map(|r| r.acc),
        mc_acc_norm: e.multiple_choice.as_ref().map(|r| r.acc_norm),
        reasoning_ppl_mean: e.reasoning_ppl.as_ref().map(|r| r.mean_ppl),
        reasoning_ppl_pooled: e.reasoning_ppl.as_ref().map(|r| r.pooled_ppl),
        answer_ppl_mean: e.answer_ppl.as_ref().map(|r| r.mean_ppl),
        answer_ppl_pooled: e.answer_ppl.as_ref().map(|r| r.pooled_ppl),
    }
}

/// Evaluates every adapter of `bank` (or `names`) on `items` and selects experts.
pub fn rank_bank(
    model: &mut LanguageModel,
    bank: &LoraBank,
    names: Option<&[String]>,
    shots: &[KShotItem],
    items: &[KShotItem],
    config: &RankConfig,
) -> Result<RankReport> {
    if items.is_empty() {
        return Err(KshotError::EmptySet {
            what: "the K-shot set".into(),
        });
    }
    let auto = Metrics::auto(items);
    let mut ppl_signal = config.ppl_signal;
    if !auto.reasoning_ppl && ppl_signal != PplSignal::AnswerMean {
        tracing::warn!(
            "some K-shot items have no rationale: ranking by answer perplexity instead of reasoning perplexity"
        );
        ppl_signal = PplSignal::AnswerMean;
    }
    let metrics = Metrics {
        exact_match: config.accuracy_signal == AccuracySignal::ExactMatch,
        reasoning_ppl: auto.reasoning_ppl,
        answer_ppl: true,
        multiple_choice: config.accuracy_signal == AccuracySignal::MultipleChoice
            || auto.multiple_choice,
    };
    let names: Vec<String> = names
        .map(<[String]>::to_vec)
        .unwrap_or_else(|| bank.names());
    let eval: BankEvaluation = evaluate_bank(
        model,
        bank,
        Some(&names),
        config.include_base,
        shots,
        items,
        metrics,
        &config.eval,
    )?;
    let loaded = names
        .iter()
        .map(|n| bank.load(n))
        .collect::<lora_zoo::Result<Vec<_>>>()?;
    let refs: Vec<&LoraAdapter> = loaded.iter().map(|a| a.as_ref()).collect();
    let sim = similarity_matrix(&refs, config.similarity);
    let inputs = names
        .iter()
        .map(|n| {
            let e = eval.get(n).expect("every adapter evaluated");
            adapter_input(e, config.accuracy_signal, ppl_signal)
        })
        .collect::<Result<Vec<_>>>()?;
    let selection = select_experts(&inputs, &sim, &config.selection)?;
    let mut signals: Vec<AdapterSignals> = Vec::new();
    if let Some(b) = eval.get(BASE_NAME) {
        signals.push(signals_of(b));
    }
    for v in &selection.adapters {
        signals.push(signals_of(eval.get(&v.name).expect("evaluated")));
    }
    Ok(RankReport {
        items: items.len(),
        shots: shots.len(),
        ppl_signal,
        accuracy_signal: config.accuracy_signal,
        signals,
        selection,
        similarity: sim.outer_iter().map(|r| r.to_vec()).collect(),
        names,
        eval_seconds: eval.seconds,
        evaluations: eval.evaluations,
    })
}

/// The selection input of one evaluation.
pub fn adapter_input(e: &Evaluation, acc: AccuracySignal, ppl: PplSignal) -> Result<AdapterInput> {
    let missing =
        |what: &str| KshotError::InvalidConfig(format!("evaluation {} has no {what}", e.name));
    let (accuracy, per_item_correct) = match acc {
        AccuracySignal::ExactMatch => {
            let r = e
                .exact_match
                .as_ref()
                .ok_or_else(|| missing("exact match"))?;
            (r.accuracy, r.per_item.iter().map(|p| p.correct).collect())
        }
        AccuracySignal::MultipleChoice => {
            let r = e
                .multiple_choice
                .as_ref()
                .ok_or_else(|| missing("multiple-choice scores"))?;
            (r.acc, r.per_item.iter().map(|c| c.pred == c.gold).collect())
        }
    };
    let report = match ppl {
        PplSignal::ReasoningMean | PplSignal::ReasoningPooled => e.reasoning_ppl.as_ref(),
        PplSignal::AnswerMean => e.answer_ppl.as_ref(),
    }
    .ok_or_else(|| missing("perplexity"))?;
    let value = if ppl == PplSignal::ReasoningPooled {
        report.pooled_ppl
    } else {
        report.mean_ppl
    };
    Ok(AdapterInput {
        name: e.name.clone(),
        accuracy,
        ppl: value,
        per_item_correct,
        per_item_ppl: report.per_item.iter().map(|p| p.ppl).collect(),
    })
}
