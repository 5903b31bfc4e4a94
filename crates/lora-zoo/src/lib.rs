//! lora-zoo: PEFT LoRA adapters in and out, adapter algebra, a bank index and similarity.
//!
//! - [`config`]: `adapter_config.json` with PEFT's defaults and matching rules (targets, rank/alpha
//!   patterns, rsLoRA scaling).
//! - [`adapter`]: reading `adapter_model.safetensors` into f32 factors and validating them against a
//!   [`spec::BaseModelSpec`], with a named error for everything we refuse.
//! - [`writer`]: writing PEFT directories that the `peft` library loads unchanged.
//! - [`linalg`]: the small dense kernels the algebra needs (Householder QR, Jacobi SVD, truncated SVD).
//! - [`combine`]: combining adapters exactly in ΔW space (linear, cat, SVD) and by TIES / DARE /
//!   magnitude pruning.
//! - [`similarity`]: the Rocket per-factor criterion and the gauge-invariant ΔW cosine, for a bank.
//! - [`bank`]: a lazily loaded directory of adapters.
//! - [`merge`]: merging adapters (any combination) into the base and exporting an HF checkpoint.
//!
//! The `openexpert lora ...` commands that drive these live in the `openexpert` crate.
#![warn(missing_docs)]

pub mod adapter;
pub mod apply;
pub mod bank;
pub mod combine;
pub mod config;
pub mod error;
pub mod linalg;
pub mod merge;
pub mod similarity;
pub mod spec;
pub mod trained;
pub mod writer;

pub use adapter::{AdapterLoadOptions, LoadReport, LoraAdapter, LoraModule, ValidationReport};
pub use bank::{BankEntry, LoraBank};
pub use combine::{CombineMethod, CombineOptions, MajoritySign, combine};
pub use config::AdapterConfig;
pub use error::{LoraError, Result};
pub use similarity::{SimilarityMode, similarity_matrix};
pub use spec::BaseModelSpec;
pub use trained::{adapter_from_trained, trained_from_adapter};
