//! data-select: choose the few instructions worth training on.
//!
//! Model-free selection core over `ndarray`:
//! - [`jsonl`]: the one JSONL reader (numbered lines);
//! - [`pool`]: Alpaca / ShareGPT / chat JSONL pools with stable ids and content hashes; [`salvage`] recovers the
//!   complete records of a truncated JSON array;
//! - [`embed`]: the [`embed::Embedder`] trait and an on-disk [`embed::EmbeddingCache`];
//! - [`kcenter`]: DiverseEvol's k-center greedy with O(N) memory; [`evolve`]: the DiverseEvol rounds (pick, train,
//!   re-embed) behind a model trait, resumable;
//! - [`retrieve`] and [`dedup`]: Rocket's K-shot retrieval and near-duplicate removal;
//! - [`baselines`]: random, k-means cluster sampling, uncertainty selectors; [`vendi`]: the Vendi diversity score;
//! - [`indices`]: row-index files (labelled / selected rows); [`npy`]: `.npy` matrices;
//! - [`names`]: one spelling per algorithm switch ([`named_enum!`]), for configs and command lines.
//!
//! The `openexpert select ...` commands that drive these live in the `openexpert` crate.
#![warn(missing_docs)]

pub mod baselines;
pub mod dedup;
pub mod distance;
pub mod embed;
pub mod error;
pub mod evolve;
pub mod indices;
pub mod jsonl;
pub mod kcenter;
/// One spelling per algorithm switch (the `named-enum` crate).
pub mod names {
    pub use named_enum::UnknownName;
}
pub use named_enum::named_enum;
pub mod npy;
pub mod pool;
pub mod retrieve;
pub mod salvage;
pub mod vendi;

pub use distance::Metric;
pub use error::{BoxError, Result, SelectError};
pub use kcenter::{KCenterOptions, KCenterReport, kcenter_greedy};
