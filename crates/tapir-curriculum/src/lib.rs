//! tapir-curriculum: TAPIR's task-aware curriculum distillation (Yue, Wang, Huang, Wang 2024,
//! "Distilling Instruction-following Abilities of Large Language Models with Task-aware
//! Curriculum Planning", arXiv 2405.13448; ALGORITHMS.md section 3), model-free.
//!
//! A teacher answers a seed pool; a judge scores the student against the teacher on each
//! instruction (model-fitting difficulty, MFD); hard seeds of categories drawn from a rebalanced
//! task mix are expanded by the teacher into new instructions; training responses are refined
//! with task-specific prompts; the student trains over rounds whose hard share rises. Every
//! model sits behind a trait, so all of it runs with fakes:
//!
//! - [`roles`]: [`roles::Teacher`], [`roles::Judge`], [`roles::TaskClassifier`],
//!   [`roles::Student`] over plain strings; [`chat`]: chat requests, replies, call counts and
//!   the [`chat::ChatBackend`] that local models and HTTP clients implement; [`prompted`]: the
//!   roles over any backend, with [`prompts`] the prompts they send; [`fakes`]: deterministic
//!   stand-ins;
//! - [`judge_parse`]: the judge's `[[score]]` tags, last valid one wins; [`pairwise`]: both
//!   presentation orders, re-asks, unscored items, consistency and win rates; [`mfd`]: MFD and
//!   `hard ⇔ MFD ≥ δ`;
//! - [`taxonomy`]: the 32 categories, target ratios, classifier prompt and parse order;
//!   [`rebalance`]: seeded resampling to the mix and category-first expansion draws;
//! - [`expand`]: new instructions, filtered and de-duplicated ([`similarity`]: ROUGE-L or
//!   embeddings); [`refine`]: task-aware response refinement;
//! - [`config`]: the curriculum's settings and ablation switches; [`curriculum`]: the rounds,
//!   with atomic, resumable round files.
//!
//! The lm-core and OpenAI-compatible implementations of the roles, the `openexpert tapir`
//! command and its report live in the `openexpert` facade (`pipelines::tapir`).
#![warn(missing_docs)]

pub mod chat;
pub mod config;
pub mod curriculum;
pub mod error;
pub mod expand;
pub mod fakes;
pub mod judge_parse;
pub mod mfd;
pub mod pairwise;
pub mod prompted;
pub mod prompts;
pub mod rebalance;
pub mod refine;
pub mod roles;
pub mod similarity;
pub mod taxonomy;

pub use config::{Ablation, CurriculumConfig};
pub use curriculum::{CurriculumOutcome, Instruction, Roles, run_curriculum};
pub use error::{BoxError, Result, TapirError};
