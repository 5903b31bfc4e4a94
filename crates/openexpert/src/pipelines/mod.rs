//! End-to-end pipelines that tie the selection algorithms of `data-select` to lm-core models:
//! - [`diverse_evol`]: DiverseEvol's rounds of re-embedding, k-center picks and LoRA training.
pub mod diverse_evol;
pub mod rocket;
