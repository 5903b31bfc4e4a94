//! End-to-end pipelines that tie the library crates to lm-core models:
//! - [`diverse_evol`]: DiverseEvol's rounds of re-embedding, k-center picks and LoRA training;
//! - [`evolve_test`]: held-out test accuracy of every round and the random-selection baseline;
//! - [`evolve_report`]: the run against its baseline, round by round (JSON, markdown, SVG);
//! - [`rocket`]: Rocket end to end, from a K-shot set, a LoRA bank and an open pool to a
//!   fine-tuned mixture of experts, with the comparison and the report;
//! - [`tapir`]: TAPIR's curriculum distillation with local or OpenAI-compatible teachers;
//! - [`run_options`]: how the resumable pipelines run (directory, force, progress, device).
pub mod diverse_evol;
pub mod evolve_report;
pub mod evolve_test;
pub mod rocket;
pub mod run_options;
pub mod tapir;

pub use run_options::RunOptions;
