//! Embeddings from a decoder: the mean of the last hidden layer (after the final norm, as
//! transformers' `hidden_states[-1]`) over every token of the sequence, as DiverseEvol does.
//! Sentence-encoder embeddings (mean pool + L2) are in [`crate::model::SentenceEncoder`].

use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{LmError, Result};
use crate::model::{ExpertMix, LanguageModel};
use crate::score::read_f32;

/// Mean-pooled last hidden states of token sequences, one `[d_model]` row per sequence.
/// Rows are batched by length (right padding is excluded from the mean).
pub fn decoder_embeddings(
    model: &LanguageModel,
    sequences: &[Vec<u32>],
    batch_size: usize,
    mix: &ExpertMix,
) -> Result<Vec<Vec<f32>>> {
    let max = model.max_context();
    for (i, s) in sequences.iter().enumerate() {
        if s.is_empty() {
            return Err(LmError::EmptyInput {
                what: format!("sequence {i}"),
            });
        }
        if s.len() > max {
            return Err(LmError::ContextOverflow {
                tokens: s.len(),
                extra: 0,
                max,
            });
        }
        model.check_ids(s, || format!("sequence {i}"))?;
    }
    let d = model.decoder.config.hidden_size;
    let device = &model.device;
    let mut order: Vec<usize> = (0..sequences.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
    let mut out = vec![Vec::new(); sequences.len()];
    for chunk in order.chunks(batch_size.max(1)) {
        let b = chunk.len();
        let s = sequences[chunk[0]].len();
        let mut tokens = vec![0i64; b * s];
        let mut keep = vec![0f32; b * s];
        for (r, &i) in chunk.iter().enumerate() {
            for (j, &t) in sequences[i].iter().enumerate() {
                tokens[r * s + j] = t as i64;
                keep[r * s + j] = 1.0;
            }
        }
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(tokens, [b, s]), device);
        let positions = crate::model::Decoder::default_positions(b, s, 0, device);
        let hidden = model.decoder.forward_hidden(
            tokens,
            positions,
            &crate::model::AttentionMask::Causal,
            None,
            mix,
        );
        let keep = Tensor::<3>::from_data(TensorData::new(keep, [b, s, 1]), device);
        let count = keep.clone().sum_dim(1).reshape([b, 1]);
        let mean = (hidden * keep).sum_dim(1).reshape([b, d]) / count;
        let values = read_f32(mean.into_data())?;
        for (r, &i) in chunk.iter().enumerate() {
            let row = values[r * d..(r + 1) * d].to_vec();
            if row.iter().any(|x| !x.is_finite()) {
                return Err(LmError::InvalidInput(format!(
                    "sequence {i}: the embedding has NaN or Inf values (model weights corrupt?)"
                )));
            }
            out[i] = row;
        }
    }
    Ok(out)
}
