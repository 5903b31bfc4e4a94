//! The generation worker: one thread owns the model and turns queued requests into batched
//! [`lm_core::generate::generate`] calls.
//!
//! The worker blocks for a first request, then collects more for a short window (or until
//! `max_batch` are waiting; requests that queued during the previous batch are taken at once).
//! The collected requests are rendered with the chat template, grouped by generation settings
//! (`max_tokens`, stop strings, temperature and top-p; greedy requests ignore top-p and seed),
//! and each group runs as batches of at most `max_batch` rows. Requests whose client has gone
//! are dropped before they run.
//!
//! Seeds: `generate` samples row `i` with `seed + i`. A sampled request with a seed `s` is put
//! at row `s - base` of a batch with base seed `base`, so that it samples exactly as alone
//! (`openexpert generate --seed s`); only requests with consecutive seeds share a batch.
//! Sampled requests without a seed take the next seeds of a counter that starts at 0 with the
//! server. Greedy requests batch freely.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use lm_core::chat_template::ChatMessage;
use lm_core::generate::{FinishReason, Generation, GenerationConfig, generate};
use lm_core::model::{ExpertMix, LanguageModel};
use tokio::sync::oneshot;

use super::Counters;
use super::error::ApiError;

/// Generation settings of one request, already validated.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    /// Most new tokens; `None` = the server's default, clamped to the context left.
    pub max_tokens: Option<usize>,
    /// >= 0; 0 is greedy.
    pub temperature: f32,
    /// In (0, 1].
    pub top_p: f32,
    /// Stop strings (non-empty).
    pub stop: Vec<String>,
    /// Sampler seed, if the client gave one.
    pub seed: Option<u64>,
}

/// One request waiting for the worker.
pub(crate) struct Job {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// How to generate.
    pub settings: Settings,
    /// Whether the answer will be streamed (then its deltas are computed).
    pub stream: bool,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Answer, ApiError>>,
}

/// What the worker answers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    /// The generated text (cut at a stop string).
    pub text: String,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
    /// Tokens of the rendered prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// For streaming: pieces of `text`, one per token that completes characters, whose
    /// concatenation is exactly `text`.
    pub deltas: Vec<String>,
}

/// How the worker batches.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    /// Most rows per `generate` call.
    pub max_batch: usize,
    /// How long to wait for more requests after the first.
    pub window: Duration,
    /// `max_tokens` when a request gives none (clamped to the context left).
    pub default_max_tokens: usize,
}

/// A job whose prompt is rendered and tokenised.
struct Ready {
    job: Job,
    prompt: Vec<u32>,
    max_tokens: usize,
}

/// Requests that may share a `generate` call.
#[derive(Debug, Clone, PartialEq)]
struct GroupKey {
    max_tokens: usize,
    temperature: f32,
    top_p: f32,
    stop: Vec<String>,
}

impl GroupKey {
    fn of(ready: &Ready) -> Self {
        let s = &ready.job.settings;
        let greedy = s.temperature == 0.0;
        Self {
            max_tokens: ready.max_tokens,
            temperature: s.temperature,
            // top-p plays no part in greedy decoding
            top_p: if greedy { 1.0 } else { s.top_p },
            stop: s.stop.clone(),
        }
    }

    fn greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Runs until every sender of `queue` is gone (the server stopped), then returns.
pub(crate) fn run(
    model: LanguageModel,
    mix: ExpertMix,
    queue: Receiver<Job>,
    config: WorkerConfig,
    counters: Arc<Counters>,
) {
    let mut next_seed = 0u64;
    while let Some(jobs) = collect(&queue, &config) {
        let ready: Vec<Ready> = jobs
            .into_iter()
            .filter(|j| !j.reply.is_closed())
            .filter_map(|job| prepare(&model, job, &config))
            .collect();
        for (key, group) in group(ready) {
            for (seed, batch) in plan(group, &key, config.max_batch, &mut next_seed) {
                run_batch(&model, &mix, &key, seed, batch, &counters);
            }
        }
    }
    tracing::debug!("generation worker stopped");
}

/// Waits for a first job, then collects more until `max_batch` or the window's end; `None`
/// once the queue is closed and empty.
fn collect(queue: &Receiver<Job>, config: &WorkerConfig) -> Option<Vec<Job>> {
    let first = queue.recv().ok()?;
    let deadline = Instant::now() + config.window;
    let mut jobs = vec![first];
    while jobs.len() < config.max_batch {
        match queue.try_recv() {
            Ok(job) => {
                jobs.push(job);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match queue.recv_timeout(left) {
            Ok(job) => jobs.push(job),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(jobs)
}

/// Renders and tokenises a job's prompt and settles its `max_tokens`; answers the job with a
/// 400 (and returns `None`) when the template fails or the prompt does not fit.
fn prepare(model: &LanguageModel, job: Job, config: &WorkerConfig) -> Option<Ready> {
    let prompt = model
        .render_chat(&job.messages, true)
        .map_err(|e| {
            ApiError::bad_request(
                format!("the model's chat template cannot render these messages: {e}"),
                Some("messages"),
            )
        })
        .and_then(|text| {
            model
                .encode_chat(&text)
                .map_err(|e| ApiError::internal(format!("could not tokenise the prompt: {e}")))
        });
    let prompt = match prompt {
        Ok(p) => p,
        Err(e) => {
            let _ = job.reply.send(Err(e));
            return None;
        }
    };
    let context = model.max_context();
    let left = context.saturating_sub(prompt.len());
    let max_tokens = match job.settings.max_tokens {
        Some(n) => n,
        None => config.default_max_tokens.min(left),
    };
    if max_tokens == 0 || prompt.len() + max_tokens > context {
        let _ = job.reply.send(Err(ApiError::bad_request(
            format!(
                "the prompt has {} tokens and max_tokens is {max_tokens}: expected at most {context} together (the model's context); shorten the messages or lower max_tokens",
                prompt.len()
            ),
            Some(if job.settings.max_tokens.is_some() {
                "max_tokens"
            } else {
                "messages"
            }),
        )));
        return None;
    }
    Some(Ready {
        job,
        prompt,
        max_tokens,
    })
}

/// Groups jobs by generation settings, in order of first arrival.
fn group(ready: Vec<Ready>) -> Vec<(GroupKey, Vec<Ready>)> {
    let mut groups: Vec<(GroupKey, Vec<Ready>)> = Vec::new();
    for r in ready {
        let key = GroupKey::of(&r);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    groups
}

/// Splits a group into batches of at most `max_batch` rows, each with its base seed (see the
/// module docs).
fn plan(
    group: Vec<Ready>,
    key: &GroupKey,
    max_batch: usize,
    next_seed: &mut u64,
) -> Vec<(u64, Vec<Ready>)> {
    let mut batches = Vec::new();
    let chunk = |rows: Vec<Ready>, batches: &mut Vec<(u64, Vec<Ready>)>, next: &mut u64| {
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let batch: Vec<Ready> = rows.by_ref().take(max_batch).collect();
            batches.push((*next, batch));
        }
    };
    if key.greedy() {
        chunk(group, &mut batches, &mut 0);
        return batches;
    }
    let (mut seeded, unseeded): (Vec<Ready>, Vec<Ready>) = group
        .into_iter()
        .partition(|r| r.job.settings.seed.is_some());
    // unseeded: successive seeds of the server's counter
    let mut rows = unseeded.into_iter().peekable();
    while rows.peek().is_some() {
        let batch: Vec<Ready> = rows.by_ref().take(max_batch).collect();
        let base = *next_seed;
        *next_seed = next_seed.wrapping_add(batch.len() as u64);
        batches.push((base, batch));
    }
    // seeded: runs of consecutive seeds, each at its own row
    seeded.sort_by_key(|r| r.job.settings.seed);
    while !seeded.is_empty() {
        let mut run: Vec<Ready> = Vec::new();
        let mut rest = Vec::new();
        let mut base = 0;
        for r in seeded {
            let seed = r.job.settings.seed.unwrap_or_default();
            if run.is_empty() {
                base = seed;
                run.push(r);
            } else if run.len() < max_batch && seed == base.wrapping_add(run.len() as u64) {
                run.push(r);
            } else {
                rest.push(r);
            }
        }
        batches.push((base, run));
        seeded = rest;
    }
    batches
}

/// Runs one batch and answers its jobs.
fn run_batch(
    model: &LanguageModel,
    mix: &ExpertMix,
    key: &GroupKey,
    seed: u64,
    batch: Vec<Ready>,
    counters: &Counters,
) {
    let config = GenerationConfig {
        max_new_tokens: key.max_tokens,
        temperature: key.temperature,
        top_p: key.top_p,
        stop: key.stop.clone(),
        seed,
        ..Default::default()
    };
    let prompts: Vec<Vec<u32>> = batch.iter().map(|r| r.prompt.clone()).collect();
    let start = Instant::now();
    // a panic inside the model must not take the server down: the batch fails with a 500
    let outcome =
        std::panic::catch_unwind(AssertUnwindSafe(|| generate(model, &prompts, &config, mix)));
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters
        .largest_batch
        .fetch_max(batch.len() as u64, Ordering::Relaxed);
    let generations = match outcome {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return fail_all(batch, &format!("generation failed: {e}")),
        Err(_) => return fail_all(batch, "generation panicked (a bug: please report it)"),
    };
    let tokens: usize = generations.iter().map(|g| g.token_ids.len()).sum();
    counters
        .tokens_generated
        .fetch_add(tokens as u64, Ordering::Relaxed);
    tracing::info!(
        "batch of {} request(s): {tokens} tokens in {:.2} s",
        batch.len(),
        start.elapsed().as_secs_f64()
    );
    for (ready, generation) in batch.into_iter().zip(generations) {
        let deltas = if ready.job.stream {
            stream_deltas(model, &generation)
        } else {
            Vec::new()
        };
        let answer = Answer {
            finish_reason: match generation.finish_reason {
                FinishReason::Eos | FinishReason::Stop => "stop",
                FinishReason::Length => "length",
            },
            prompt_tokens: ready.prompt.len(),
            completion_tokens: generation.token_ids.len(),
            text: generation.text,
            deltas,
        };
        let _ = ready.job.reply.send(Ok(answer));
    }
}

fn fail_all(batch: Vec<Ready>, message: &str) {
    tracing::error!("{message}");
    for r in batch {
        let _ = r.job.reply.send(Err(ApiError::internal(message)));
    }
}

/// Pieces of `generation.text`, one per token that adds whole characters to it: each token's
/// decoded prefix, matched against the final text (which a stop string may have cut), so that a
/// piece never splits a multi-byte character and the pieces always join to the text exactly.
pub(crate) fn stream_deltas(model: &LanguageModel, generation: &Generation) -> Vec<String> {
    let text = &generation.text;
    let mut deltas = Vec::new();
    let mut sent = 0;
    for k in 1..=generation.token_ids.len() {
        let Ok(prefix) = model.decode(&generation.token_ids[..k]) else {
            continue;
        };
        // an incomplete UTF-8 sequence decodes to U+FFFD until its last byte arrives
        let prefix = prefix.trim_end_matches('\u{FFFD}');
        let common = common_prefix_len(prefix, text);
        if common > sent {
            deltas.push(text[sent..common].to_string());
            sent = common;
        }
    }
    if sent < text.len() {
        deltas.push(text[sent..].to_string());
    }
    deltas
}

/// Length in bytes of the longest common prefix of `a` and `b` that ends on a character
/// boundary of both.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or_else(|| a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(seed: Option<u64>, temperature: f32) -> Ready {
        let (tx, _rx) = oneshot::channel();
        Ready {
            job: Job {
                messages: Vec::new(),
                settings: Settings {
                    max_tokens: Some(4),
                    temperature,
                    top_p: 0.9,
                    stop: Vec::new(),
                    seed,
                },
                stream: false,
                reply: tx,
            },
            prompt: vec![1],
            max_tokens: 4,
        }
    }

    fn seeds(batches: &[(u64, Vec<Ready>)]) -> Vec<(u64, Vec<Option<u64>>)> {
        batches
            .iter()
            .map(|(b, rows)| (*b, rows.iter().map(|r| r.job.settings.seed).collect()))
            .collect()
    }

    #[test]
    fn greedy_requests_batch_regardless_of_seed_and_top_p() {
        let mut a = ready(Some(5), 0.0);
        a.job.settings.top_p = 0.5;
        let rows = vec![a, ready(None, 0.0), ready(Some(9), 0.0)];
        let groups = group(rows);
        assert_eq!(groups.len(), 1);
        let (key, members) = groups.into_iter().next().unwrap();
        let mut next = 0;
        let batches = plan(members, &key, 2, &mut next);
        assert_eq!(
            seeds(&batches),
            vec![(0, vec![Some(5), None]), (0, vec![Some(9)])]
        );
        assert_eq!(next, 0, "greedy batches use no seeds");
    }

    #[test]
    fn sampled_requests_keep_their_own_seed() {
        let rows = vec![
            ready(Some(4), 0.7),
            ready(Some(2), 0.7),
            ready(Some(3), 0.7),
            ready(Some(3), 0.7),
            ready(None, 0.7),
            ready(None, 0.7),
            ready(Some(9), 0.7),
        ];
        let groups = group(rows);
        assert_eq!(groups.len(), 1);
        let (key, members) = groups.into_iter().next().unwrap();
        let mut next = 10;
        let batches = plan(members, &key, 8, &mut next);
        // every row r of a batch with base b samples with seed b + r, its own
        for (base, rows) in &batches {
            for (r, row) in rows.iter().enumerate() {
                if let Some(s) = row.job.settings.seed {
                    assert_eq!(s, base + r as u64);
                }
            }
        }
        assert_eq!(
            seeds(&batches),
            vec![
                (10, vec![None, None]),
                (2, vec![Some(2), Some(3), Some(4)]),
                (3, vec![Some(3)]),
                (9, vec![Some(9)]),
            ]
        );
        assert_eq!(next, 12);
    }

    #[test]
    fn different_settings_do_not_share_a_batch() {
        let mut long = ready(None, 0.0);
        long.max_tokens = 8;
        let mut stop = ready(None, 0.0);
        stop.job.settings.stop = vec!["\n".into()];
        let groups = group(vec![ready(None, 0.0), long, stop, ready(None, 0.0)]);
        assert_eq!(
            groups.iter().map(|(_, m)| m.len()).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
    }

    #[test]
    fn common_prefix_stops_at_a_character_boundary() {
        assert_eq!(common_prefix_len("héllo", "hélp"), 4);
        assert_eq!(common_prefix_len("ab", "abc"), 2);
        assert_eq!(common_prefix_len("abc", "ab"), 2);
        assert_eq!(common_prefix_len("é", "è"), 0);
    }

    #[test]
    fn deltas_join_to_the_text_even_with_split_characters() {
        let device = lm_core::testing::test_device();
        let model = lm_core::testing::tiny_language_model(1, &device);
        // "é" is two byte tokens: the first decodes to U+FFFD alone
        let ids = model.encode_continuation("aé b").unwrap();
        assert_eq!(ids.len(), 5);
        let generation = Generation {
            token_ids: ids,
            text: "aé b".into(),
            finish_reason: FinishReason::Length,
        };
        let deltas = stream_deltas(&model, &generation);
        assert_eq!(deltas, vec!["a", "é", " ", "b"]);
        // a text cut by a stop string: pieces stop where it ends
        let cut = Generation {
            text: "aé".into(),
            ..generation
        };
        assert_eq!(stream_deltas(&model, &cut).concat(), "aé");
    }
}
