//! tapir-curriculum: TAPIR's task-aware curriculum distillation (Yue et al. 2024, "Distilling
//! Instruction-following Abilities of Large Language Models with Task-aware Curriculum
//! Planning"; ALGORITHMS.md section 3), model-free.
#![warn(missing_docs)]

pub mod chat;
pub mod error;
pub mod expand;
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

pub use error::{BoxError, Result, TapirError};
