//! GGUF v2/v3 model files: metadata values (`value.rs`), the memory-mapped reader [`GgufFile`]
//! (`reader.rs`) and a test-only writer, `GgufWriter` (`writer.rs`, behind `cfg(test)` or the
//! `test-util` feature).
//!
//! A GGUF file is: the magic `GGUF`, a `u32` version, `u64` tensor and metadata counts, the
//! metadata key/value pairs, one info record per tensor (name, dims in ggml order, ggml type,
//! offset), padding to the alignment (`general.alignment`, default 32), then the tensor data.
//! Everything is little-endian.
//!
//! [`GgufFile::open`] maps the file and validates the whole header before returning: every
//! count is checked against the bytes that remain before anything is allocated from it, string
//! and array lengths are bounded, types are known, tensors have 1..=4 nonzero dims whose element
//! count does not overflow, quantised rows are whole blocks, and every tensor's data lies inside
//! the file without overlapping another. Any violation is an [`LmError::Corrupt`](crate::LmError::Corrupt) (or
//! [`LmError::UnsupportedDtype`](crate::LmError::UnsupportedDtype) for an unknown ggml type) saying what was expected and found.
//!
//! Tensor shapes are reported in PyTorch order (ggml lists the fastest-varying dim first, so
//! they are reversed). [`GgufFile::tensor_f32`] dequantises through [`super::dequant`].
//! Undoing llama.cpp's Llama `q`/`k` row permutation is model-layout work: it lives next to the
//! GGUF weights, in [`crate::model::loader::unpermute_llama_qk`].

mod reader;
mod value;
#[cfg(any(test, feature = "test-util"))]
mod writer;

pub use reader::*;
pub use value::*;
#[cfg(any(test, feature = "test-util"))]
pub use writer::*;
