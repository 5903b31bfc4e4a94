//! [`RocketConfig`]: every option of every Rocket stage, read from one TOML file.
//!
//! Defaults are the authors' code where it has one (`ALGORITHMS.md` 1(c)): N = 4 experts, top-2
//! routing, Kaiming routers, no auxiliary loss, data budget 1000 with the K-shot counted in it,
//! near-duplicates at cosine similarity > 0.9, LoRA r = α = 16 on `q_proj`/`v_proj`, lr 5e-5 for
//! 5 epochs at an effective batch of 64 and a maximum length of 1024 (longer samples dropped).
//! The interpretations of 1(f) are the defaults where the code is silent: lexicographic shortlist
//! of M = 8, the per-factor |cos| similarity, the mean of per-item perplexities, the corrected
//! greedy dedup. Every switch of the ablations (1(e)) is a field ([`SelectionSignal`],
//! [`DataMode`], `selection.experts`, `moe.top_k`, `train.router_only`).
//!
//! Spellings in TOML are the command line's (`combined-diversity`, `similar-dedup`, `rank-sum`):
//! one spelling per switch. Unknown keys are refused, so a typo never silently falls back to a
//! default. Paths are relative to the working directory.

use std::path::{Path, PathBuf};

use data_select::dedup::DedupMode;
use data_select::retrieve::Similarity;
use kshot_eval::rank::PplSignal;
use kshot_eval::{ShortlistRule, TupleRule};
use lm_core::assets::{DEFAULT_ENCODER, DEFAULT_MODEL};
use lm_core::model::Precision;
use lm_core::prompt::PromptFormat;
use lm_core::train::{LoraTrainConfig, OverflowPolicy, TrainConfig};
use lora_zoo::SimilarityMode;
use moe_router::RouterInit;
use serde::{Deserialize, Serialize};

use super::error::{Result, RocketError};

/// Serde through `Display` / `FromStr`, so TOML uses the command line's spelling of a switch.
mod named {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

/// Which K-shot signals choose the `N` experts (ALGORITHMS.md 1(e), ablation 1 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelectionSignal {
    /// Top `N` by K-shot accuracy alone (ties: bank order).
    Accuracy,
    /// Top `N` by the perplexity of the bare answers (the paper's "vanilla perplexity").
    VanillaPpl,
    /// Top `N` by reasoning perplexity alone.
    ReasoningPpl,
    /// Top `N` of the shortlist ranking (accuracy, then reasoning perplexity), no diversity.
    Combined,
    /// Shortlist `M` by accuracy and reasoning perplexity, then the `N`-tuple by group
    /// diversity (or the combined tuple rank): the full method.
    #[default]
    CombinedDiversity,
    /// `N` adapters drawn uniformly at random (seeded): the control.
    Random,
}

lm_core::named_enum!(SelectionSignal, "selection signal", {
    Accuracy => "accuracy",
    VanillaPpl => "vanilla-ppl",
    ReasoningPpl => "reasoning-ppl",
    Combined => "combined",
    CombinedDiversity => "combined-diversity",
    Random => "random",
});

/// Which open data joins the K-shot for fine-tuning (ALGORITHMS.md 1(e), ablation 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataMode {
    /// The K-shot items only.
    KshotOnly,
    /// `budget - K` pool items drawn uniformly at random (seeded).
    Random,
    /// The `budget - K` pool items closest to the K-shot set.
    Similar,
    /// The closest items, then near-duplicates removed (the method).
    #[default]
    SimilarDedup,
}

lm_core::named_enum!(DataMode, "data mode", {
    KshotOnly => "kshot-only",
    Random => "random",
    Similar => "similar",
    SimilarDedup => "similar-dedup",
});

/// A contender of the final comparison on the test set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Contender {
    /// The base model without adapters.
    Base,
    /// The bank adapter ranked first on the K-shot set.
    BestExpert,
    /// The chosen experts merged with equal weights `1/N`.
    UniformMerge,
    /// Arrow routing (training-free) over the chosen experts.
    Arrow,
    /// LoraHub's gradient-free weights over the chosen experts.
    Lorahub,
    /// A plain LoRA trained on the same data as the mixture.
    Lora,
    /// The mixture before fine-tuning (Kaiming routers).
    MoeUntrained,
    /// The fine-tuned mixture: Rocket's task expert.
    Moe,
}

lm_core::named_enum!(Contender, "contender", {
    Base => "base",
    BestExpert => "best-expert",
    UniformMerge => "uniform-merge",
    Arrow => "arrow",
    Lorahub => "lorahub",
    Lora => "lora",
    MoeUntrained => "moe-untrained",
    Moe => "moe",
});

/// What the run reads. Every field can be given on the command line instead.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Inputs {
    /// K-shot JSONL of the target task (`question`, `answer`, `rationale`?).
    pub kshot: Option<PathBuf>,
    /// Use only the first `k` items of `kshot` (all when absent).
    pub k: Option<usize>,
    /// Held-out test JSONL of the target task (same shape).
    pub test: Option<PathBuf>,
    /// Evaluate on the first `test_limit` test items only (all when absent).
    pub test_limit: Option<usize>,
    /// The LoRA bank: one PEFT adapter per subdirectory.
    pub bank: Option<PathBuf>,
    /// The open instruction pool: JSONL files or glob patterns (`assets/datasets/*/train.jsonl`).
    pub pool: Vec<String>,
}

/// Stage 1: ranking the bank on the K-shot set and choosing the experts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectionSection {
    /// The signals that choose the experts.
    #[serde(with = "named")]
    pub signal: SelectionSignal,
    /// Experts to choose, `N` (Rocket: 4).
    pub experts: usize,
    /// Shortlist size `M` (ALGORITHMS.md 1(f): 8).
    pub shortlist: usize,
    /// How the shortlist is ranked.
    #[serde(with = "named")]
    pub shortlist_rule: ShortlistRule,
    /// How the `N`-tuple is chosen from the shortlist.
    #[serde(with = "named")]
    pub tuple_rule: TupleRule,
    /// Adapter similarity for group diversity (`rocket`: per-factor |cos|, the code; `delta`:
    /// gauge invariant).
    #[serde(with = "named")]
    pub similarity: SimilarityMode,
    /// Perplexity of the combined signals (`reasoning-mean`: the code; `reasoning-pooled`).
    #[serde(with = "named")]
    pub ppl: PplSignal,
    /// New tokens generated per K-shot item for the accuracy signal.
    pub max_new_tokens: usize,
    /// Seed of the `random` signal.
    pub seed: u64,
}

impl Default for SelectionSection {
    fn default() -> Self {
        let s = kshot_eval::SelectionConfig::default();
        Self {
            signal: SelectionSignal::default(),
            experts: s.experts,
            shortlist: s.shortlist,
            shortlist_rule: s.shortlist_rule,
            tuple_rule: s.tuple_rule,
            similarity: SimilarityMode::Rocket,
            ppl: PplSignal::ReasoningMean,
            max_new_tokens: kshot_eval::EvalConfig::default().max_new_tokens,
            seed: 0,
        }
    }
}

/// Stage 2: open data for fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Which data joins the K-shot.
    #[serde(with = "named")]
    pub mode: DataMode,
    /// Training-set size `N_target`, K-shot included (Rocket's script: 1000).
    pub budget: usize,
    /// Cosine similarity above which two retrieved items are near-duplicates (Rocket: 0.9,
    /// i.e. cosine distance < 0.1).
    pub dedup_threshold: f64,
    /// Duplicate rule: `greedy` (ALGORITHMS.md 1(f), compare with kept items) or `paper`.
    #[serde(with = "named")]
    pub dedup_mode: DedupMode,
    /// Refill to the budget from the next-nearest items after dedup.
    pub backfill: bool,
    /// Closeness: `centroid` (the code) or `mean-distance`.
    #[serde(with = "named")]
    pub similarity: Similarity,
    /// Sentence encoder of the retrieval (MiniLM stands in for bge-m3).
    pub embedder: String,
    /// Text put before each record when embedding.
    pub query_prefix: String,
    /// Seed of the `random` mode.
    pub seed: u64,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            mode: DataMode::default(),
            budget: 1000,
            dedup_threshold: 0.9,
            dedup_mode: DedupMode::Greedy,
            backfill: false,
            similarity: Similarity::default(),
            embedder: DEFAULT_ENCODER.into(),
            query_prefix: String::new(),
            seed: 0,
        }
    }
}

/// Stage 3: the mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MoeSection {
    /// Experts kept per token (Rocket: 2; `N` = dense soft routing).
    pub top_k: usize,
    /// Router initialisation: `kaiming` (the code), `zero` or `arrow`.
    pub router_init: RouterInit,
    /// Seed of the router initialisation.
    pub seed: u64,
    /// Switch load-balancing loss coefficient (the code: none).
    pub balance_loss: f32,
    /// Router z-loss coefficient (the code: none).
    pub z_loss: f32,
}

impl Default for MoeSection {
    fn default() -> Self {
        let d = moe_router::MoeConfig::new(Vec::new());
        Self {
            top_k: d.top_k,
            router_init: d.router_init,
            seed: d.seed,
            balance_loss: d.balance_loss,
            z_loss: d.z_loss,
        }
    }
}

/// The LoRA shape of the plain-LoRA baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraShape {
    /// Rank (Rocket: 16).
    pub r: usize,
    /// Scaling numerator (Rocket: 16).
    pub alpha: f64,
    /// Dropout on the adapter input (Rocket: 0.05).
    pub dropout: f64,
    /// Adapted modules (Rocket's released config: `q_proj`, `v_proj`).
    pub target_modules: Vec<String>,
}

impl Default for LoraShape {
    fn default() -> Self {
        Self {
            r: 16,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: vec!["q_proj".into(), "v_proj".into()],
        }
    }
}

/// Stage 4: fine-tuning (the mixture, and the plain-LoRA baseline with the same optimiser).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Train the routers only (the code's `train_router_only`); experts stay frozen.
    pub router_only: bool,
    /// Peak AdamW learning rate (Rocket's run.sh: 5e-5).
    pub lr: f64,
    /// Passes over the data (Rocket's run.sh: 5).
    pub epochs: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step (8 × 8 = Rocket's global batch of 64).
    pub grad_accum_steps: usize,
    /// Fraction of the steps spent warming up (the code warms up for 5 steps).
    pub warmup_ratio: f64,
    /// Longest sequence in tokens; longer samples are dropped, as the code does (1024).
    pub max_len: usize,
    /// Seed of shuffling, dropout and the baseline LoRA's initialisation.
    pub seed: u64,
    /// Checkpoint every this many optimiser steps (a killed run resumes from the last one).
    pub checkpoint_every: usize,
    /// The plain-LoRA baseline's shape.
    pub lora: LoraShape,
}

impl Default for TrainSection {
    fn default() -> Self {
        let t = TrainConfig::new(LoraTrainConfig::new());
        Self {
            router_only: false,
            lr: 5e-5,
            epochs: 5,
            batch_size: 8,
            grad_accum_steps: 8,
            warmup_ratio: t.warmup_ratio,
            max_len: 1024,
            seed: t.seed,
            checkpoint_every: t.checkpoint_every,
            lora: LoraShape::default(),
        }
    }
}

impl TrainSection {
    /// The lm-core training config these settings describe (`lora` only matters for the
    /// plain-LoRA baseline; mixture experts keep their own shapes).
    pub fn train_config(&self) -> TrainConfig {
        let lora = LoraTrainConfig::new()
            .with_r(self.lora.r)
            .with_alpha(self.lora.alpha)
            .with_dropout(self.lora.dropout)
            .with_target_modules(self.lora.target_modules.clone());
        TrainConfig::new(lora)
            .with_lr(self.lr)
            .with_epochs(self.epochs)
            .with_batch_size(self.batch_size)
            .with_grad_accum_steps(self.grad_accum_steps)
            .with_warmup_ratio(self.warmup_ratio)
            .with_max_len(self.max_len)
            .with_overflow(OverflowPolicy::Skip)
            .with_seed(self.seed)
            .with_checkpoint_every(self.checkpoint_every)
    }
}

/// Stage 5: the comparison on the test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluationSection {
    /// The contenders, in table order.
    pub contenders: Vec<String>,
    /// New tokens generated per test item.
    pub max_new_tokens: usize,
    /// Sequences per generation batch.
    pub batch_size: usize,
    /// Bootstrap resamples of the standard errors.
    pub bootstrap_resamples: usize,
    /// Objective evaluations of LoraHub's search (when `lorahub` is a contender).
    pub lorahub_budget: usize,
}

impl Default for EvaluationSection {
    fn default() -> Self {
        let e = kshot_eval::EvalConfig::default();
        Self {
            contenders: [
                Contender::Base,
                Contender::BestExpert,
                Contender::UniformMerge,
                Contender::Arrow,
                Contender::Lora,
                Contender::Moe,
            ]
            .iter()
            .map(ToString::to_string)
            .collect(),
            max_new_tokens: e.max_new_tokens,
            batch_size: e.batch_size,
            bootstrap_resamples: e.bootstrap_resamples,
            lorahub_budget: moe_router::LoraHubOptions::default().budget,
        }
    }
}

impl EvaluationSection {
    /// The contenders, parsed and checked (no repeats; `base` and `moe` always present).
    ///
    /// # Errors
    /// [`RocketError::Config`] on an unknown or repeated name.
    pub fn contenders(&self) -> Result<Vec<Contender>> {
        let mut out: Vec<Contender> = Vec::new();
        for name in &self.contenders {
            let c: Contender = name
                .parse()
                .map_err(|e| RocketError::Config(format!("evaluation.contenders: {e}")))?;
            if out.contains(&c) {
                return Err(RocketError::Config(format!(
                    "evaluation.contenders: {name:?} is listed twice"
                )));
            }
            out.push(c);
        }
        for must in [Contender::Base, Contender::Moe] {
            if !out.contains(&must) {
                out.insert(
                    if must == Contender::Base {
                        0
                    } else {
                        out.len()
                    },
                    must,
                );
            }
        }
        Ok(out)
    }
}

/// Every option of a Rocket run (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RocketConfig {
    /// What the run reads.
    pub inputs: Inputs,
    /// The base decoder the bank was trained on (file, HF directory or asset name).
    pub model: String,
    /// The precision the model computes in (`f32`, `f16`, `bf16`: `lm_core::model::precision`);
    /// the mixture's experts, router and training stay f32.
    pub dtype: Precision,
    /// Prompt format in training and evaluation: `chat` (the model's template), `plain`, `raw`.
    pub format: String,
    /// Stage 1.
    pub selection: SelectionSection,
    /// Stage 2.
    pub data: DataSection,
    /// Stage 3.
    pub moe: MoeSection,
    /// Stage 4.
    pub train: TrainSection,
    /// Stage 5.
    pub evaluation: EvaluationSection,
}

impl Default for RocketConfig {
    fn default() -> Self {
        Self {
            inputs: Inputs::default(),
            model: DEFAULT_MODEL.into(),
            dtype: Precision::default(),
            format: "chat".into(),
            selection: SelectionSection::default(),
            data: DataSection::default(),
            moe: MoeSection::default(),
            train: TrainSection::default(),
            evaluation: EvaluationSection::default(),
        }
    }
}

impl RocketConfig {
    /// Parses a TOML config (missing keys take their defaults, unknown keys are refused).
    ///
    /// # Errors
    /// [`RocketError::Config`] naming the key and line on a malformed file.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| RocketError::Config(e.to_string()))
    }

    /// Reads a TOML config file.
    ///
    /// # Errors
    /// [`RocketError::Io`] when the file cannot be read, [`RocketError::Config`] when it is
    /// malformed (the message names the file).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| RocketError::io(path, e))?;
        toml::from_str(&text).map_err(|e| RocketError::Config(format!("{}: {e}", path.display())))
    }

    /// The config as TOML, every field written out (the run directory's `config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RocketConfig always serialises to TOML")
    }

    /// The prompt format named by `format`.
    ///
    /// # Errors
    /// [`RocketError::Config`] on another name.
    pub fn prompt_format(&self) -> Result<PromptFormat> {
        match self.format.as_str() {
            "chat" => Ok(PromptFormat::default()),
            "plain" => Ok(PromptFormat::plain()),
            "raw" => Ok(PromptFormat::raw()),
            other => Err(RocketError::Config(format!(
                "format = {other:?}: expected \"chat\", \"plain\" or \"raw\""
            ))),
        }
    }

    /// Checks every value a stage would otherwise reject late (after minutes of work).
    ///
    /// # Errors
    /// [`RocketError::Config`] naming the field, what was found and what is allowed.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(RocketError::Config(m));
        self.prompt_format()?;
        self.evaluation.contenders()?;
        let s = &self.selection;
        if s.experts == 0 {
            return bad("selection.experts = 0: expected at least 1 expert".into());
        }
        if s.shortlist < s.experts {
            return bad(format!(
                "selection.shortlist = {} is smaller than selection.experts = {}: the experts are chosen from the shortlist",
                s.shortlist, s.experts
            ));
        }
        if self.moe.top_k == 0 || self.moe.top_k > s.experts {
            return bad(format!(
                "moe.top_k = {}: expected 1..={} (selection.experts)",
                self.moe.top_k, s.experts
            ));
        }
        if !(0.0..=1.0).contains(&self.data.dedup_threshold) {
            return bad(format!(
                "data.dedup_threshold = {}: expected a cosine similarity in [0, 1]",
                self.data.dedup_threshold
            ));
        }
        let t = &self.train;
        if t.epochs == 0 || t.batch_size == 0 || t.grad_accum_steps == 0 {
            return bad(
                "train.epochs, train.batch_size and train.grad_accum_steps must be >= 1".into(),
            );
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad(format!("train.lr = {}: expected a positive number", t.lr));
        }
        if t.lora.r == 0 {
            return bad("train.lora.r = 0: expected a rank >= 1".into());
        }
        if self.evaluation.max_new_tokens == 0 || self.selection.max_new_tokens == 0 {
            return bad("max_new_tokens must be >= 1".into());
        }
        if self.inputs.k == Some(0) || self.inputs.test_limit == Some(0) {
            return bad("inputs.k and inputs.test_limit must be >= 1 when given".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let c = RocketConfig::default();
        let text = c.to_toml();
        assert!(text.contains("signal = \"combined-diversity\""), "{text}");
        assert!(text.contains("mode = \"similar-dedup\""), "{text}");
        assert_eq!(RocketConfig::from_toml_str(&text).unwrap(), c);
        c.validate().unwrap();
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let c = RocketConfig::from_toml_str(
            "[selection]\nsignal = \"random\"\nexperts = 2\n[train]\nlr = 1e-3\n",
        )
        .unwrap();
        assert_eq!(c.selection.signal, SelectionSignal::Random);
        assert_eq!(c.selection.experts, 2);
        assert_eq!(c.train.lr, 1e-3);
        assert_eq!(c.train.epochs, TrainSection::default().epochs);
        assert_eq!(c.data, DataSection::default());
    }

    #[test]
    fn typos_and_bad_values_are_refused_with_the_key() {
        let e = RocketConfig::from_toml_str("[selection]\nexpert = 2\n").unwrap_err();
        assert!(e.to_string().contains("expert"), "{e}");
        let e = RocketConfig::from_toml_str("[data]\nmode = \"nearest\"\n").unwrap_err();
        assert!(e.to_string().contains("similar-dedup"), "{e}");
        let mut c = RocketConfig::default();
        c.moe.top_k = 5;
        assert!(c.validate().unwrap_err().to_string().contains("moe.top_k"));
        c = RocketConfig::default();
        c.evaluation.contenders = vec!["base".into(), "lora".into(), "lora".into()];
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn base_and_moe_are_always_contenders() {
        let e = EvaluationSection {
            contenders: vec!["lora".into()],
            ..Default::default()
        };
        assert_eq!(
            e.contenders().unwrap(),
            vec![Contender::Base, Contender::Lora, Contender::Moe]
        );
    }
}
