//! Teacher-forced scoring: per-token log-probabilities of a target given a prompt, batched.
//!
//! Rows are sorted by length and right-padded into batches. With causal attention a real token
//! never sees the padding that follows it, so a row's scores do not depend on what it is
//! batched with (up to float summation order; the tests bound the difference).
//!
//! The primitive behind perplexity, reasoning perplexity, multiple-choice log-likelihood,
//! instruction-following difficulty and uncertainty selection.

use burn::tensor::{Int, Tensor, TensorData};
use rayon::prelude::*;

use crate::error::{LmError, Result};
use crate::model::{AttentionMask, ExpertMix, LanguageModel};

/// One sequence to score: `prompt ++ target`, log-probs taken over the target tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScoreRequest {
    /// Context tokens (not scored).
    pub prompt: Vec<u32>,
    /// Scored tokens. When `prompt` is empty the first target token has no predecessor and is
    /// not scored.
    pub target: Vec<u32>,
}

impl ScoreRequest {
    /// A `{"text": ...}` row: every token that has a predecessor is scored.
    pub fn text(ids: Vec<u32>) -> Self {
        Self {
            prompt: Vec::new(),
            target: ids,
        }
    }

    fn total_len(&self) -> usize {
        self.prompt.len() + self.target.len()
    }

    /// Index in the joined sequence of the first scored token.
    fn first_scored(&self) -> usize {
        self.prompt.len().max(1)
    }
}

/// Scores of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenScores {
    /// `log P(token_t | tokens_<t)` for each scored token, in order.
    pub token_logprobs: Vec<f32>,
    /// Sum of `token_logprobs` (accumulated in f64).
    pub logprob: f64,
    /// Number of scored tokens.
    pub n_tokens: usize,
    /// Logits at the last position of the sequence, `[vocab]`, when asked for.
    pub last_logits: Option<Vec<f32>>,
}

impl TokenScores {
    /// Perplexity `exp(-logprob / n_tokens)` (NaN when nothing was scored).
    pub fn ppl(&self) -> f64 {
        if self.n_tokens == 0 {
            f64::NAN
        } else {
            (-self.logprob / self.n_tokens as f64).exp()
        }
    }
}

/// How to batch a scoring run.
#[derive(Debug, Clone)]
pub struct ScoreOptions {
    /// Rows per forward pass (default 8).
    pub batch_size: usize,
    /// Also return the last-position logits of every row (default false).
    pub keep_last_logits: bool,
    /// Most padded tokens (`rows x longest row`) in one forward pass (default 1024): a batch
    /// beyond it is split into several passes. Results do not change; on CPU, activations of
    /// more tokens than this outgrow the caches and cost more per token, not less.
    pub max_batch_tokens: usize,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            batch_size: 8,
            keep_last_logits: false,
            max_batch_tokens: 1024,
        }
    }
}

/// Scores every request; results are in request order.
pub fn score(
    model: &LanguageModel,
    requests: &[ScoreRequest],
    options: &ScoreOptions,
    mix: &ExpertMix,
) -> Result<Vec<TokenScores>> {
    score_with_progress(model, requests, options, mix, &mut |_, _| {})
}

/// [`score`] with a callback `(rows_done, rows_total)` after each batch.
pub fn score_with_progress(
    model: &LanguageModel,
    requests: &[ScoreRequest],
    options: &ScoreOptions,
    mix: &ExpertMix,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<TokenScores>> {
    let max = model.max_context();
    for (i, r) in requests.iter().enumerate() {
        if r.total_len() == 0 {
            return Err(LmError::EmptyInput {
                what: format!("row {i} (text to score)"),
            });
        }
        check_request_ids(model, r, i)?;
        if r.total_len() > max {
            return Err(LmError::ContextOverflow {
                tokens: r.total_len(),
                extra: 0,
                max,
            });
        }
    }
    if matches!(mix, ExpertMix::PerRow(_)) {
        return Err(LmError::InvalidInput(
            "score() batches rows itself; use score_per_row_experts for per-row adapters".into(),
        ));
    }
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(requests[i].total_len()));
    let mut out: Vec<Option<TokenScores>> = vec![None; requests.len()];
    let mut done = 0;
    for chunk in order.chunks(options.batch_size.max(1)) {
        let rows: Vec<&ScoreRequest> = chunk.iter().map(|&i| &requests[i]).collect();
        let scores = score_split(model, &rows, options, mix)?;
        for (&i, s) in chunk.iter().zip(scores) {
            out[i] = Some(s);
        }
        done += chunk.len();
        progress(done, requests.len());
    }
    Ok(out
        .into_iter()
        .map(|s| s.expect("every row scored"))
        .collect())
}

/// Scores rows that each use their own expert (`experts[i]` for `requests[i]`, `None` = base)
/// in shared batches: the base computation is done once per batch for all experts.
pub fn score_per_row_experts(
    model: &LanguageModel,
    requests: &[ScoreRequest],
    experts: &[Option<usize>],
    options: &ScoreOptions,
) -> Result<Vec<TokenScores>> {
    if experts.len() != requests.len() {
        return Err(LmError::RowCountMismatch {
            what: "score_per_row_experts needs one expert index per request".into(),
            expected: requests.len(),
            found: experts.len(),
        });
    }
    let max = model.max_context();
    for (i, r) in requests.iter().enumerate() {
        if r.total_len() == 0 {
            return Err(LmError::EmptyInput {
                what: format!("row {i} (text to score)"),
            });
        }
        if r.total_len() > max {
            return Err(LmError::ContextOverflow {
                tokens: r.total_len(),
                extra: 0,
                max,
            });
        }
        check_request_ids(model, r, i)?;
    }
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(requests[i].total_len()));
    let mut out: Vec<Option<TokenScores>> = vec![None; requests.len()];
    for chunk in order.chunks(options.batch_size.max(1)) {
        let rows: Vec<&ScoreRequest> = chunk.iter().map(|&i| &requests[i]).collect();
        let mix = ExpertMix::PerRow(chunk.iter().map(|&i| experts[i]).collect());
        let scores = score_split(model, &rows, options, &mix)?;
        for (&i, s) in chunk.iter().zip(scores) {
            out[i] = Some(s);
        }
    }
    Ok(out
        .into_iter()
        .map(|s| s.expect("every row scored"))
        .collect())
}

/// Refuses a request with an id past the embedding table (the backend would panic on it).
fn check_request_ids(model: &LanguageModel, r: &ScoreRequest, i: usize) -> Result<()> {
    model.check_ids(&r.prompt, || format!("row {i} (prompt to score)"))?;
    model.check_ids(&r.target, || format!("row {i} (target to score)"))
}

/// Scores `rows` (sorted longest first) in as few forward passes as
/// [`ScoreOptions::max_batch_tokens`] allows.
fn score_split(
    model: &LanguageModel,
    rows: &[&ScoreRequest],
    options: &ScoreOptions,
    mix: &ExpertMix,
) -> Result<Vec<TokenScores>> {
    let mut out = Vec::with_capacity(rows.len());
    let mut start = 0;
    while start < rows.len() {
        let longest = rows[start..]
            .iter()
            .map(|r| r.total_len())
            .max()
            .unwrap_or(1);
        let n = (options.max_batch_tokens / longest.max(1)).clamp(1, rows.len() - start);
        let sub_mix = match mix {
            ExpertMix::PerRow(experts) => ExpertMix::PerRow(experts[start..start + n].to_vec()),
            other => other.clone(),
        };
        out.extend(score_batch(
            model,
            &rows[start..start + n],
            options.keep_last_logits,
            &sub_mix,
        )?);
        start += n;
    }
    Ok(out)
}

/// One right-padded forward pass over `rows`.
fn score_batch(
    model: &LanguageModel,
    rows: &[&ScoreRequest],
    keep_last_logits: bool,
    mix: &ExpertMix,
) -> Result<Vec<TokenScores>> {
    let b = rows.len();
    let s = rows.iter().map(|r| r.total_len()).max().unwrap_or(1);
    let device = &model.device;
    let mut tokens = vec![0i64; b * s];
    for (i, r) in rows.iter().enumerate() {
        let seq: Vec<u32> = r.prompt.iter().chain(&r.target).copied().collect();
        for (j, &t) in seq.iter().enumerate() {
            tokens[i * s + j] = t as i64;
        }
    }
    let tokens_t = Tensor::<2, Int>::from_data(TensorData::new(tokens, [b, s]), device);
    let positions = crate::model::Decoder::default_positions(b, s, 0, device);
    let hidden =
        model
            .decoder
            .forward_hidden(tokens_t, positions, &AttentionMask::Causal, None, mix); // [b, s, d]
    let d = hidden.dims()[2];
    let hidden = hidden.reshape([b * s, d]);
    // The output head runs only at the positions whose prediction is scored (and the last
    // positions when asked for), a chunk of positions at a time, so a large batch never holds
    // `[b, s, vocab]` logits. log_softmax is computed on the host, one pass for the max and one
    // for the sum of exponentials per position, in parallel (burn's log_softmax materialises a
    // second logits tensor and is ~5x slower on CPU).
    let wanted: Vec<(usize, usize, u32)> = rows
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            let seq: Vec<u32> = r.prompt.iter().chain(&r.target).copied().collect();
            (r.first_scored()..r.total_len()).map(move |t| (i, i * s + t - 1, seq[t]))
        })
        .collect();
    let mut logp: Vec<f32> = Vec::with_capacity(wanted.len());
    for chunk in wanted.chunks(HEAD_CHUNK) {
        let logits = head_logits(model, &hidden, chunk.iter().map(|w| w.1))?;
        let vocab = logits.len() / chunk.len();
        logp.par_extend(chunk.par_iter().enumerate().map(|(j, &(_, _, token))| {
            let row = &logits[j * vocab..(j + 1) * vocab];
            row[token as usize] - log_sum_exp(row)
        }));
    }
    let last_logits: Vec<Option<Vec<f32>>> = if keep_last_logits {
        let logits = head_logits(
            model,
            &hidden,
            rows.iter()
                .enumerate()
                .map(|(i, r)| i * s + r.total_len() - 1),
        )?;
        let vocab = logits.len() / b;
        logits.chunks(vocab).map(|row| Some(row.to_vec())).collect()
    } else {
        vec![None; b]
    };
    let mut per_row: Vec<Vec<f32>> = vec![Vec::new(); b];
    for (&(i, _, _), lp) in wanted.iter().zip(logp) {
        per_row[i].push(lp);
    }
    Ok(per_row
        .into_iter()
        .zip(last_logits)
        .map(|(token_logprobs, last_logits)| TokenScores {
            logprob: token_logprobs.iter().map(|&x| x as f64).sum(),
            n_tokens: token_logprobs.len(),
            token_logprobs,
            last_logits,
        })
        .collect())
}

/// Positions whose logits are computed at once (bounds the `[positions, vocab]` buffer:
/// 256 x 49152 f32 = 50 MB for SmolLM2).
pub(crate) const HEAD_CHUNK: usize = 256;

/// Output-head logits at the given rows of `hidden`, flattened `[positions · vocab]`.
///
/// # Shapes
/// - `hidden`: `[batch · seq, d_model]`
pub(crate) fn head_logits(
    model: &LanguageModel,
    hidden: &Tensor<2>,
    positions: impl Iterator<Item = usize>,
) -> Result<Vec<f32>> {
    let idx: Vec<i64> = positions.map(|p| p as i64).collect();
    let n = idx.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &hidden.device());
    let picked = hidden.clone().select(0, idx).unsqueeze_dim::<3>(0); // [1, n, d]
    read_f32(model.decoder.logits(picked).into_data())
}

/// `log Σ exp(x)` of one row of logits, stable (max subtracted), partial sums added in f64.
/// Vectorised ([`vecmath::log_sum_exp`](crate::kernels::vecmath::log_sum_exp)): the scalar
/// `exp` of the 49152 logits of every scored position.
/// The scalar loop stays for `OPENEXPERT_KERNELS=off`.
pub(crate) fn log_sum_exp(row: &[f32]) -> f32 {
    if crate::kernels::enabled() {
        return crate::kernels::vecmath::log_sum_exp(row);
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&x| ((x - max).exp()) as f64).sum();
    max + sum.ln() as f32
}

pub(crate) fn read_f32(data: TensorData) -> Result<Vec<f32>> {
    data.try_into_vec::<f32>()
        .map_err(|e| LmError::InvalidInput(format!("expected f32 tensor data, found {e:?}")))
}

/// Perplexity of texts: `exp(mean NLL)` of each text's tokens.
pub fn perplexity(
    model: &LanguageModel,
    texts: &[String],
    options: &ScoreOptions,
) -> Result<Vec<f64>> {
    let requests = texts
        .iter()
        .map(|t| model.encode(t).map(ScoreRequest::text))
        .collect::<Result<Vec<_>>>()?;
    Ok(score(model, &requests, options, &ExpertMix::Base)?
        .iter()
        .map(TokenScores::ppl)
        .collect())
}
