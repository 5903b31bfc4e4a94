//! End-to-end pipelines that tie the selection algorithms of `data-select` to lm-core models:
//! - [`diverse_evol`]: DiverseEvol's rounds of re-embedding, k-center picks and LoRA training;
//! - [`evolve_test`]: held-out test accuracy of every round and the random-selection baseline;
//! - [`evolve_report`]: the run against its baseline, round by round (JSON, markdown, SVG).
pub mod diverse_evol;
pub mod evolve_report;
pub mod evolve_test;
