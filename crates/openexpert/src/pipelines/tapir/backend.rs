//! The two [`ChatBackend`]s of TAPIR's teacher, judge and classifier:
//!
//! - [`LocalChat`]: an lm-core [`LanguageModel`] (with optional PEFT adapters) generating with
//!   its own chat template. Greedy requests are batched (`batch_size` prompts at a time,
//!   left-padded, which lm-core guarantees does not change a row's tokens); sampled requests run
//!   one at a time with their own seed, so a request's answer never depends on which other
//!   requests share its batch (a resumed run asks fewer).
//! - [`RemoteChat`]: an OpenAI-compatible endpoint through `llm_client::ChatClient` (bounded
//!   concurrency, retries with backoff on 429 / 5xx / timeouts only, `Retry-After`).
//!
//! Both answer from, and fill, an [`llm_client::CallCache`] keyed by (model, messages,
//! sampling): a re-run replays every answered call and computes only the missing ones. The
//! local key's model is `local:{spec}` plus a hash of the adapters' weights.
//!
//! Before a run, [`RemoteChat::preflight`] asks the endpoint for its models (`GET /models`):
//! an endpoint that is down, refuses the key or does not serve the model stops the run before
//! any model is loaded.
//!
//! Failures: a request that alone fails (a prompt longer than the model's context, a 500 that
//! outlived the retries, a timeout) is a [`CallFailure`] in its slot, counted and skipped by the
//! algorithms; an endpoint that cannot be reached, refuses the key (401 / 403, never retried),
//! has no such model (404) or a cache that cannot be written stop the run with the role and the
//! URL named.

use std::path::Path;

use llm_client::{CallCache, ChatClient, ClientError, Completion};
use lm_core::generate::{FinishReason, GenerationConfig, generate};
use lm_core::model::{ExpertMix, LanguageModel};
use sha2::{Digest, Sha256};
use tapir_curriculum::TapirError;
use tapir_curriculum::chat::{
    CallFailure, ChatBackend, ChatMessage, ChatRequest, Replies, Reply, Role, Sampling,
};

/// The llm-client form of a chat request (what the cache key is computed from).
fn wire(request: &ChatRequest) -> (Vec<llm_client::wire::ChatMessage>, llm_client::Sampling) {
    let messages = request
        .messages
        .iter()
        .map(|m| {
            llm_client::wire::ChatMessage::new(
                match m.role {
                    Role::System => "system",
                    Role::User => "user",
                    Role::Assistant => "assistant",
                },
                m.content.clone(),
            )
        })
        .collect();
    let s = &request.sampling;
    let sampling = llm_client::Sampling {
        temperature: s.temperature,
        top_p: s.top_p,
        max_tokens: s.max_tokens,
        stop: Vec::new(),
        seed: Some(s.seed),
    };
    (messages, sampling)
}

fn reply_of(c: Completion) -> Reply {
    Reply {
        truncated: c.finish_reason == "length",
        text: c.text,
        cached: c.cached,
    }
}

/// A local lm-core model as a chat backend.
pub struct LocalChat {
    model: LanguageModel,
    mix: ExpertMix,
    key_model: String,
    describe: String,
    cache: Option<CallCache>,
    batch_size: usize,
    progress: bool,
}

impl std::fmt::Debug for LocalChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChat")
            .field("model", &self.key_model)
            .finish_non_exhaustive()
    }
}

impl LocalChat {
    /// Loads `spec` (asset name, GGUF file, HF directory) on `device` in `precision`, with
    /// `adapters` attached and summed with weight 1.
    ///
    /// # Errors
    /// The model or an adapter cannot be loaded, or the model has no chat template.
    pub fn load(
        spec: &str,
        adapters: &[std::path::PathBuf],
        precision: lm_core::model::Precision,
        device: &lm_core::burn::tensor::Device,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let mut model = LanguageModel::load(spec, device)?;
        model.set_precision(precision)?;
        if model.chat_template.is_none() {
            return Err(format!("{spec} has no chat template; a teacher, judge or classifier needs an instruct model with one").into());
        }
        // The call cache keys on the precision too (f32 keeps the key it had before `dtype`).
        let in_dtype = match precision {
            lm_core::model::Precision::F32 => String::new(),
            p => format!(" in {p}"),
        };
        let mut key_model = format!("local:{spec}");
        if !in_dtype.is_empty() {
            key_model.push_str(&format!("+dtype:{precision}"));
        }
        let mix = if adapters.is_empty() {
            ExpertMix::Base
        } else {
            let mut loaded = Vec::new();
            let mut h = Sha256::new();
            for dir in adapters {
                let a = lora_zoo::LoraAdapter::load(dir)
                    .map_err(|e| format!("loading adapter {}: {e}", dir.display()))?;
                for f in ["adapter_config.json", "adapter_model.safetensors"] {
                    let p = dir.join(f);
                    h.update(std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?);
                }
                loaded.push(a);
            }
            let refs: Vec<&lora_zoo::LoraAdapter> = loaded.iter().collect();
            lora_zoo::apply::attach_adapters(&mut model.decoder, &refs)?;
            key_model.push_str(&format!("+adapters:{:x}", h.finalize()));
            ExpertMix::Static(vec![1.0; adapters.len()])
        };
        Ok(Self {
            model,
            mix,
            describe: if adapters.is_empty() {
                format!("local {spec}{in_dtype}")
            } else {
                format!("local {spec} + {} adapter(s){in_dtype}", adapters.len())
            },
            key_model,
            cache: None,
            batch_size: 8,
            progress: false,
        })
    }

    /// Answer from and fill `cache`.
    pub fn with_cache(mut self, cache: CallCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Prompts per generation batch.
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Show progress bars on stderr.
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The model.
    pub fn model(&self) -> &LanguageModel {
        &self.model
    }

    fn prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, String> {
        let msgs: Vec<lm_core::chat_template::ChatMessage> = messages
            .iter()
            .map(|m| match m.role {
                Role::System => lm_core::chat_template::ChatMessage::system(m.content.clone()),
                Role::User => lm_core::chat_template::ChatMessage::user(m.content.clone()),
                Role::Assistant => {
                    lm_core::chat_template::ChatMessage::assistant(m.content.clone())
                }
            })
            .collect();
        let text = self
            .model
            .render_chat(&msgs, true)
            .map_err(|e| e.to_string())?;
        self.model.encode_chat(&text).map_err(|e| e.to_string())
    }

    fn config(s: &Sampling) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: s.max_tokens,
            temperature: s.temperature,
            top_p: s.top_p,
            seed: s.seed,
            ..GenerationConfig::default()
        }
    }
}

impl ChatBackend for LocalChat {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn complete(&self, requests: &[ChatRequest]) -> tapir_curriculum::Result<Replies> {
        let mut out: Vec<Option<Result<Reply, CallFailure>>> = vec![None; requests.len()];
        let keys: Vec<Option<String>> = requests
            .iter()
            .map(|r| {
                self.cache.as_ref().map(|_| {
                    let (m, s) = wire(r);
                    CallCache::key(&self.key_model, &m, &s)
                })
            })
            .collect();
        // Cached answers first; the rest are tokenised (a prompt that does not fit fails alone).
        let max = self.model.max_context();
        let mut todo: Vec<(usize, Vec<u32>)> = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            if let (Some(cache), Some(key)) = (&self.cache, &keys[i])
                && let Some(hit) = cache.get(key)
            {
                out[i] = Some(Ok(reply_of(hit)));
                continue;
            }
            match self.prompt(&r.messages) {
                Ok(ids) if ids.len() + r.sampling.max_tokens > max => {
                    out[i] = Some(Err(CallFailure {
                        detail: format!(
                            "the prompt has {} tokens; with max_new_tokens {} it exceeds the model's context of {max}",
                            ids.len(),
                            r.sampling.max_tokens
                        ),
                    }));
                }
                Ok(ids) => todo.push((i, ids)),
                Err(e) => out[i] = Some(Err(CallFailure { detail: e })),
            }
        }
        let bar = lm_core::progress::bar_if(
            self.progress && !todo.is_empty(),
            todo.len() as u64,
            &self.describe,
            "calls",
        );
        // Greedy requests with equal settings batch together (longest first, so a batch pads
        // little); sampled ones run alone with their own seed.
        let (greedy, sampled): (Vec<_>, Vec<_>) = todo
            .into_iter()
            .partition(|(i, _)| requests[*i].sampling.temperature == 0.0);
        let mut groups: Vec<Vec<(usize, Vec<u32>)>> = Vec::new();
        let mut greedy = greedy;
        greedy.sort_by_key(|(i, ids)| {
            let s = &requests[*i].sampling;
            (s.max_tokens, std::cmp::Reverse(ids.len()), *i)
        });
        for item in greedy {
            match groups.last_mut() {
                Some(g)
                    if g.len() < self.batch_size
                        && requests[g[0].0].sampling.max_tokens
                            == requests[item.0].sampling.max_tokens =>
                {
                    g.push(item)
                }
                _ => groups.push(vec![item]),
            }
        }
        groups.extend(sampled.into_iter().map(|x| vec![x]));
        for group in groups {
            let config = Self::config(&requests[group[0].0].sampling);
            let prompts: Vec<Vec<u32>> = group.iter().map(|(_, ids)| ids.clone()).collect();
            let generations = generate(&self.model, &prompts, &config, &self.mix)
                .map_err(|e| TapirError::Backend(Box::new(e)))?;
            for ((i, _), g) in group.iter().zip(generations) {
                let completion = Completion {
                    text: g.text.trim().to_string(),
                    finish_reason: if g.finish_reason == FinishReason::Length {
                        "length"
                    } else {
                        "stop"
                    }
                    .into(),
                    cached: false,
                };
                if let (Some(cache), Some(key)) = (&self.cache, &keys[*i]) {
                    cache
                        .put(key, &completion)
                        .map_err(|e| TapirError::Backend(Box::new(e)))?;
                }
                out[*i] = Some(Ok(reply_of(completion)));
            }
            bar.inc(group.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out
            .into_iter()
            .map(|r| r.expect("every request answered"))
            .collect())
    }
}

/// An OpenAI-compatible endpoint as a chat backend.
#[derive(Debug, Clone)]
pub struct RemoteChat {
    client: ChatClient,
    progress: bool,
}

impl RemoteChat {
    /// A client of `endpoint` for `role`, answering from and filling `cache` when given.
    ///
    /// # Errors
    /// Unusable endpoint settings or an API-key variable that is not set.
    pub fn new(
        role: &str,
        endpoint: llm_client::Endpoint,
        cache: Option<CallCache>,
    ) -> Result<Self, ClientError> {
        let mut client = ChatClient::new(role, endpoint)?;
        if let Some(c) = cache {
            client = client.with_cache(c);
        }
        Ok(Self {
            client,
            progress: false,
        })
    }

    /// Show a progress bar on stderr (per batch of calls).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The client.
    pub fn client(&self) -> &ChatClient {
        &self.client
    }

    /// Checks, with one `GET /models`, that the endpoint answers, accepts the key and serves
    /// the model, so that a long run fails at its start rather than at its first call. An
    /// endpoint whose model list cannot be read (no `/models` route, another shape) is only
    /// warned about: the chat calls may still work.
    ///
    /// # Errors
    /// An unreachable endpoint, a refused or missing key, a model it does not serve.
    pub fn preflight(&self) -> Result<(), ClientError> {
        match self.client.check_model() {
            Ok(()) => Ok(()),
            Err(e) if is_fatal(&e) => Err(e),
            Err(e) => {
                tracing::warn!(
                    "{}: could not check the served models ({e}); going on",
                    self.describe()
                );
                Ok(())
            }
        }
    }
}

/// Whether an error of one call means no call can succeed (stop the run) rather than this
/// call failed (skip the item).
pub fn is_fatal(e: &ClientError) -> bool {
    match e {
        ClientError::Unreachable { .. }
        | ClientError::Unauthorized { .. }
        | ClientError::MissingApiKey { .. }
        | ClientError::InvalidConfig { .. }
        | ClientError::InvalidRequest { .. }
        | ClientError::UnknownModel { .. }
        | ClientError::Io { .. }
        | ClientError::CacheWrite { .. } => true,
        ClientError::Status { status, .. } => matches!(status, 404 | 405),
        _ => false,
    }
}

impl ChatBackend for RemoteChat {
    fn describe(&self) -> String {
        format!("{} at {}", self.client.endpoint().model, self.client.url())
    }

    fn complete(&self, requests: &[ChatRequest]) -> tapir_curriculum::Result<Replies> {
        let calls: Vec<_> = requests.iter().map(wire).collect();
        let bar = lm_core::progress::bar_if(
            self.progress && calls.len() > 1,
            calls.len() as u64,
            &self.describe(),
            "calls",
        );
        // In slices, so the bar moves and a fatal error stops the run early.
        let slice = (self.client.endpoint().max_concurrency * 4).max(1);
        let mut out = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(slice) {
            for r in self.client.chat_many(chunk) {
                match r {
                    Ok(c) => out.push(Ok(reply_of(c))),
                    Err(e) if is_fatal(&e) => return Err(TapirError::Backend(Box::new(e))),
                    Err(e) => out.push(Err(CallFailure {
                        detail: e.to_string(),
                    })),
                }
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }
}

/// Opens the run's call cache.
///
/// # Errors
/// When the directory cannot be created.
pub fn open_cache(dir: &Path) -> Result<CallCache, ClientError> {
    CallCache::open(dir)
}
