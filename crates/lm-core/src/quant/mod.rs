//! Decoding from quantised weights: the projections of a decode step multiplied directly by
//! the GGUF's blocks (Q8_0, Q4_1, Q5_0, Q4_K, Q6_K), as llama.cpp does, instead of by the f32
//! copy the loader dequantised.
//!
//! A decode step reads every weight once for one token per row, so it is bound by memory
//! bandwidth: 4.5-8.5 bits per weight instead of 32 is the saving. The activations are
//! quantised to i8 per 32 values ([`format::ActBlock`]) and each weight row is an integer dot
//! product scaled in f32 ([`format`], `avx2` where the CPU has AVX2 + FMA + F16C, detected at
//! run time; a portable kernel otherwise), rows split over rayon's threads ([`QuantMatrix`]).
//!
//! # When the quantised weights are used
//! Only inside [`decoding`] (the decode steps and the first-token logits of
//! [`generate`](crate::generate)), on the CPU backend outside autodiff, for calls of one token
//! per row and at most [`MAX_DECODE_ROWS`] rows. Prefill, scoring and training always use the
//! f32 weights, which the model keeps: `--decode-weights` changes decoding only. LoRA experts on a
//! layer add their f32 delta to the quantised base product.
//!
//! # Formats ([`WeightFormat`])
//! - `f32`: no quantised copy (the default; exactly the old behaviour).
//! - `q8_0`: every projection and the output head re-quantised to Q8_0 from the f32 weights
//!   (any model, safetensors too).
//! - `native`: each GGUF tensor kept in its own format where a kernel exists
//!   ([`QuantType`]), the others left to f32.

mod attach;
#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod format;
mod matmul;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};

pub use attach::{QuantReport, quantize_decoder};
pub use format::QuantType;
pub use matmul::{Kernel, QuantMatrix};

/// Largest number of token rows (batch × 1) a decode step sends through the quantised kernels;
/// above it the f32 matmul, which reuses each weight it reads for every row, is faster (the
/// quantised kernels run each row separately). Measured on SmolLM2 native (Q4_1), greedy
/// decoding, new tokens/s f32 vs quantised: batch 1 14 vs 67, 2 27 vs 78, 4 41 vs 41, 8 47 vs
/// 35, 16 65 vs 33 (`examples/quant_decode.rs`, `QUANT_BATCHES`).
pub const MAX_DECODE_ROWS: usize = 4;

/// Which weights decoding multiplies by (`--decode-weights`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// The f32 weights (dequantised at load).
    #[default]
    F32,
    /// Every projection re-quantised to Q8_0.
    Q8_0,
    /// The GGUF's own formats where a kernel exists, f32 elsewhere.
    Native,
}

impl WeightFormat {
    /// The option's spellings.
    pub const NAMES: &str = "f32, q8_0, native";

    /// Its spelling on the command line.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Q8_0 => "q8_0",
            WeightFormat::Native => "native",
        }
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = crate::LmError;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(WeightFormat::F32),
            "q8_0" | "q8" => Ok(WeightFormat::Q8_0),
            "native" => Ok(WeightFormat::Native),
            _ => Err(crate::LmError::InvalidInput(format!(
                "unknown weight format {s:?}; expected one of {}",
                WeightFormat::NAMES
            ))),
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

thread_local! {
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as a decode step: layers with a quantised copy multiply by it (see the module
/// docs for the conditions). Nested calls and panics restore the previous state.
pub fn decoding<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DECODING.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DECODING.with(|d| d.replace(true)));
    f()
}

/// The quantised copy of a linear layer's weight (and its bias in f32), shared by clones.
#[derive(Debug, Clone)]
pub struct QuantLinear {
    /// `[d_out, d_in]` weight.
    pub matrix: Arc<QuantMatrix>,
    /// `[d_out]` bias.
    pub bias: Option<Arc<[f32]>>,
}

impl QuantLinear {
    /// `x · Wᵀ + b` through the quantised weight, or `None` when this call must use the f32
    /// weights (outside [`decoding`], not the CPU backend, autodiff, more than one token per
    /// row or more than [`MAX_DECODE_ROWS`] rows).
    ///
    /// # Shapes
    /// - `x`: `[batch, 1, d_in]` -> `[batch, 1, d_out]`
    pub fn forward(&self, x: &Tensor<3>) -> Option<Tensor<3>> {
        let [b, s, d_in] = x.dims();
        if !DECODING.with(Cell::get)
            || s != 1
            || b > MAX_DECODE_ROWS
            || d_in != self.matrix.cols()
            || !on_cpu_backend(&x.device())
        {
            return None;
        }
        let host = x.clone().into_data().try_into_vec::<f32>().ok()?;
        let mut y = self.matrix.matmul(&host);
        let d_out = self.matrix.rows();
        if let Some(bias) = &self.bias {
            for row in y.chunks_exact_mut(d_out) {
                row.iter_mut().zip(bias.iter()).for_each(|(v, b)| *v += b);
            }
        }
        Some(Tensor::from_data(
            TensorData::new(y, [b, s, d_out]),
            &x.device(),
        ))
    }
}

/// Whether tensors on `device` live in host memory as f32 (burn's `flex` CPU backend, not
/// wrapped in autodiff): the quantised kernels read and write them there.
pub fn on_cpu_backend(device: &burn::tensor::Device) -> bool {
    #[cfg(feature = "flex")]
    {
        !device.is_autodiff() && *device == burn::tensor::Device::flex()
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}
