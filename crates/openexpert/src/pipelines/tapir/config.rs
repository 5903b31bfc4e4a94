//! [`TapirConfig`]: every option of a TAPIR run, read from one TOML file.
//!
//! Sections: `[data]` (seed and held-out instructions), `[teacher]`, `[judge]`, `[classifier]`
//! (each a local model or an OpenAI-compatible endpoint, with a `sampling` sub-table),
//! `[student]` (a local model trained with LoRA, `[student.train]`), `[dedup]` (the embedder of
//! the embedding dedup) and `[curriculum]` (rounds, α, sizes, MFD, expansion, task mix,
//! `[curriculum.ablation]`; [`CurriculumConfig`]). Missing keys take their defaults, unknown
//! keys are refused, so a typo never silently falls back to a default.
//!
//! A role is **remote** when it has a `url` (`http://host:port/v1`), otherwise **local** (an
//! lm-core model: a default asset name, a GGUF file or an HF directory, plus optional PEFT
//! `adapters`). `[judge]` and `[classifier]` without a `model` use the teacher's model and
//! endpoint (TAPIR's teacher doubles as the judge; the local model is then loaded once).
//!
//! Defaults: teacher and judge `qwen2.5-0.5b-instruct` (local), student
//! `smollm2-135m-instruct` with LoRA r 8 / α 16 on q/v, lr 2e-4 for 3 epochs per round
//! (ALGORITHMS.md 3(c) recommends 3 epochs per round; the lr is the LoRA default, the paper's
//! 2e-5 is for full fine-tuning).

use std::path::{Path, PathBuf};

use lm_core::assets::DEFAULT_MODEL;
use lm_core::model::Precision;
use lm_core::train::{LoraTrainConfig, OverflowPolicy, TrainConfig};
use serde::{Deserialize, Serialize};
use tapir_curriculum::CurriculumConfig;
use tapir_curriculum::prompted::{ClassifierSampling, JudgeSampling, TeacherSampling};

use super::error::{Result, TapirRunError};

/// The default local teacher and judge.
pub const DEFAULT_TEACHER: &str = "qwen2.5-0.5b-instruct";

/// Where the seed and held-out instructions come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// JSONL files or glob patterns of seed instructions. A line's instruction is its
    /// `instruction` (+ `input`), `question` or `prompt` field, or the first user turn of its
    /// `messages` / `conversations`.
    pub seeds: Vec<String>,
    /// Seeds taken from each file, after a seeded shuffle (0 = all).
    pub seeds_per_file: usize,
    /// JSONL files or glob patterns of held-out instructions (never trained on, never used as
    /// expansion seeds; new instructions too close to them are dropped).
    pub heldout: Vec<String>,
    /// Held-out instructions taken from each file (0 = all).
    pub heldout_per_file: usize,
    /// Seed of the per-file shuffles.
    pub seed: u64,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            seeds: vec!["assets/datasets/*/train.jsonl".into()],
            seeds_per_file: 4,
            heldout: vec!["assets/datasets/*/eval.jsonl".into()],
            heldout_per_file: 1,
            seed: 42,
        }
    }
}

/// What must match for two roles to share one loaded model or one endpoint: model, URL,
/// adapters, API key variable and precision ([`RoleSection::identity`]).
pub type RoleIdentity = (String, String, Vec<PathBuf>, Option<String>, Precision);

/// A teacher, judge or classifier: a local model or an OpenAI-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoleSection<S> {
    /// Local: a model asset name, GGUF file or HF directory. Remote: the served model's name.
    /// Judge and classifier: empty means the teacher's model and endpoint.
    pub model: String,
    /// Remote: the endpoint's base URL up to `/v1`; empty means a local model.
    pub url: String,
    /// Remote: the environment variable holding the API key (none: no key sent).
    pub api_key_env: Option<String>,
    /// Remote: seconds for a whole call.
    pub timeout_s: f64,
    /// Remote: most calls in flight.
    pub max_concurrency: usize,
    /// Remote: extra attempts after a 429, 5xx, timeout or dropped connection.
    pub max_retries: usize,
    /// Local: PEFT adapters applied to the model (summed with weight 1).
    pub adapters: Vec<PathBuf>,
    /// Local: the precision the model computes in (`f32`, `f16`, `bf16`;
    /// `lm_core::model::precision`).
    pub dtype: Precision,
    /// Local: prompts generated per batch.
    pub batch_size: usize,
    /// How the role samples.
    pub sampling: S,
}

impl<S: Default> Default for RoleSection<S> {
    fn default() -> Self {
        let e = llm_client::Endpoint::default();
        Self {
            model: String::new(),
            url: String::new(),
            api_key_env: None,
            timeout_s: e.timeout_s,
            max_concurrency: e.max_concurrency,
            max_retries: e.max_retries,
            adapters: Vec::new(),
            dtype: Precision::default(),
            batch_size: 8,
            sampling: S::default(),
        }
    }
}

impl<S> RoleSection<S> {
    /// Whether the role calls an endpoint.
    pub fn is_remote(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The endpoint settings of a remote role.
    pub fn endpoint(&self) -> llm_client::Endpoint {
        llm_client::Endpoint {
            base_url: self.url.trim().to_string(),
            model: self.model.clone(),
            api_key_env: self.api_key_env.clone(),
            timeout_s: self.timeout_s,
            max_concurrency: self.max_concurrency,
            max_retries: self.max_retries,
            ..llm_client::Endpoint::default()
        }
    }

    /// Where the role runs, for messages and reports.
    pub fn describe(&self) -> String {
        if self.is_remote() {
            format!("{} at {}", self.model, self.url.trim())
        } else {
            let dtype = match self.dtype {
                Precision::F32 => String::new(),
                p => format!(" in {p}"),
            };
            match self.adapters.len() {
                0 => format!("local {}{dtype}", self.model),
                n => format!("local {} + {n} adapter(s){dtype}", self.model),
            }
        }
    }

    /// The identity of the model behind the role (what must match for two roles to share one
    /// loaded model or one endpoint).
    pub fn identity(&self) -> RoleIdentity {
        (
            self.model.clone(),
            self.url.trim().to_string(),
            self.adapters.clone(),
            self.api_key_env.clone(),
            self.dtype,
        )
    }

    /// This role's endpoint fields taken from `other` (judge and classifier without a model).
    pub fn inherit<T>(&mut self, other: &RoleSection<T>) {
        if self.model.is_empty() {
            self.model = other.model.clone();
            self.url = other.url.clone();
            self.api_key_env = other.api_key_env.clone();
            self.adapters = other.adapters.clone();
            self.dtype = other.dtype;
            self.timeout_s = other.timeout_s;
            self.max_concurrency = other.max_concurrency;
            self.max_retries = other.max_retries;
            self.batch_size = other.batch_size;
        }
    }
}

/// The student's fine-tuning in each round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudentTrain {
    /// Peak AdamW learning rate.
    pub lr: f64,
    /// Passes over each round's data.
    pub epochs: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum_steps: usize,
    /// Warm-up fraction of each round's steps.
    pub warmup_ratio: f64,
    /// Longest example in tokens (longer ones are truncated).
    pub max_len: usize,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
    /// Checkpoint every this many steps (a killed round resumes from the last one).
    pub checkpoint_every: usize,
    /// LoRA rank.
    pub r: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// LoRA dropout.
    pub dropout: f64,
    /// Adapted modules.
    pub targets: Vec<String>,
}

impl Default for StudentTrain {
    fn default() -> Self {
        let t = TrainConfig::new(LoraTrainConfig::new());
        Self {
            lr: t.lr,
            epochs: 3,
            batch_size: t.batch_size,
            grad_accum_steps: t.grad_accum_steps,
            warmup_ratio: t.warmup_ratio,
            max_len: t.max_len,
            seed: t.seed,
            checkpoint_every: 10,
            r: t.lora.r,
            alpha: t.lora.alpha,
            dropout: t.lora.dropout,
            targets: t.lora.target_modules.clone(),
        }
    }
}

impl StudentTrain {
    /// The lm-core trainer config.
    pub fn config(&self) -> TrainConfig {
        TrainConfig::new(
            LoraTrainConfig::new()
                .with_r(self.r)
                .with_alpha(self.alpha)
                .with_dropout(self.dropout)
                .with_target_modules(self.targets.clone()),
        )
        .with_lr(self.lr)
        .with_epochs(self.epochs)
        .with_batch_size(self.batch_size)
        .with_grad_accum_steps(self.grad_accum_steps)
        .with_warmup_ratio(self.warmup_ratio)
        .with_max_len(self.max_len)
        .with_overflow(OverflowPolicy::Truncate)
        .with_seed(self.seed)
        .with_checkpoint_every(self.checkpoint_every)
    }
}

/// The student: a local model trained with LoRA, round after round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StudentSection {
    /// The model (asset name, GGUF file or HF directory).
    pub model: String,
    /// The precision it computes in (`f32`, `f16`, `bf16`); its LoRA adapters train in f32.
    pub dtype: Precision,
    /// Most new tokens of an answer.
    pub max_new_tokens: usize,
    /// Prompts generated per batch.
    pub batch_size: usize,
    /// Fine-tuning.
    pub train: StudentTrain,
}

impl Default for StudentSection {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.into(),
            dtype: Precision::default(),
            max_new_tokens: 256,
            batch_size: 8,
            train: StudentTrain::default(),
        }
    }
}

/// The sentence encoder of `curriculum.expansion.dedup = "embedding"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupSection {
    /// The encoder (asset name or HF BERT directory).
    pub embedder: String,
}

impl Default for DedupSection {
    fn default() -> Self {
        Self {
            embedder: lm_core::assets::DEFAULT_ENCODER.into(),
        }
    }
}

/// Every option of a TAPIR run (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TapirConfig {
    /// Seed and held-out instructions.
    pub data: DataSection,
    /// The teacher.
    pub teacher: RoleSection<TeacherSampling>,
    /// The judge (default: the teacher's model).
    pub judge: RoleSection<JudgeSampling>,
    /// The task classifier (default: the teacher's model).
    pub classifier: RoleSection<ClassifierSampling>,
    /// The student.
    pub student: StudentSection,
    /// The embedder of the embedding dedup.
    pub dedup: DedupSection,
    /// The curriculum.
    pub curriculum: CurriculumConfig,
}

impl Default for TapirConfig {
    fn default() -> Self {
        Self {
            data: DataSection::default(),
            teacher: RoleSection {
                model: DEFAULT_TEACHER.into(),
                ..RoleSection::default()
            },
            judge: RoleSection::default(),
            classifier: RoleSection::default(),
            student: StudentSection::default(),
            dedup: DedupSection::default(),
            curriculum: CurriculumConfig::default(),
        }
    }
}

impl TapirConfig {
    /// Parses a TOML config.
    ///
    /// # Errors
    /// [`TapirRunError::Config`] naming the key on a malformed text.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| TapirRunError::Config(e.to_string()))
    }

    /// Reads a TOML config file.
    ///
    /// # Errors
    /// [`TapirRunError::Io`] when unreadable, [`TapirRunError::Config`] when malformed (the
    /// message names the file).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TapirRunError::io(path, e))?;
        toml::from_str(&text).map_err(|e| TapirRunError::Config(format!("{}: {e}", path.display())))
    }

    /// The config as TOML, every field written out (the run directory's `config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a TapirConfig always serialises to TOML")
    }

    /// The config with judge and classifier endpoints filled from the teacher's where they name
    /// no model.
    pub fn resolved(&self) -> Self {
        let mut c = self.clone();
        c.judge.inherit(&self.teacher);
        c.classifier.inherit(&self.teacher);
        c
    }

    /// Checks every value a stage would otherwise reject late.
    ///
    /// # Errors
    /// [`TapirRunError::Config`] naming the key, what was found and what is allowed.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TapirRunError::Config(m));
        let c = self.resolved();
        if c.data.seeds.is_empty() {
            return bad(
                "data.seeds is empty: expected JSONL files or glob patterns of seed instructions"
                    .into(),
            );
        }
        if c.teacher.model.trim().is_empty() {
            return bad("teacher.model is empty: expected a local model (e.g. qwen2.5-0.5b-instruct) or, with teacher.url, the served model's name".into());
        }
        for (name, remote, endpoint, batch) in [
            (
                "teacher",
                c.teacher.is_remote(),
                c.teacher.endpoint(),
                c.teacher.batch_size,
            ),
            (
                "judge",
                c.judge.is_remote(),
                c.judge.endpoint(),
                c.judge.batch_size,
            ),
            (
                "classifier",
                c.classifier.is_remote(),
                c.classifier.endpoint(),
                c.classifier.batch_size,
            ),
        ] {
            if remote {
                endpoint
                    .check()
                    .map_err(|e| TapirRunError::Config(format!("{name}: {e}")))?;
            } else if batch == 0 {
                return bad(format!("{name}.batch_size = 0: expected at least 1"));
            }
        }
        let remote_adapters = [
            (
                "teacher",
                c.teacher.is_remote() && !c.teacher.adapters.is_empty(),
            ),
            ("judge", c.judge.is_remote() && !c.judge.adapters.is_empty()),
            (
                "classifier",
                c.classifier.is_remote() && !c.classifier.adapters.is_empty(),
            ),
        ];
        if let Some((name, _)) = remote_adapters.iter().find(|(_, b)| *b) {
            return bad(format!(
                "{name}.adapters is set for a remote {name} ({name}.url): adapters apply to local models only; serve the adapter with the endpoint instead"
            ));
        }
        for (name, remote, dtype) in [
            ("teacher", c.teacher.is_remote(), c.teacher.dtype),
            ("judge", c.judge.is_remote(), c.judge.dtype),
            ("classifier", c.classifier.is_remote(), c.classifier.dtype),
        ] {
            if remote && dtype != Precision::F32 {
                return bad(format!(
                    "{name}.dtype = \"{dtype}\" is set for a remote {name} ({name}.url): the endpoint \
                     computes in its own precision (e.g. `openexpert serve --dtype {dtype}`); \
                     remove the key"
                ));
            }
        }
        if c.teacher.sampling.max_new_tokens == 0
            || c.teacher.sampling.expand_max_new_tokens == 0
            || c.judge.sampling.max_new_tokens == 0
            || c.classifier.sampling.max_new_tokens == 0
            || c.student.max_new_tokens == 0
        {
            return bad("every max_new_tokens must be >= 1".into());
        }
        let t = &c.student.train;
        if t.epochs == 0 || t.batch_size == 0 || t.grad_accum_steps == 0 || t.r == 0 {
            return bad(
                "student.train.epochs, batch_size, grad_accum_steps and r must be >= 1".into(),
            );
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad(format!(
                "student.train.lr = {}: expected a positive number",
                t.lr
            ));
        }
        if c.student.batch_size == 0 {
            return bad("student.batch_size = 0: expected at least 1".into());
        }
        self.curriculum.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml_and_validate() {
        let c = TapirConfig::default();
        let text = c.to_toml();
        assert_eq!(TapirConfig::from_toml_str(&text).unwrap(), c);
        c.validate().unwrap();
        let r = c.resolved();
        assert_eq!(r.judge.model, DEFAULT_TEACHER);
        assert!(!r.judge.is_remote());
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults_and_typos_are_refused() {
        let c = TapirConfig::from_toml_str(
            "[judge]\nmodel = \"m\"\nurl = \"http://127.0.0.1:9/v1\"\n[curriculum]\nrounds = 1\nalpha = [0.5]\nsizes = [4]\n[curriculum.ablation]\nrefine = false\n",
        )
        .unwrap();
        assert!(c.judge.is_remote());
        assert_eq!(
            c.judge.endpoint().chat_url(),
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert!(!c.curriculum.ablation.refine);
        assert!(c.curriculum.ablation.mfd_filter);
        assert_eq!(c.student, StudentSection::default());
        c.validate().unwrap();
        let e = TapirConfig::from_toml_str("[teacher]\nmodle = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("modle"), "{e}");
        let e = TapirConfig::from_toml_str("[curriculum.ablation]\nno_mfd = true\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no_mfd"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut c = TapirConfig::default();
        c.judge.model = "m".into();
        c.judge.url = "localhost:8080".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("judge") && e.contains("base_url"), "{e}");
        let mut c = TapirConfig::default();
        c.curriculum.rounds = 2;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("curriculum.alpha"), "{e}");
        let mut c = TapirConfig::default();
        c.teacher.url = "http://h/v1".into();
        c.teacher.adapters = vec!["a".into()];
        assert!(c.validate().unwrap_err().to_string().contains("adapters"));
        let mut c = TapirConfig::default();
        c.judge.model = "m".into();
        c.judge.url = "http://h/v1".into();
        c.judge.dtype = Precision::Bf16;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("judge.dtype") && e.contains("remote"), "{e}");
    }
}
