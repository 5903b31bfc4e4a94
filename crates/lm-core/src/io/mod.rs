//! Readers of model file formats: GGUF (with dequantisation) and safetensors. This layer imports
//! nothing above it: HF `config.json` parsing lives in [`crate::model::hf_config`], the HF
//! checkpoint exporter in [`crate::export`].

pub mod dequant;
pub mod gguf;
pub mod safetensors;
