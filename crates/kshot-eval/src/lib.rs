//! # kshot-eval: K-shot evaluation and Rocket expert selection
//!
//! - [`kshot`]: the K-shot JSONL schema `{id?, task?, question, answer, rationale?, choices?}`,
//!   loaders (default tasks, GSM8K) and seeded splits into in-context shots and test items;
//! - [`prompt`]: lm-eval's plain few-shot format and the model's chat template with shots as
//!   turns, and lm-eval's context/continuation tokenisation;
//! - [`extract`]: answer extractors (`The answer is X`, final number, option letter, regex, last
//!   line) and exact-match comparison;
//! - [`metrics`]: accuracy, `acc` / `acc_norm`, mean and pooled perplexity, bootstrap stderr;
//! - [`eval`]: exact match, multiple choice, reasoning and answer perplexity of one model or of
//!   many experts packed into shared batches;
//! - [`bank`]: every adapter of a [`lora_zoo::LoraBank`] against one loaded base;
//! - [`select`] and [`rank`]: Rocket's shortlist, group-diversity tuple choice and blind-guesser
//!   flags;
//! - [`report`]: Markdown tables of evaluations and rankings (the `openexpert eval` / `rank-bank`
//!   commands, in the `openexpert` crate, write them).
//!
//! ## Example
//!
//! Held-out exact match of the base model and of every adapter of a bank:
//!
//! ```no_run
//! use kshot_eval::{EvalConfig, KShotSet, Metrics, evaluate_bank, exact_match};
//! use lm_core::model::{ExpertMix, LanguageModel};
//!
//! # fn main() -> kshot_eval::Result<()> {
//! let device = lm_core::device::device_from_name("cpu")?;
//! let mut model = LanguageModel::load(lm_core::assets::DEFAULT_MODEL, &device)?;
//! let set = KShotSet::from_jsonl("assets/datasets/chain_sum/eval.jsonl".as_ref())?;
//! let config = EvalConfig { max_new_tokens: 128, ..Default::default() };
//!
//! // One model (here the base; `ExpertMix::Static(vec![1.0])` after attaching one adapter).
//! let report = exact_match(&model, &ExpertMix::Base, &[], &set.items, &config)?;
//! println!("base: {:.3} ± {:.3} ({}/{})", report.accuracy, report.stderr, report.correct, report.total);
//!
//! // A whole bank, rows of all adapters packed into shared batches.
//! let bank = lora_zoo::LoraBank::scan("bank/".as_ref())?;
//! let metrics = Metrics { exact_match: true, reasoning_ppl: false, answer_ppl: false, multiple_choice: false };
//! let result = evaluate_bank(&mut model, &bank, None, true, &[], &set.items, metrics, &config)?;
//! for e in &result.evaluations {
//!     println!("{}: {:.3}", e.name, e.exact_match.as_ref().unwrap().accuracy);
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod bank;
pub mod error;
pub mod eval;
pub mod extract;
pub mod kshot;
pub mod metrics;
pub mod prompt;
pub mod rank;
pub mod report;
pub mod select;

pub use bank::{BankEvaluation, evaluate_adapters, evaluate_bank};
pub use error::{KshotError, Result};
pub use eval::{
    EvalConfig, Evaluation, ExactMatchReport, Experts, ItemPrediction, Metrics,
    MultipleChoiceReport, PerplexityReport, evaluate, exact_match, multiple_choice,
    perplexity_report,
};
pub use extract::{AnswerExtractor, Extractor, answers_match};
pub use kshot::{KShotItem, KShotSet, KShotSplit};
pub use prompt::{KShotPrompt, PromptFormat};
pub use rank::{RankConfig, RankReport, rank_bank};
pub use select::{Selection, SelectionConfig, ShortlistRule, TupleRule, select_experts};
