//! Batched generation with a KV cache: greedy, temperature and nucleus (top-p) sampling, stop
//! strings, end-of-sequence tokens, seeded per row.
//!
//! Prompts of different lengths are left-padded; each row's RoPE positions start at 0 on its
//! first real token and padded keys are masked, so a row generates the same tokens alone or in
//! a batch.

use burn::tensor::{Bool, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{LmError, Result};
use crate::model::{AttentionMask, ExpertMix, KvCache, LanguageModel};
use rayon::prelude::*;

use crate::score::{TokenScores, read_f32};

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// Most new tokens per row (default 64).
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy (default 0).
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1]; 1 disables it (default 1).
    pub top_p: f32,
    /// Generation stops when the decoded continuation contains one of these (default none);
    /// the stop string and what follows are cut.
    pub stop: Vec<String>,
    /// Stop at the model's end-of-sequence tokens (default true).
    pub stop_at_eos: bool,
    /// Seed of the sampler; row `i` uses `seed + i` (default 0).
    pub seed: u64,
    /// Most padded prompt tokens (`rows x longest prompt`) per prefill pass (default 1024): a
    /// larger batch is prefilled in several passes, then decoded as one. Results do not change;
    /// on CPU, activations of more tokens than this outgrow the caches and cost more per token.
    pub max_prefill_tokens: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            stop: Vec::new(),
            stop_at_eos: true,
            seed: 0,
            max_prefill_tokens: 1024,
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token was produced.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// One row's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens (without the EOS token, if one ended the row).
    pub token_ids: Vec<u32>,
    /// Their text (cut at a stop string).
    pub text: String,
    /// Why it stopped.
    pub finish_reason: FinishReason,
}

/// Generates a continuation for every prompt (token ids), in one batch.
pub fn generate(
    model: &LanguageModel,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mix: &ExpertMix,
) -> Result<Vec<Generation>> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let prefilled = prefill(model, prompts, config, mix)?;
    decode(model, prompts, prefilled, config, mix)
}

/// [`generate`] for every prompt, plus teacher-forced scores of given continuations of the
/// prompts, from one shared prefill: the prompts are computed once for all of it.
///
/// `continuation_sets[k][i]` is the `k`-th continuation of `prompts[i]` (e.g. a rationale and a
/// bare answer); its scores are `scores[k][i]`, as [`crate::score::score`] of
/// `prompt ++ continuation` would give them.
pub fn generate_and_score(
    model: &LanguageModel,
    prompts: &[Vec<u32>],
    continuation_sets: &[Vec<Vec<u32>>],
    config: &GenerationConfig,
    mix: &ExpertMix,
) -> Result<(Vec<Generation>, Vec<Vec<TokenScores>>)> {
    let max = model.max_context();
    for (k, set) in continuation_sets.iter().enumerate() {
        if set.len() != prompts.len() {
            return Err(LmError::RowCountMismatch {
                what: format!("continuation set {k} needs one continuation per prompt"),
                expected: prompts.len(),
                found: set.len(),
            });
        }
        for (i, (p, c)) in prompts.iter().zip(set).enumerate() {
            if p.len() + c.len() > max {
                return Err(LmError::ContextOverflow {
                    tokens: p.len() + c.len(),
                    extra: 0,
                    max,
                });
            }
            if c.is_empty() {
                return Err(LmError::EmptyInput {
                    what: format!("continuation set {k}, row {i}"),
                });
            }
            model.check_ids(c, || format!("continuation set {k}, row {i}"))?;
        }
    }
    if prompts.is_empty() {
        return Ok((Vec::new(), vec![Vec::new(); continuation_sets.len()]));
    }
    let prefilled = prefill(model, prompts, config, mix)?;
    let scores = continuation_sets
        .iter()
        .map(|set| score_continuations(model, prompts, set, &prefilled, config, mix))
        .collect::<Result<Vec<_>>>()?;
    let generations = decode(model, prompts, prefilled, config, mix)?;
    Ok((generations, scores))
}

/// The prompts, left-padded and run through the model once.
struct Prefilled {
    /// Keys and values of the padded prompts, `longest` positions.
    cache: KvCache,
    /// Logits at each prompt's last token, flattened `[rows · vocab]`.
    last: Vec<f32>,
    /// Padded prompt length.
    longest: usize,
    /// Left padding of each row.
    pads: Vec<usize>,
}

/// Validates the request and prefills the left-padded prompts, in passes of at most
/// `max_prefill_tokens` padded tokens.
fn prefill(
    model: &LanguageModel,
    prompts: &[Vec<u32>],
    config: &GenerationConfig,
    mix: &ExpertMix,
) -> Result<Prefilled> {
    if !(config.top_p > 0.0 && config.top_p <= 1.0) || config.temperature < 0.0 {
        return Err(LmError::InvalidInput(format!(
            "expected temperature >= 0 and top_p in (0, 1], found {} and {}",
            config.temperature, config.top_p
        )));
    }
    let max = model.max_context();
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(LmError::EmptyInput {
                what: format!("prompt {i}"),
            });
        }
        if p.len() + config.max_new_tokens > max {
            return Err(LmError::ContextOverflow {
                tokens: p.len(),
                extra: config.max_new_tokens,
                max,
            });
        }
        model.check_ids(p, || format!("prompt {i}"))?;
    }
    let device = &model.device;
    let b = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let pads: Vec<usize> = prompts.iter().map(|p| longest - p.len()).collect();
    if let ExpertMix::PerRow(experts) = mix
        && experts.len() != b
    {
        return Err(LmError::RowCountMismatch {
            what: "ExpertMix::PerRow needs one expert per prompt".into(),
            expected: b,
            found: experts.len(),
        });
    }
    let rows_per_pass = (config.max_prefill_tokens / longest).clamp(1, b);
    let mut caches = Vec::new();
    let mut last = Vec::new();
    for first in (0..b).step_by(rows_per_pass) {
        let rows = first..(first + rows_per_pass).min(b);
        let n = rows.len();
        let mut tokens = vec![0i64; n * longest];
        let mut positions = vec![0i64; n * longest];
        for (r, i) in rows.clone().enumerate() {
            for (j, &t) in prompts[i].iter().enumerate() {
                tokens[r * longest + pads[i] + j] = t as i64;
                positions[r * longest + pads[i] + j] = j as i64;
            }
        }
        let mask = if pads[rows.clone()].iter().any(|&p| p > 0) {
            AttentionMask::Explicit(Box::new(prefill_mask(&pads[rows.clone()], longest, device)))
        } else {
            AttentionMask::Causal
        };
        let mut cache =
            KvCache::with_capacity(model.decoder.layers.len(), longest + config.max_new_tokens);
        let hidden = model.decoder.forward_hidden(
            Tensor::from_data(TensorData::new(tokens, [n, longest]), device),
            Tensor::from_data(TensorData::new(positions, [n, longest]), device),
            &mask,
            Some(&mut cache),
            &rows_mix(mix, rows.clone()),
        );
        // The first token's logits are a decode-shaped product (one position per row).
        last.extend(crate::quant::decoding(|| last_logits(model, hidden))?);
        caches.push(cache);
    }
    Ok(Prefilled {
        cache: KvCache::concat_rows(caches),
        last,
        longest,
        pads,
    })
}

/// The part of `mix` that applies to batch rows `rows`.
fn rows_mix(mix: &ExpertMix, rows: std::ops::Range<usize>) -> ExpertMix {
    match mix {
        ExpertMix::PerRow(experts) => ExpertMix::PerRow(experts[rows].to_vec()),
        other => other.clone(),
    }
}

/// Scores each continuation after its prefilled prompt: the first token from the prompt's last
/// logits, the others from one forward pass over the right-padded continuations on a copy of
/// the prompt cache, in passes of at most `max_prefill_tokens` continuation tokens.
fn score_continuations(
    model: &LanguageModel,
    prompts: &[Vec<u32>],
    continuations: &[Vec<u32>],
    prefilled: &Prefilled,
    config: &GenerationConfig,
    mix: &ExpertMix,
) -> Result<Vec<TokenScores>> {
    let device = &model.device;
    let vocab = model.decoder.config.vocab_size;
    let b = prompts.len();
    let longest = prefilled.longest;
    let mut out: Vec<TokenScores> = Vec::with_capacity(b);
    let c_max = continuations.iter().map(Vec::len).max().unwrap_or(1);
    let rows_per_pass = (config.max_prefill_tokens / c_max).clamp(1, b);
    for first in (0..b).step_by(rows_per_pass) {
        let rows = first..(first + rows_per_pass).min(b);
        let n = rows.len();
        // Only the rows with more than one token need a forward pass; it is run for all rows of
        // the pass for simplicity (the others' outputs are ignored).
        let width = rows
            .clone()
            .map(|i| continuations[i].len() - 1)
            .max()
            .unwrap_or(0);
        let hidden = if width > 0 {
            let mut cache = prefilled.cache.clone();
            if n < b {
                cache.retain_rows(&rows.clone().collect::<Vec<_>>());
            }
            let mut tokens = vec![0i64; n * width];
            let mut positions = vec![0i64; n * width];
            let k_len = longest + width;
            let mut hidden_mask = vec![false; n * width * k_len];
            for (r, i) in rows.clone().enumerate() {
                for j in 0..width {
                    tokens[r * width + j] = i64::from(*continuations[i].get(j).unwrap_or(&0));
                    positions[r * width + j] = (prompts[i].len() + j) as i64;
                    let m = &mut hidden_mask[(r * width + j) * k_len..(r * width + j + 1) * k_len];
                    m[..prefilled.pads[i]].fill(true);
                    m[longest + j + 1..].fill(true);
                }
            }
            let mask = AttentionMask::Explicit(Box::new(Tensor::from_data(
                TensorData::new(hidden_mask, [n, 1, width, k_len]),
                device,
            )));
            let h = model.decoder.forward_hidden(
                Tensor::from_data(TensorData::new(tokens, [n, width]), device),
                Tensor::from_data(TensorData::new(positions, [n, width]), device),
                &mask,
                Some(&mut cache),
                &rows_mix(mix, rows.clone()),
            );
            let d = h.dims()[2];
            Some(h.reshape([n * width, d]))
        } else {
            None
        };
        // (row in pass, flat position in `hidden`, token) for every token after the first.
        let wanted: Vec<(usize, usize, u32)> = rows
            .clone()
            .enumerate()
            .flat_map(|(r, i)| {
                continuations[i][1..]
                    .iter()
                    .enumerate()
                    .map(move |(j, &t)| (r, r * width + j, t))
            })
            .collect();
        let mut logp: Vec<f32> = Vec::with_capacity(wanted.len());
        if let Some(hidden) = &hidden {
            for chunk in wanted.chunks(crate::score::HEAD_CHUNK) {
                let logits = crate::score::head_logits(model, hidden, chunk.iter().map(|w| w.1))?;
                logp.par_extend(chunk.par_iter().enumerate().map(|(j, &(_, _, token))| {
                    let row = &logits[j * vocab..(j + 1) * vocab];
                    row[token as usize] - crate::score::log_sum_exp(row)
                }));
            }
        }
        let mut per_row: Vec<Vec<f32>> = rows
            .clone()
            .map(|i| {
                let row = &prefilled.last[i * vocab..(i + 1) * vocab];
                let first = continuations[i][0] as usize;
                vec![row[first] - crate::score::log_sum_exp(row)]
            })
            .collect();
        for (&(r, _, _), lp) in wanted.iter().zip(logp) {
            per_row[r].push(lp);
        }
        out.extend(per_row.into_iter().map(|token_logprobs| TokenScores {
            logprob: token_logprobs.iter().map(|&x| x as f64).sum(),
            n_tokens: token_logprobs.len(),
            token_logprobs,
            last_logits: None,
        }));
    }
    Ok(out)
}

/// Decodes from the prefilled prompts until every row stops.
fn decode(
    model: &LanguageModel,
    prompts: &[Vec<u32>],
    prefilled: Prefilled,
    config: &GenerationConfig,
    mix: &ExpertMix,
) -> Result<Vec<Generation>> {
    let device = &model.device;
    let b = prompts.len();
    let Prefilled {
        mut cache,
        mut last,
        longest,
        pads,
    } = prefilled;
    let mut rngs: Vec<StdRng> = (0..b)
        .map(|i| StdRng::seed_from_u64(config.seed.wrapping_add(i as u64)))
        .collect();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut finished: Vec<Option<FinishReason>> = vec![None; b];
    let vocab = model.decoder.config.vocab_size;
    // The prompt row behind each row of the running batch: finished rows are dropped from the
    // batch (and the cache) once they are an eighth of it.
    let mut active: Vec<usize> = (0..b).collect();
    let mut step_mix = mix.clone();
    for step in 0..config.max_new_tokens {
        let mut next = Vec::with_capacity(active.len());
        for (j, &i) in active.iter().enumerate() {
            let tok = sample(&last[j * vocab..(j + 1) * vocab], config, &mut rngs[i]);
            next.push(tok as i64);
            if finished[i].is_some() {
                continue;
            }
            if config.stop_at_eos && model.eos_ids.contains(&tok) {
                finished[i] = Some(FinishReason::Eos);
                continue;
            }
            out[i].push(tok);
            if !config.stop.is_empty() {
                let text = model.decode(&out[i])?;
                if config.stop.iter().any(|s| text.contains(s.as_str())) {
                    finished[i] = Some(FinishReason::Stop);
                }
            }
        }
        if finished.iter().all(Option::is_some) || step + 1 == config.max_new_tokens {
            break;
        }
        let keep: Vec<usize> = (0..active.len())
            .filter(|&j| finished[active[j]].is_none())
            .collect();
        if (active.len() - keep.len()) * 8 >= active.len() {
            cache.retain_rows(&keep);
            next = keep.iter().map(|&j| next[j]).collect();
            active = keep.iter().map(|&j| active[j]).collect();
            if let ExpertMix::PerRow(experts) = mix {
                step_mix = ExpertMix::PerRow(active.iter().map(|&i| experts[i]).collect());
            }
        }
        let rows = active.len();
        let positions: Vec<i64> = active
            .iter()
            .map(|&i| (prompts[i].len() + step) as i64)
            .collect();
        let row_pads: Vec<usize> = active.iter().map(|&i| pads[i]).collect();
        let mask = if row_pads.iter().any(|&p| p > 0) {
            let k_len = longest + step + 1;
            AttentionMask::Explicit(Box::new(decode_mask(&row_pads, k_len, device)))
        } else {
            AttentionMask::Causal
        };
        last = crate::quant::decoding(|| {
            let hidden = model.decoder.forward_hidden(
                Tensor::from_data(TensorData::new(next, [rows, 1]), device),
                Tensor::from_data(TensorData::new(positions, [rows, 1]), device),
                &mask,
                Some(&mut cache),
                &step_mix,
            );
            last_logits(model, hidden)
        })?;
    }
    out.into_iter()
        .zip(finished)
        .map(|(ids, reason)| {
            let mut text = model.decode(&ids)?;
            let reason = reason.unwrap_or(FinishReason::Length);
            if reason == FinishReason::Stop
                && let Some(cut) = config
                    .stop
                    .iter()
                    .filter_map(|s| text.find(s.as_str()))
                    .min()
            {
                text.truncate(cut);
            }
            Ok(Generation {
                token_ids: ids,
                text,
                finish_reason: reason,
            })
        })
        .collect()
}

/// Logits of the last position of every row, flattened `[batch · vocab]`.
fn last_logits(model: &LanguageModel, hidden: Tensor<3>) -> Result<Vec<f32>> {
    let [b, s, d] = hidden.dims();
    let last = hidden.narrow(1, s - 1, 1).reshape([b, 1, d]);
    read_f32(model.decoder.logits(last).into_data())
}

/// Causal mask over a left-padded prompt batch, `true` = hidden. Padded queries may see padded
/// keys (their outputs are never used) so that no softmax row is empty.
///
/// # Shapes
/// - returns `[batch, 1, seq, seq]`
fn prefill_mask(pads: &[usize], seq: usize, device: &burn::tensor::Device) -> Tensor<4, Bool> {
    let b = pads.len();
    let mut m = vec![false; b * seq * seq];
    for (i, &p) in pads.iter().enumerate() {
        for q in 0..seq {
            for k in 0..seq {
                let hidden = k > q || (k < p && q >= p);
                m[(i * seq + q) * seq + k] = hidden;
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [b, 1, seq, seq]), device)
}

/// Mask of one decoding step: padded keys hidden.
///
/// # Shapes
/// - returns `[batch, 1, 1, k_len]`
fn decode_mask(pads: &[usize], k_len: usize, device: &burn::tensor::Device) -> Tensor<4, Bool> {
    let b = pads.len();
    let mut m = vec![false; b * k_len];
    for (i, &p) in pads.iter().enumerate() {
        m[i * k_len..i * k_len + p].fill(true);
    }
    Tensor::from_data(TensorData::new(m, [b, 1, 1, k_len]), device)
}

/// Picks the next token from one row of logits.
fn sample(logits: &[f32], config: &GenerationConfig, rng: &mut StdRng) -> u32 {
    if config.temperature == 0.0 {
        return argmax(logits);
    }
    let inv_t = 1.0 / config.temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp()))
        .collect();
    let total: f32 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    if config.top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (n, p) in probs.iter().enumerate() {
            mass += p.1;
            if mass >= config.top_p {
                keep = n + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let total: f32 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f32>() * total;
    for &(id, p) in &probs {
        if u < p {
            return id;
        }
        u -= p;
    }
    probs.last().map_or(0, |p| p.0)
}

/// Index of the largest value; ties go to the lowest index (as torch.argmax).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_lowest_index_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn top_p_small_is_greedy() {
        let cfg = GenerationConfig {
            temperature: 1.0,
            top_p: 1e-6,
            ..Default::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            assert_eq!(sample(&[0.1, 5.0, 0.2], &cfg, &mut rng), 1);
        }
    }

    #[test]
    fn sampling_is_seeded() {
        let cfg = GenerationConfig {
            temperature: 1.0,
            ..Default::default()
        };
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..10)
                .map(|_| sample(&logits, &cfg, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn prefill_mask_hides_future_and_padding_but_never_a_whole_row() {
        let device = crate::device::device_from_name("cpu").unwrap();
        let (pads, seq) = ([2usize, 0], 4);
        let m: Vec<bool> = prefill_mask(&pads, seq, &device)
            .into_data()
            .try_into_vec::<bool>()
            .unwrap();
        for (row, hidden) in m.chunks(seq).enumerate() {
            assert!(hidden.iter().any(|&h| !h), "row {row} hides every key");
        }
        // Row 0, query 3 (a real token): keys 0-1 are padding, 2-3 visible.
        assert_eq!(&m[3 * seq..4 * seq], &[true, true, false, false]);
        // Row 1 has no padding: plain causal.
        assert_eq!(
            &m[(seq + 1) * seq..(seq + 2) * seq],
            &[false, false, true, true]
        );
        let d: Vec<bool> = decode_mask(&pads, 5, &device)
            .into_data()
            .try_into_vec::<bool>()
            .unwrap();
        assert_eq!(
            d,
            vec![
                true, true, false, false, false, false, false, false, false, false
            ]
        );
    }
}
