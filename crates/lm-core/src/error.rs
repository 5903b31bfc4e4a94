//! The error type of lm-core: every failure says what was expected, what was found, and what to do.

use std::path::PathBuf;

/// Result alias used throughout lm-core.
pub type Result<T, E = LmError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading, running or fetching a model.
///
/// New variants are appended at the end; each message states what was expected, what was
/// found, and what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LmError {
    /// An operating-system level I/O failure on a named file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A file is not a valid instance of its format (truncated, lying header, bad offsets...).
    #[error(
        "{path}: corrupt {format} file: expected {expected}, found {found}. The file is truncated or damaged: re-download it (openexpert fetch) or re-export it."
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The format name, e.g. `GGUF` or `safetensors`.
        format: &'static str,
        /// What a valid file has at this point.
        expected: String,
        /// What this file has.
        found: String,
    },

    /// A tensor element type or quantisation this crate cannot read.
    #[error(
        "{path}: tensor `{tensor}` has unsupported type {dtype}. Supported: {supported}. Convert the model to one of these types."
    )]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The type found.
        dtype: String,
        /// The types supported.
        supported: &'static str,
    },

    /// A tensor has a different shape from what the model configuration implies.
    #[error(
        "tensor `{tensor}`: expected shape {expected:?} (from the model config), found {found:?}. The weights do not belong to this config."
    )]
    ShapeMismatch {
        /// The tensor name.
        tensor: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },

    /// A tensor the model needs is absent from the weights.
    #[error(
        "{path}: missing tensor `{tensor}`. The checkpoint is incomplete or for another architecture."
    )]
    MissingTensor {
        /// The file or directory searched.
        path: PathBuf,
        /// The tensor name that was looked for.
        tensor: String,
    },

    /// A model configuration (HF `config.json` or GGUF metadata) is missing a key or has a bad value.
    #[error("{path}: bad model config: {detail}")]
    Config {
        /// The config source.
        path: PathBuf,
        /// What is wrong and what was expected.
        detail: String,
    },

    /// The model architecture is not supported.
    #[error(
        "unsupported architecture `{found}`: lm-core runs {supported}. Use a model of one of these architectures."
    )]
    UnsupportedArchitecture {
        /// The architecture named by the model.
        found: String,
        /// The supported ones.
        supported: &'static str,
    },

    /// Tokenizer could not be built or failed on some text.
    #[error("tokenizer: {detail}")]
    Tokenizer {
        /// What went wrong.
        detail: String,
    },

    /// The chat template could not be rendered.
    #[error("chat template: {detail}")]
    ChatTemplate {
        /// What went wrong.
        detail: String,
    },

    /// An input is longer than the model's context window.
    #[error(
        "input of {tokens} tokens (+{extra} to generate) exceeds the model's context of {max} tokens: shorten the prompt or lower --max-new-tokens"
    )]
    ContextOverflow {
        /// The prompt length in tokens.
        tokens: usize,
        /// Tokens requested on top (generation budget).
        extra: usize,
        /// The model's maximum context.
        max: usize,
    },

    /// A caller passed an argument that cannot be used.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A device was asked for that is unknown or not compiled in.
    #[error("device `{name}`: {detail}")]
    Device {
        /// The device name asked for.
        name: String,
        /// Why it cannot be used and what to do.
        detail: String,
    },

    /// Fetching or verifying a default asset failed.
    #[error("asset `{name}`: {detail}")]
    Asset {
        /// The asset name from `assets/manifest.toml`.
        name: String,
        /// What went wrong and what to do.
        detail: String,
    },

    /// No training example survived tokenisation.
    #[error(
        "empty training set: expected at least one example with response tokens, found none usable out of {given} ({too_long} longer than max_len and skipped, {no_response} with no response token left). Give more data, raise max_len, or use the truncate policy."
    )]
    EmptyDataset {
        /// Examples given.
        given: usize,
        /// Skipped for length.
        too_long: usize,
        /// Skipped for having no response tokens.
        no_response: usize,
    },

    /// The training loss or a gradient became NaN or infinite.
    #[error(
        "non-finite loss or gradient at step {step}, micro-batch {micro_batch} (examples {examples:?}); training stopped, the last good checkpoint is {last_checkpoint:?}. Lower the learning rate, check those examples, or resume from the checkpoint."
    )]
    NonFiniteLoss {
        /// 1-based optimiser step.
        step: usize,
        /// Index of the micro-batch within the step.
        micro_batch: usize,
        /// Input indices of the examples in that micro-batch.
        examples: Vec<usize>,
        /// The newest checkpoint written before the failure, if any.
        last_checkpoint: Option<PathBuf>,
    },

    /// A training checkpoint cannot be used.
    #[error("checkpoint {path}: {detail}")]
    Checkpoint {
        /// The checkpoint directory.
        path: PathBuf,
        /// Why, and what to do.
        detail: String,
    },

    /// An adapter names a module the decoder does not have.
    #[error(
        "module `{module}` is not an adaptable linear of this {arch} decoder; expected `model.layers.<i>.self_attn.<q|k|v|o>_proj` or `model.layers.<i>.mlp.<gate|up|down>_proj` with i below the layer count. The adapter was made for another base model."
    )]
    UnknownModule {
        /// The module name asked for.
        module: String,
        /// The decoder's architecture.
        arch: String,
    },

    /// A LoRA rank of zero was asked for.
    #[error("LoRA rank r must be at least 1, found 0")]
    ZeroRank,

    /// A LoRA config targets no module of the model.
    #[error(
        "no module of the model matches target_modules {targets:?} (layers {layers:?}); adaptable modules are {adaptable}"
    )]
    NoTargetModule {
        /// The configured targets.
        targets: Vec<String>,
        /// The configured layers, if any.
        layers: Option<Vec<usize>>,
        /// The model's adaptable module names.
        adaptable: String,
    },

    /// LoRA factors handed to the seam do not fit the layer they target.
    #[error("LoRA factors for `{module}`: {detail}")]
    ExpertFactors {
        /// The module the factors target.
        module: String,
        /// What was expected and found.
        detail: String,
    },
    /// A model folder or file holds the other kind of model (an encoder where a decoder is
    /// needed, or the reverse).
    #[error("{path} holds {found}; {expected}")]
    WrongModelKind {
        /// The model file or folder.
        path: PathBuf,
        /// What it holds, e.g. `an encoder (BERT)`.
        found: &'static str,
        /// What is needed here, and what to do instead.
        expected: &'static str,
    },

    /// A row (prompt, sequence, continuation, text to score) has no tokens.
    #[error("{what} has no tokens: expected at least one token per row; drop empty rows first")]
    EmptyInput {
        /// Which row, e.g. `prompt 3`.
        what: String,
    },

    /// A per-row expert mix (or a per-row list) has a different length from the batch.
    #[error("{what}: expected {expected}, found {found}; give exactly one per row")]
    RowCountMismatch {
        /// What was counted, e.g. `ExpertMix::PerRow needs one expert per prompt`.
        what: String,
        /// The number of rows.
        expected: usize,
        /// The number of entries given.
        found: usize,
    },

    /// An output file or directory could not be written atomically, or was refused (it exists
    /// and `--force` was not given, it is a file, ...).
    #[error(transparent)]
    Output(#[from] atomic_fs::Error),

    /// A token id the tokenizer (its vocabulary, an added token) or the model's special-token
    /// settings (BOS, EOS, padding) can produce has no row in the embedding table: the tokenizer
    /// and the weights do not belong together. Checked when a model is loaded.
    #[error(
        "{path}: {what} has id {id}, but the embedding table has {rows} rows (ids 0 to {max}){more}. The tokenizer does not match the weights (tokens added without resizing the embeddings?): use the tokenizer the weights were trained with, or resize the embeddings (transformers' `resize_token_embeddings`) and re-export the model.",
        max = .rows.saturating_sub(1),
        more = if *.others > 0 { format!(", and {} more id(s) are past the table", .others) } else { String::new() }
    )]
    TokenizerBeyondEmbedding {
        /// The model file or folder.
        path: PathBuf,
        /// Which token, e.g. ``the tokenizer's added token `<|extra_ctl|>` `` or
        /// `the BOS token (tokenizer.ggml.bos_token_id)`.
        what: String,
        /// The smallest id past the table.
        id: u32,
        /// Rows of the embedding table (the model's vocabulary size).
        rows: usize,
        /// How many other ids are past the table.
        others: usize,
    },

    /// Token ids handed to the model (pre-tokenised input, ids from another tokenizer) include
    /// one the embedding table has no row for.
    #[error(
        "{what}: token id {id} is outside the model's vocabulary of {vocab} ids (0 to {max}). Ids must come from this model's tokenizer: re-tokenise the input with it.",
        max = .vocab.saturating_sub(1)
    )]
    TokenIdOutOfRange {
        /// Which input, e.g. `row 3 (text to score)`.
        what: String,
        /// The offending id (the first one in the row).
        id: u32,
        /// Rows of the embedding table.
        vocab: usize,
    },
}

impl LmError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LmError::Io {
            path: path.into(),
            source,
        }
    }
}
