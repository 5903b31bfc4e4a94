//! Evaluating one model (base, one adapter, a weighted mix) or many experts packed into shared
//! batches: exact match by generation, multiple-choice log-likelihood, reasoning perplexity and
//! vanilla answer perplexity.
//!
//! Every metric runs on *rows* `(expert, item)`. With [`Experts::Shared`] all rows use one
//! [`ExpertMix`]; with [`Experts::PerRow`] each row names its expert and rows of different
//! experts share batches (lm-core's per-row expert index): the bank is evaluated in
//! `ceil(experts · items / batch_size)` batched passes instead of one pass per expert.
//!
//! Results do not depend on the batch size: rows are sorted by length before batching, padding
//! never changes a row's tokens or scores (lm-core), and sampling is greedy.

use lm_core::generate::{FinishReason, Generation, GenerationConfig, generate_and_score};
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::score::{ScoreOptions, ScoreRequest, TokenScores, score, score_per_row_experts};
use serde::{Deserialize, Serialize};

use crate::error::{KshotError, Result};
use crate::extract::{AnswerExtractor, answers_match};
use crate::kshot::KShotItem;
use crate::metrics::{
    bootstrap_mean_stderr, bootstrap_stderr, choice_predictions, mean, perplexity,
    pooled_perplexity,
};
use crate::prompt::{KShotPrompt, PromptFormat};

/// Settings shared by every metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalConfig {
    /// How prompts are built (default: the model's chat template).
    pub format: PromptFormat,
    /// How answers are found in generations (default `[AnswerIs, Auto]`).
    pub extractor: AnswerExtractor,
    /// Most new tokens per generation (default 256).
    pub max_new_tokens: usize,
    /// Stop strings; `None` uses the format's defaults.
    pub stop: Option<Vec<String>>,
    /// Rows per batch, for generation and scoring (default 16).
    pub batch_size: usize,
    /// Bootstrap resamples for standard errors (default 1000).
    pub bootstrap_resamples: usize,
    /// Seed of the bootstrap (default 1234).
    pub seed: u64,
    /// Show progress bars on stderr (default false; the CLI turns them on).
    pub show_progress: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            format: PromptFormat::default(),
            extractor: AnswerExtractor::default(),
            max_new_tokens: 256,
            stop: None,
            batch_size: 16,
            bootstrap_resamples: 1000,
            seed: 1234,
            show_progress: false,
        }
    }
}

/// Which experts the rows use.
#[derive(Debug, Clone, Copy)]
pub enum Experts<'a> {
    /// Every row uses this mix (base, one adapter, a weighted combination).
    Shared(&'a ExpertMix),
    /// One evaluation per entry, rows packed across entries: `Some(e)` = attached expert `e`,
    /// `None` = the base model.
    PerRow(&'a [Option<usize>]),
}

impl Experts<'_> {
    fn arms(&self) -> usize {
        match self {
            Experts::Shared(_) => 1,
            Experts::PerRow(e) => e.len(),
        }
    }
}

/// Which metrics to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Generate, extract, compare (exact match).
    pub exact_match: bool,
    /// Perplexity of `"{rationale}\nThe answer is {answer}."` (needs rationales).
    pub reasoning_ppl: bool,
    /// Perplexity of the bare answer (Rocket's "vanilla perplexity").
    pub answer_ppl: bool,
    /// Log-likelihood of each choice: `acc` and `acc_norm` (needs choices).
    pub multiple_choice: bool,
}

impl Metrics {
    /// Exact match, plus reasoning perplexity when every item has a rationale, answer perplexity,
    /// and multiple choice when every item has choices.
    pub fn auto(items: &[KShotItem]) -> Self {
        Self {
            exact_match: true,
            reasoning_ppl: !items.is_empty() && items.iter().all(|i| i.rationale_text().is_some()),
            answer_ppl: true,
            multiple_choice: !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.choices.as_ref().is_some_and(|c| c.len() >= 2)),
        }
    }

    /// Parses a metric list: comma-separated `em` (exact match), `rppl` (reasoning perplexity),
    /// `ppl` (answer perplexity), `mc` (multiple choice), or `auto` ([`Metrics::auto`] on `items`).
    pub fn parse(spec: &str, items: &[KShotItem]) -> Result<Self> {
        if spec.trim() == "auto" {
            return Ok(Self::auto(items));
        }
        let mut m = Self::NONE;
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "em" => m.exact_match = true,
                "rppl" => m.reasoning_ppl = true,
                "ppl" => m.answer_ppl = true,
                "mc" => m.multiple_choice = true,
                other => {
                    return Err(KshotError::InvalidConfig(format!(
                        "unknown metric {other:?}; expected em, rppl, ppl, mc or auto"
                    )));
                }
            }
        }
        if m == Self::NONE {
            return Err(KshotError::InvalidConfig(format!(
                "metric list {spec:?} names no metric; expected em, rppl, ppl, mc or auto"
            )));
        }
        Ok(m)
    }

    const NONE: Self = Self {
        exact_match: false,
        reasoning_ppl: false,
        answer_ppl: false,
        multiple_choice: false,
    };
}

/// One item's generation and verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemPrediction {
    /// Item id (or `#index`).
    pub id: String,
    /// Gold answer.
    pub gold: String,
    /// Generated text.
    pub prediction: String,
    /// Extracted answer; `None` when no extractor step found one (counted as wrong).
    pub extracted: Option<String>,
    /// Whether the extracted answer matches the gold one.
    pub correct: bool,
    /// Why generation stopped: `eos`, `stop` or `length`.
    pub finish_reason: String,
}

/// Exact-match accuracy of a generative evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExactMatchReport {
    /// `correct / total`.
    pub accuracy: f64,
    /// Items answered correctly.
    pub correct: usize,
    /// Items evaluated.
    pub total: usize,
    /// Bootstrap standard error of the accuracy.
    pub stderr: f64,
    /// Items where no answer could be extracted (counted as wrong).
    pub unextracted: usize,
    /// Per item, in input order.
    pub per_item: Vec<ItemPrediction>,
}

/// One item's perplexity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemPerplexity {
    /// Item id.
    pub id: String,
    /// Summed log-probability of the target tokens.
    pub logprob: f64,
    /// Number of target tokens.
    pub n_tokens: usize,
    /// `exp(-logprob / n_tokens)`.
    pub ppl: f64,
}

/// Perplexity of a target over a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerplexityReport {
    /// Which target: `reasoning` or `answer`.
    pub target: String,
    /// Mean of per-item perplexities (Rocket's definition).
    pub mean_ppl: f64,
    /// Token-pooled perplexity `exp(-Σ ll / Σ T)`.
    pub pooled_ppl: f64,
    /// Bootstrap standard error of `mean_ppl`.
    pub stderr: f64,
    /// Target tokens in total.
    pub total_tokens: usize,
    /// Per item, in input order.
    pub per_item: Vec<ItemPerplexity>,
}

/// One multiple-choice item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChoiceItem {
    /// Item id.
    pub id: String,
    /// Index of the gold choice.
    pub gold: usize,
    /// Log-likelihood of each choice.
    pub loglikelihoods: Vec<f64>,
    /// `argmax ll`.
    pub pred: usize,
    /// `argmax ll / len_chars`.
    pub pred_norm: usize,
}

/// Multiple-choice accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultipleChoiceReport {
    /// Share of items whose most likely choice is the gold one.
    pub acc: f64,
    /// The same with log-likelihoods divided by the choice's length in characters.
    pub acc_norm: f64,
    /// Bootstrap standard error of `acc`.
    pub acc_stderr: f64,
    /// Bootstrap standard error of `acc_norm`.
    pub acc_norm_stderr: f64,
    /// Items evaluated.
    pub total: usize,
    /// Per item.
    pub per_item: Vec<ChoiceItem>,
}

/// All requested metrics for one expert (or the shared mix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// A name for reports (adapter name, `base`, ...).
    pub name: String,
    /// The attached expert index (`None` = base or a shared mix).
    pub expert: Option<usize>,
    /// Exact match, if asked.
    pub exact_match: Option<ExactMatchReport>,
    /// Reasoning perplexity, if asked.
    pub reasoning_ppl: Option<PerplexityReport>,
    /// Answer perplexity, if asked.
    pub answer_ppl: Option<PerplexityReport>,
    /// Multiple choice, if asked.
    pub multiple_choice: Option<MultipleChoiceReport>,
}

/// One shared-mix arm of [`evaluate`]: the metrics asked for, for `model` with `mix`.
fn evaluate_one(
    model: &LanguageModel,
    mix: &ExpertMix,
    shots: &[KShotItem],
    items: &[KShotItem],
    metrics: Metrics,
    config: &EvalConfig,
) -> Result<Evaluation> {
    let mut all = evaluate(
        model,
        Experts::Shared(mix),
        &["model".into()],
        shots,
        items,
        metrics,
        config,
    )?;
    Ok(all.remove(0))
}

/// Exact-match accuracy of `model` with `mix` on `items`, with `shots` as in-context examples.
pub fn exact_match(
    model: &LanguageModel,
    mix: &ExpertMix,
    shots: &[KShotItem],
    items: &[KShotItem],
    config: &EvalConfig,
) -> Result<ExactMatchReport> {
    let metrics = Metrics {
        exact_match: true,
        reasoning_ppl: false,
        answer_ppl: false,
        multiple_choice: false,
    };
    let e = evaluate_one(model, mix, shots, items, metrics, config)?;
    Ok(e.exact_match.expect("asked for"))
}

/// Reasoning perplexity (`reasoning = true`, needs rationales) or vanilla answer perplexity.
pub fn perplexity_report(
    model: &LanguageModel,
    mix: &ExpertMix,
    shots: &[KShotItem],
    items: &[KShotItem],
    reasoning: bool,
    config: &EvalConfig,
) -> Result<PerplexityReport> {
    let metrics = Metrics {
        exact_match: false,
        reasoning_ppl: reasoning,
        answer_ppl: !reasoning,
        multiple_choice: false,
    };
    let e = evaluate_one(model, mix, shots, items, metrics, config)?;
    Ok(if reasoning {
        e.reasoning_ppl
    } else {
        e.answer_ppl
    }
    .expect("asked for"))
}

/// Multiple-choice `acc` / `acc_norm` (needs choices on every item).
pub fn multiple_choice(
    model: &LanguageModel,
    mix: &ExpertMix,
    shots: &[KShotItem],
    items: &[KShotItem],
    config: &EvalConfig,
) -> Result<MultipleChoiceReport> {
    let metrics = Metrics {
        exact_match: false,
        reasoning_ppl: false,
        answer_ppl: false,
        multiple_choice: true,
    };
    let e = evaluate_one(model, mix, shots, items, metrics, config)?;
    Ok(e.multiple_choice.expect("asked for"))
}

/// Evaluates every arm of `experts` (one [`Evaluation`] per arm, named by `names`) on `items`.
pub fn evaluate(
    model: &LanguageModel,
    experts: Experts<'_>,
    names: &[String],
    shots: &[KShotItem],
    items: &[KShotItem],
    metrics: Metrics,
    config: &EvalConfig,
) -> Result<Vec<Evaluation>> {
    if items.is_empty() {
        return Err(KshotError::EmptySet {
            what: "the evaluation set".into(),
        });
    }
    if names.len() != experts.arms() {
        return Err(KshotError::InvalidConfig(format!(
            "expected one name per expert ({}), found {}",
            experts.arms(),
            names.len()
        )));
    }
    if let Experts::Shared(ExpertMix::PerRow(_)) = experts {
        return Err(KshotError::InvalidConfig(
            "a shared ExpertMix::PerRow is ambiguous; use Experts::PerRow to pack experts".into(),
        ));
    }
    if config.batch_size == 0 {
        return Err(KshotError::InvalidConfig(
            "batch_size must be at least 1".into(),
        ));
    }
    check_inputs(items, metrics)?;
    let mut out: Vec<Evaluation> = names
        .iter()
        .enumerate()
        .map(|(a, name)| Evaluation {
            name: name.clone(),
            expert: match experts {
                Experts::PerRow(e) => e[a],
                Experts::Shared(_) => None,
            },
            exact_match: None,
            reasoning_ppl: None,
            answer_ppl: None,
            multiple_choice: None,
        })
        .collect();
    let ids: Vec<String> = items
        .iter()
        .enumerate()
        .map(|(i, it)| it.id_or(i))
        .collect();

    // Perplexity requests, built first: those whose prompts are exactly the generation prompts
    // are scored from the generation's prefill (one prompt pass for all three metrics).
    let reasoning_requests = if metrics.reasoning_ppl {
        Some(ppl_requests(model, shots, items, config, true)?)
    } else {
        None
    };
    let answer_requests = if metrics.answer_ppl {
        Some(ppl_requests(model, shots, items, config, false)?)
    } else {
        None
    };
    let mut reasoning_scores = None;
    let mut answer_scores = None;
    if metrics.exact_match {
        let prompts = items
            .iter()
            .map(|it| {
                model
                    .encode_prompt(&config.format, &config.format.context(model, shots, it)?)
                    .map_err(Into::into)
            })
            .collect::<Result<Vec<_>>>()?;
        let shares_prompts = |requests: &Option<Vec<ScoreRequest>>| {
            requests.as_ref().is_some_and(|requests| {
                requests
                    .iter()
                    .zip(&prompts)
                    .all(|(r, p)| &r.prompt == p && !r.target.is_empty())
            })
        };
        let (share_reasoning, share_answer) = (
            shares_prompts(&reasoning_requests),
            shares_prompts(&answer_requests),
        );
        let mut sets = Vec::new();
        for (share, requests) in [
            (share_reasoning, &reasoning_requests),
            (share_answer, &answer_requests),
        ] {
            if share && let Some(requests) = requests {
                sets.push(
                    requests
                        .iter()
                        .map(|r| r.target.clone())
                        .collect::<Vec<_>>(),
                );
            }
        }
        let (gens, mut scores) = generate_rows(model, &prompts, &sets, experts, config)?;
        if share_answer {
            answer_scores = scores.pop();
        }
        if share_reasoning {
            reasoning_scores = scores.pop();
        }
        for (a, ev) in out.iter_mut().enumerate() {
            let per_item: Vec<ItemPrediction> = items
                .iter()
                .enumerate()
                .map(|(i, it)| {
                    let g = &gens[a * items.len() + i];
                    let ex = config.extractor.extract(&g.text, &it.answer);
                    let correct = ex
                        .answer
                        .as_deref()
                        .is_some_and(|p| answers_match(p, &it.answer));
                    ItemPrediction {
                        id: ids[i].clone(),
                        gold: it.answer.clone(),
                        prediction: g.text.clone(),
                        extracted: ex.answer,
                        correct,
                        finish_reason: finish_name(g.finish_reason).into(),
                    }
                })
                .collect();
            ev.exact_match = Some(exact_match_report(per_item, config));
        }
    }

    for (reasoning, wanted) in [(true, metrics.reasoning_ppl), (false, metrics.answer_ppl)] {
        if !wanted {
            continue;
        }
        let (done, requests) = if reasoning {
            (reasoning_scores.take(), &reasoning_requests)
        } else {
            (answer_scores.take(), &answer_requests)
        };
        let scores = match done {
            Some(scores) => scores,
            None => score_rows(
                model,
                requests.as_deref().unwrap_or_default(),
                experts,
                config,
            )?,
        };
        for (a, ev) in out.iter_mut().enumerate() {
            let per_item: Vec<ItemPerplexity> = (0..items.len())
                .map(|i| {
                    let s = &scores[a * items.len() + i];
                    ItemPerplexity {
                        id: ids[i].clone(),
                        logprob: s.logprob,
                        n_tokens: s.n_tokens,
                        ppl: perplexity(s.logprob, s.n_tokens),
                    }
                })
                .collect();
            let report = perplexity_summary(
                if reasoning { "reasoning" } else { "answer" },
                per_item,
                config,
            );
            if reasoning {
                ev.reasoning_ppl = Some(report);
            } else {
                ev.answer_ppl = Some(report);
            }
        }
    }

    if metrics.multiple_choice {
        let mut requests = Vec::new();
        let mut golds = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let choices = it.choices.as_deref().unwrap_or_default();
            golds.push(gold_choice(it, &ids[i])?);
            let context = config.format.context(model, shots, it)?;
            for c in choices {
                let cont = match &config.format {
                    PromptFormat::Plain {
                        target_delimiter, ..
                    } => format!("{target_delimiter}{c}"),
                    PromptFormat::Chat { .. } => c.clone(),
                };
                requests.push(config.format.encode_pair(model, &context, &cont)?);
            }
        }
        let scores = score_rows(model, &requests, experts, config)?;
        let per_arm = requests.len();
        for (a, ev) in out.iter_mut().enumerate() {
            let mut offset = a * per_arm;
            let mut per_item = Vec::with_capacity(items.len());
            for (i, it) in items.iter().enumerate() {
                let choices = it.choices.as_deref().unwrap_or_default();
                let lls: Vec<f64> = scores[offset..offset + choices.len()]
                    .iter()
                    .map(|s| s.logprob)
                    .collect();
                offset += choices.len();
                let (pred, pred_norm) = choice_predictions(&lls, choices);
                per_item.push(ChoiceItem {
                    id: ids[i].clone(),
                    gold: golds[i],
                    loglikelihoods: lls,
                    pred: pred.unwrap_or(usize::MAX),
                    pred_norm: pred_norm.unwrap_or(usize::MAX),
                });
            }
            ev.multiple_choice = Some(choice_summary(per_item, config));
        }
    }
    Ok(out)
}

/// The scoring requests of reasoning perplexity (`"{rationale}\nThe answer is {answer}."`) or
/// answer perplexity (the bare answer) after each item's prompt.
fn ppl_requests(
    model: &LanguageModel,
    shots: &[KShotItem],
    items: &[KShotItem],
    config: &EvalConfig,
    reasoning: bool,
) -> Result<Vec<ScoreRequest>> {
    items
        .iter()
        .map(|it| {
            let target = if reasoning {
                it.response()
            } else {
                it.answer.trim().to_string()
            };
            let (ctx, cont) = config.format.pair(model, shots, it, &target)?;
            config.format.encode_pair(model, &ctx, &cont)
        })
        .collect()
}

/// Refuses inputs a metric cannot use, before any model work.
fn check_inputs(items: &[KShotItem], metrics: Metrics) -> Result<()> {
    if metrics.reasoning_ppl {
        let missing: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| it.rationale_text().is_none())
            .map(|(i, _)| i)
            .collect();
        if let Some(&first) = missing.first() {
            return Err(KshotError::MissingRationale {
                missing: missing.len(),
                total: items.len(),
                first_id: items[first].id_or(first),
            });
        }
    }
    if metrics.multiple_choice {
        for (i, it) in items.iter().enumerate() {
            let n = it.choices.as_ref().map_or(0, Vec::len);
            if n < 2 {
                return Err(KshotError::MissingChoices {
                    id: it.id_or(i),
                    found: n,
                });
            }
            gold_choice(it, &it.id_or(i))?;
        }
    }
    Ok(())
}

/// The gold choice index: the answer as a choice text, else an option letter, else an index.
pub fn gold_choice(item: &KShotItem, id: &str) -> Result<usize> {
    let choices = item.choices.as_deref().unwrap_or_default();
    let a = item.answer.trim();
    if let Some(i) = choices.iter().position(|c| c.trim() == a) {
        return Ok(i);
    }
    if let Some(i) = choices
        .iter()
        .position(|c| crate::extract::normalise(c) == crate::extract::normalise(a))
    {
        return Ok(i);
    }
    let letter = a.trim_start_matches('(').trim_end_matches([')', '.']);
    if letter.len() == 1 {
        let c = letter.as_bytes()[0].to_ascii_uppercase();
        if c.is_ascii_uppercase() && usize::from(c - b'A') < choices.len() {
            return Ok(usize::from(c - b'A'));
        }
    }
    if let Ok(i) = a.parse::<usize>()
        && i < choices.len()
    {
        return Ok(i);
    }
    Err(KshotError::AnswerNotAChoice {
        id: id.to_string(),
        answer: item.answer.clone(),
        choices: choices.to_vec(),
    })
}

fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Eos => "eos",
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

fn exact_match_report(per_item: Vec<ItemPrediction>, config: &EvalConfig) -> ExactMatchReport {
    let values: Vec<f64> = per_item
        .iter()
        .map(|p| f64::from(u8::from(p.correct)))
        .collect();
    let correct = per_item.iter().filter(|p| p.correct).count();
    ExactMatchReport {
        accuracy: mean(&values),
        correct,
        total: per_item.len(),
        stderr: bootstrap_mean_stderr(&values, config.bootstrap_resamples, config.seed),
        unextracted: per_item.iter().filter(|p| p.extracted.is_none()).count(),
        per_item,
    }
}

fn perplexity_summary(
    target: &str,
    per_item: Vec<ItemPerplexity>,
    config: &EvalConfig,
) -> PerplexityReport {
    let ppls: Vec<f64> = per_item.iter().map(|p| p.ppl).collect();
    let pairs: Vec<(f64, usize)> = per_item.iter().map(|p| (p.logprob, p.n_tokens)).collect();
    PerplexityReport {
        target: target.into(),
        mean_ppl: mean(&ppls),
        pooled_ppl: pooled_perplexity(&pairs),
        stderr: bootstrap_mean_stderr(&ppls, config.bootstrap_resamples, config.seed),
        total_tokens: pairs.iter().map(|p| p.1).sum(),
        per_item,
    }
}

fn choice_summary(per_item: Vec<ChoiceItem>, config: &EvalConfig) -> MultipleChoiceReport {
    let acc: Vec<f64> = per_item
        .iter()
        .map(|c| f64::from(u8::from(c.pred == c.gold)))
        .collect();
    let norm: Vec<f64> = per_item
        .iter()
        .map(|c| f64::from(u8::from(c.pred_norm == c.gold)))
        .collect();
    MultipleChoiceReport {
        acc: mean(&acc),
        acc_norm: mean(&norm),
        acc_stderr: bootstrap_stderr(acc.len(), config.bootstrap_resamples, config.seed, |idx| {
            idx.iter().map(|&i| acc[i]).sum::<f64>() / idx.len() as f64
        }),
        acc_norm_stderr: bootstrap_mean_stderr(&norm, config.bootstrap_resamples, config.seed),
        total: per_item.len(),
        per_item,
    }
}

fn progress_bar(config: &EvalConfig, len: usize, what: &str) -> lm_core::progress::ProgressBar {
    lm_core::progress::bar_if(config.show_progress, len as u64, what, "rows")
}

/// Generates for every `(arm, prompt)` row, arm-major (`out[arm · n + i]`), rows sorted by prompt
/// length and packed into batches; with `target_sets`, also the scores of `target_sets[k][i]`
/// after `prompts[i]` for every row (arm-major too), from the same prefill
/// (`lm_core::generate::generate_and_score`).
pub(crate) fn generate_rows(
    model: &LanguageModel,
    prompts: &[Vec<u32>],
    target_sets: &[Vec<Vec<u32>>],
    experts: Experts<'_>,
    config: &EvalConfig,
) -> Result<(Vec<Generation>, Vec<Vec<TokenScores>>)> {
    let n = prompts.len();
    let rows = experts.arms() * n;
    let gen_config = generation_config(config);
    let mut order: Vec<usize> = (0..rows).collect();
    // Longest prompts first; ties keep arm-major order so equal prompts of different experts share batches.
    order.sort_by_key(|&r| std::cmp::Reverse(prompts[r % n].len()));
    let what = if target_sets.is_empty() {
        "generating"
    } else {
        "generating + scoring"
    };
    let bar = progress_bar(config, rows, what);
    let mut gens: Vec<Option<Generation>> = vec![None; rows];
    let mut scores: Vec<Vec<Option<TokenScores>>> = vec![vec![None; rows]; target_sets.len()];
    for chunk in order.chunks(config.batch_size) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&r| prompts[r % n].clone()).collect();
        let conts: Vec<Vec<Vec<u32>>> = target_sets
            .iter()
            .map(|set| chunk.iter().map(|&r| set[r % n].clone()).collect())
            .collect();
        let mix = match experts {
            Experts::Shared(m) => m.clone(),
            Experts::PerRow(e) => ExpertMix::PerRow(chunk.iter().map(|&r| e[r / n]).collect()),
        };
        let (g, s) = generate_and_score(model, &batch, &conts, &gen_config, &mix)?;
        for (&r, g) in chunk.iter().zip(g) {
            gens[r] = Some(g);
        }
        for (set, set_scores) in scores.iter_mut().zip(s) {
            for (&r, s) in chunk.iter().zip(set_scores) {
                set[r] = Some(s);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok((
        gens.into_iter()
            .map(|g| g.expect("every row generated"))
            .collect(),
        scores
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .map(|s| s.expect("every row scored"))
                    .collect()
            })
            .collect(),
    ))
}

/// The generation settings of an evaluation.
fn generation_config(config: &EvalConfig) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: config.max_new_tokens,
        stop: config
            .stop
            .clone()
            .unwrap_or_else(|| config.format.default_stops()),
        ..Default::default()
    }
}

/// Scores every `(arm, request)` row, arm-major.
pub(crate) fn score_rows(
    model: &LanguageModel,
    requests: &[ScoreRequest],
    experts: Experts<'_>,
    config: &EvalConfig,
) -> Result<Vec<TokenScores>> {
    let options = ScoreOptions {
        batch_size: config.batch_size,
        keep_last_logits: false,
        ..Default::default()
    };
    Ok(match experts {
        Experts::Shared(mix) => score(model, requests, &options, mix)?,
        Experts::PerRow(e) => {
            let n = requests.len();
            let all: Vec<ScoreRequest> = (0..e.len())
                .flat_map(|_| requests.iter().cloned())
                .collect();
            let idx: Vec<Option<usize>> = (0..e.len() * n).map(|r| e[r / n]).collect();
            score_per_row_experts(model, &all, &idx, &options)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_specs() {
        let items = vec![KShotItem::new("q", "1")];
        let auto = Metrics::parse("auto", &items).unwrap();
        assert!(auto.exact_match && !auto.reasoning_ppl && !auto.multiple_choice);
        let m = Metrics::parse("em, mc", &items).unwrap();
        assert!(m.exact_match && m.multiple_choice && !m.answer_ppl);
        assert!(Metrics::parse("bleu", &items).is_err());
        assert!(Metrics::parse(",", &items).is_err());
    }
}
