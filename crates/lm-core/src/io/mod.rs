//! Readers of model file formats: GGUF (with dequantisation) and safetensors. This layer imports
//! nothing above it: HF `config.json` parsing lives in [`crate::model::hf_config`], the HF
//! checkpoint exporter in [`crate::export`].

pub mod dequant;
pub mod gguf;
pub mod safetensors;

// Old paths, kept only so the command-line files (being moved on another branch) still compile;
// remove once they name `crate::export` and `crate::model::hf_config`.
#[doc(hidden)]
pub use crate::export as hf_export;
#[doc(hidden)]
pub use crate::model::hf_config;
