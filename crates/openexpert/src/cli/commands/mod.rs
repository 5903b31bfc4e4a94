//! One module per command: its arguments (`*Args`, built from the [`super::args`] groups) and
//! its `run`.

#[cfg(feature = "bench")]
pub mod bench_runtime;
#[cfg(feature = "bench")]
pub mod bench_train;
pub mod embed;
pub mod eval;
pub mod evolve;
pub mod fetch;
pub mod generate;
pub mod lora;
pub mod moe;
pub mod rank_bank;
pub mod rocket;
pub mod score;
pub mod select;
pub mod serve;
pub mod tapir;
pub mod train;
