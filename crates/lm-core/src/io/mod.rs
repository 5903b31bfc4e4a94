//! Readers for model files: GGUF (with dequantisation), safetensors and HF `config.json`.

pub mod dequant;
pub mod gguf;
pub mod hf_config;
pub mod safetensors;
