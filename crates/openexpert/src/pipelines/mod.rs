//! End-to-end pipelines that tie the selection algorithms of `data-select` to lm-core models:
//! - [`diverse_evol`]: DiverseEvol's rounds of re-embedding, k-center picks and LoRA training;
//! - [`rocket`]: Rocket end to end;
//! - [`tapir`]: TAPIR's curriculum distillation with local or OpenAI-compatible teachers.
pub mod diverse_evol;
pub mod rocket;
pub mod tapir;
