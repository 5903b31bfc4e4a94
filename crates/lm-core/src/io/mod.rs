//! Readers for model files: GGUF (with dequantisation), safetensors and HF `config.json`; the HF
//! checkpoint exporter.

pub mod dequant;
pub mod gguf;
pub mod hf_config;
pub mod hf_export;
pub mod safetensors;
