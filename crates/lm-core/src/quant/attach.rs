//! Giving a loaded [`Decoder`] quantised copies of its projections and output head.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::nn::Linear;

use super::format::QuantType;
use super::matmul::QuantMatrix;
use super::{QuantLinear, WeightFormat};
use crate::error::{LmError, Result};
use crate::io::gguf::GgufFile;
use crate::model::adapted_linear::transpose;
use crate::model::decoder::Decoder;
use crate::model::layout::{EMBED_TOKENS, LM_HEAD};
use crate::model::loader::GgufWeights;
use crate::score::read_f32;

/// What [`quantize_decoder`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantReport {
    /// The format asked for.
    pub format: WeightFormat,
    /// Matrices (projections and head) per format they are decoded in (`"Q4_1"`, ..., `"f32"`).
    pub matrices: BTreeMap<String, usize>,
    /// Bytes of the quantised copies.
    pub quant_bytes: usize,
    /// Bytes of the f32 weights they stand in for during decoding.
    pub f32_bytes: usize,
}

impl std::fmt::Display for QuantReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: Vec<String> = self
            .matrices
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        write!(
            f,
            "decode weights {}: {} matrices; {:.1} MB quantised for {:.1} MB of f32",
            self.format,
            counts.join(", "),
            self.quant_bytes as f64 / 1e6,
            self.f32_bytes as f64 / 1e6
        )
    }
}

/// Gives `decoder`'s projections and output head the quantised copies decoding uses
/// ([`super::decoding`]), or removes them for [`WeightFormat::F32`]. The f32 weights stay (prefill,
/// scoring and training use them).
///
/// `gguf` is the file the decoder was loaded from; [`WeightFormat::Native`] reads the blocks
/// from it (without one, every matrix stays f32). [`WeightFormat::Q8_0`] quantises the
/// decoder's own f32 weights. A matrix whose width is not whole blocks of its format stays
/// f32.
///
/// # Errors
/// [`LmError::InvalidInput`] when a GGUF tensor does not have the shape of the layer it
/// belongs to (a file that does not match the decoder).
pub fn quantize_decoder(
    decoder: &mut Decoder,
    format: WeightFormat,
    gguf: Option<&GgufFile>,
) -> Result<QuantReport> {
    let mut report = QuantReport {
        format,
        ..QuantReport::default()
    };
    let config = decoder.config.clone();
    let names: Vec<String> = decoder
        .adapted_linears()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for name in names {
        let Some(layer) = decoder.adapted_linear_mut(&name) else {
            continue;
        };
        let weight_name = format!("{name}.weight");
        let heads = if name.ends_with("q_proj") {
            Some(config.num_heads)
        } else if name.ends_with("k_proj") {
            Some(config.num_kv_heads)
        } else {
            None
        }
        .filter(|_| config.arch.gguf_permutes_qk());
        let q = quantized(&layer.base, format, gguf, &config, &weight_name, heads)?;
        report.add(&layer.base, q.as_ref());
        layer.quant = q;
    }
    let head_name = if gguf.is_some_and(|g| {
        g.tensor_info(&GgufWeights::gguf_name_for(config.arch, LM_HEAD).unwrap_or_default())
            .is_some()
    }) {
        LM_HEAD
    } else {
        EMBED_TOKENS
    };
    let q = quantized(&decoder.lm_head, format, gguf, &config, head_name, None)?;
    report.add(&decoder.lm_head, q.as_ref());
    decoder.lm_head_quant = q;
    Ok(report)
}

impl QuantReport {
    fn add(&mut self, base: &Linear, q: Option<&QuantLinear>) {
        let key = q.map_or("f32", |q| q.matrix.quant_type().name());
        *self.matrices.entry(key.to_string()).or_default() += 1;
        if let Some(q) = q {
            self.quant_bytes += q.matrix.size_bytes();
            self.f32_bytes += base.weight.shape().num_elements() * 4;
        }
    }
}

/// The quantised copy of one linear (`None`: stays f32).
fn quantized(
    base: &Linear,
    format: WeightFormat,
    gguf: Option<&GgufFile>,
    config: &crate::model::config::DecoderConfig,
    hf_name: &str,
    permuted_heads: Option<usize>,
) -> Result<Option<QuantLinear>> {
    let [d_in, d_out] = base.weight.shape().dims::<2>();
    let matrix = match format {
        WeightFormat::F32 => return Ok(None),
        WeightFormat::Q8_0 => {
            if !d_in.is_multiple_of(super::format::GROUP) {
                return Ok(None);
            }
            let w = read_f32(base.weight.val().into_data())?;
            QuantMatrix::quantize_q8_0(&transpose(&w, d_in, d_out), d_out, d_in)?
        }
        WeightFormat::Native => {
            let Some(file) = gguf else {
                return Ok(None);
            };
            let Some(gguf_name) = GgufWeights::gguf_name_for(config.arch, hf_name) else {
                return Ok(None);
            };
            let Some(info) = file.tensor_info(&gguf_name) else {
                return Ok(None);
            };
            let Some(ty) = QuantType::from_ggml(info.dtype) else {
                return Ok(None);
            };
            if info.dims != [d_out, d_in] {
                return Err(LmError::InvalidInput(format!(
                    "GGUF tensor {gguf_name} has shape {:?}, the layer {hf_name} needs [{d_out}, {d_in}]",
                    info.dims
                )));
            }
            if !d_in.is_multiple_of(ty.block_elems()) {
                return Ok(None);
            }
            let m =
                QuantMatrix::from_raw(ty, d_out, d_in, file.tensor_bytes(&gguf_name)?.to_vec())?;
            match permuted_heads {
                Some(h) => m.permute_rows(&unpermute_rows(h, d_out)?),
                None => m,
            }
        }
    };
    let bias = match &base.bias {
        Some(b) => Some(Arc::from(read_f32(b.val().into_data())?)),
        None => None,
    };
    Ok(Some(QuantLinear {
        matrix: Arc::new(matrix),
        bias,
    }))
}

/// The GGUF row behind each HF row of a Llama q/k projection (the permutation
/// [`unpermute_llama_qk`](crate::model::loader::unpermute_llama_qk) applies to f32 rows).
fn unpermute_rows(n_head: usize, d_out: usize) -> Result<Vec<usize>> {
    if n_head == 0 || !d_out.is_multiple_of(2 * n_head) {
        return Err(LmError::InvalidInput(format!(
            "cannot unpermute {d_out} q/k rows over {n_head} heads"
        )));
    }
    let head_dim = d_out / n_head;
    let half = head_dim / 2;
    let mut from = vec![0; d_out];
    for h in 0..n_head {
        for a in 0..2 {
            for b in 0..half {
                from[h * head_dim + a * half + b] = h * head_dim + 2 * b + a;
            }
        }
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::loader::unpermute_llama_qk;

    #[test]
    fn row_permutation_matches_the_f32_unpermute() {
        let (heads, d_out, d_in) = (3, 24, 2);
        let w: Vec<f32> = (0..d_out * d_in).map(|i| i as f32).collect();
        let f32_rows = unpermute_llama_qk(&w, heads, d_out, d_in);
        let from = unpermute_rows(heads, d_out).unwrap();
        let gathered: Vec<f32> = from
            .iter()
            .flat_map(|&r| w[r * d_in..(r + 1) * d_in].iter().copied())
            .collect();
        assert_eq!(gathered, f32_rows);
        assert!(unpermute_rows(5, d_out).is_err());
    }
}
