//! Mixed precision: the dtype a decoder's frozen weights and activations are kept in.
//!
//! A decoder is built in f32. [`Decoder::set_precision`](super::Decoder::set_precision) casts
//! its embedding, its projections (their base weights and biases) and its output head to f16 or
//! bf16; the residual stream and the block activations then flow in that dtype. What stays f32,
//! and why:
//!
//! | part | dtype | as in |
//! |---|---|---|
//! | embedding, q/k/v/o, gate/up/down, output head | the precision | transformers with `torch_dtype` |
//! | matmul accumulation | f32 | cubecl's `MatmulElems::from_globals` (f16/bf16 outputs accumulate in f32); flex upcasts bf16 matmuls to f32 and runs f16 ones through `gemm`'s f16 path (f32 accumulation from two rows up, so a lone f16 row is multiplied as a pair: `kernels::frozen_linear`) |
//! | attention softmax | f32 | burn's attention: flex casts f16/bf16 q, k, v to f32, cubecl's flash attention accumulates in f32 |
//! | RMSNorm (and the per-head q/k norms) | computed in f32, output cast back | transformers' `LlamaRMSNorm` / `Gemma3RMSNorm` (`hidden_states.to(torch.float32)`) |
//! | RoPE | computed in f32, output cast back | the f32 tables of [`Rope`](super::layers::Rope) |
//! | LoRA experts and routers (A, B, gates) | f32: the input is cast up, the delta down | PEFT's `autocast_adapter_dtype=True` |
//! | final norm, hidden states returned, logits | f32 | what every caller (scoring, sampling, embeddings) reads |
//! | KV cache | the precision | the keys/values the projections produce |
//!
//! Training with a cast decoder keeps the trainable LoRA parameters and the optimiser state in
//! f32 (the frozen base in the precision: QLoRA's layout without the quantisation).
//!
//! On the CPU backend f16/bf16 save memory but not time (flex converts bf16 matmuls to f32 on
//! each call); they exist there to test the path. The speed is meant for GPUs.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{DType, Device};

use crate::error::{LmError, Result};

/// The dtype of a decoder's frozen weights and block activations (module docs: what stays f32).
///
/// Configs read it with the command line's names and aliases ([`FromStr`]: `bf16`, `BF16`,
/// `bfloat16`, `half`, ...) and write it as `f32`, `f16` or `bf16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32 (the default; the reference of the parity tests).
    #[default]
    F32,
    /// IEEE half precision: 10-bit mantissa, range ±65504.
    F16,
    /// bfloat16: 7-bit mantissa, f32's range.
    Bf16,
}

impl Precision {
    /// Every precision, in the order help texts list them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Bf16];

    /// burn's dtype for it.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// The precision of a float dtype, `None` for other dtypes.
    pub fn from_dtype(dtype: DType) -> Option<Precision> {
        match dtype {
            DType::F32 => Some(Precision::F32),
            DType::F16 => Some(Precision::F16),
            DType::BF16 => Some(Precision::Bf16),
            _ => None,
        }
    }

    /// The name used on the command line and in configs (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Checks that `device` computes in this precision (burn's `Device::supports_dtype`).
    ///
    /// # Errors
    /// [`LmError::Device`] naming the device and the dtype, when it does not (burn's `ndarray`
    /// backend has no f16/bf16; `wgpu` needs the adapter's `shader-f16` for f16 and has no bf16).
    pub fn check_device(self, device: &Device) -> Result<()> {
        if self == Precision::F32 || device.supports_dtype(self.dtype()) {
            return Ok(());
        }
        Err(LmError::Device {
            name: format!("{device:?}"),
            detail: format!(
                "this device does not compute in {}; use `--dtype f32`, or a device that does \
                 (the CPU backend `flex` and CUDA support f16 and bf16)",
                self.name()
            ),
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = LmError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(LmError::InvalidInput(format!(
                "unknown precision `{other}`: expected f32, f16 or bf16"
            ))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Runs `f` on `x` in f32 and returns the result in `x`'s dtype: the f32 islands (norms, RoPE)
/// of a decoder running in f16/bf16. A no-op wrapper for f32 inputs.
///
/// # Shapes
/// - `x`: any -> same as `f`'s output
pub(crate) fn in_f32<const D: usize, const E: usize>(
    x: burn::tensor::Tensor<D>,
    f: impl FnOnce(burn::tensor::Tensor<D>) -> burn::tensor::Tensor<E>,
) -> burn::tensor::Tensor<E> {
    let dtype = x.dtype();
    if dtype == DType::F32 {
        return f(x);
    }
    f(x.cast(DType::F32)).cast(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(Precision::from_dtype(p.dtype()), Some(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("BFloat16".parse::<Precision>().unwrap(), Precision::Bf16);
        let err = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("f32, f16 or bf16"), "{err}");
    }

    #[test]
    fn toml_names_are_lowercase() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct C {
            p: Precision,
        }
        let c: C = toml::from_str("p = \"bf16\"").unwrap();
        assert_eq!(c.p, Precision::Bf16);
        // The command line's aliases, as `--dtype` takes them.
        let c: C = toml::from_str("p = \"BF16\"").unwrap();
        assert_eq!(c.p, Precision::Bf16);
        let err = toml::from_str::<C>("p = \"x\"").err().unwrap().to_string();
        assert!(err.contains("expected f32, f16 or bf16"), "{err}");
        assert_eq!(
            toml::to_string(&C { p: Precision::F16 }).unwrap().trim(),
            "p = \"f16\""
        );
    }
}
