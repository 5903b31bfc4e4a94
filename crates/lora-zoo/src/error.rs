//! The crate's error type: every refusal is a named variant that says what was expected, what was
//! found and what to do about it.

use std::path::PathBuf;

/// Result alias for everything in `lora-zoo`.
pub type Result<T> = std::result::Result<T, LoraError>;

/// Everything that can go wrong while reading, validating, writing or combining LoRA adapters.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// A file could not be read or written.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `adapter_config.json` is not valid JSON for a LoRA config.
    #[error(
        "invalid adapter_config.json at {path}: {message}; expected a PEFT LoraConfig JSON object"
    )]
    InvalidConfig {
        /// The config file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The adapter directory lacks a required file.
    #[error(
        "{path} is missing; a PEFT adapter directory holds adapter_config.json and adapter_model.safetensors"
    )]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// The config says this is not a LoRA adapter.
    #[error("peft_type is {found:?}, expected \"LORA\"; only LoRA adapters are supported")]
    NotLora {
        /// The `peft_type` found.
        found: String,
    },
    /// DoRA adapters need the base weight norm at run time and are not supported.
    #[error(
        "DoRA adapter refused ({detail}): use_dora adapters keep a magnitude vector that needs the base weights; \
         re-train without use_dora or merge it with PEFT first"
    )]
    DoraUnsupported {
        /// Where DoRA was detected (config flag or tensor key).
        detail: String,
    },
    /// `modules_to_save` stores whole modules that are not LoRA factors.
    #[error(
        "modules_to_save is not supported (found {modules:?}): these are full weight copies, not LoRA factors; \
         drop them from the adapter or merge with PEFT"
    )]
    ModulesToSaveUnsupported {
        /// The module names or keys involved.
        modules: Vec<String>,
    },
    /// Adapters on the token embedding or on the output head are not supported.
    #[error(
        "adapter on {module} refused: embedding and lm_head adapters are not supported, only linear layers \
         inside the transformer blocks"
    )]
    EmbeddingAdapter {
        /// The offending module.
        module: String,
    },
    /// Bias training (`bias != "none"` or `lora_bias`) stores extra bias tensors that we do not apply.
    #[error(
        "bias {found:?} refused: only bias = \"none\" is supported (found bias tensors or a bias setting)"
    )]
    BiasUnsupported {
        /// The setting or key found.
        found: String,
    },
    /// A rank of zero in the config or in a tensor.
    #[error("rank 0 for {module}: a LoRA rank must be at least 1")]
    ZeroRank {
        /// The module (or `"config"`).
        module: String,
    },
    /// A tensor holds NaN or infinite values.
    #[error(
        "tensor {key} holds a non-finite value ({value}) at flat index {index}; the adapter is corrupt"
    )]
    NonFinite {
        /// The safetensors key.
        key: String,
        /// The offending value.
        value: f32,
        /// Its flat index.
        index: usize,
    },
    /// The rank in the config (with `rank_pattern`) disagrees with the tensors.
    #[error(
        "rank mismatch for {module}: adapter_config.json says r = {config_rank}, tensors have r = {tensor_rank}; \
         fix r / rank_pattern in the config"
    )]
    RankMismatch {
        /// The module.
        module: String,
        /// Rank the config gives for it.
        config_rank: usize,
        /// Rank found in the tensors.
        tensor_rank: usize,
    },
    /// One factor of a pair is missing.
    #[error("module {module} has {present} but no {missing}; both lora_A and lora_B are required")]
    MissingFactor {
        /// The module.
        module: String,
        /// The factor found.
        present: &'static str,
        /// The factor missing.
        missing: &'static str,
    },
    /// A tensor does not have the expected shape.
    #[error("shape mismatch for {what}: expected {expected}, found {found:?}")]
    ShapeMismatch {
        /// What was checked.
        what: String,
        /// The expected shape, in words.
        expected: String,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A module of the adapter does not exist in the base model.
    #[error(
        "adapter module {module} is not a linear layer of base model {base}; the adapter was trained for another \
         architecture or uses an unknown target module"
    )]
    UnknownTargetModule {
        /// The module name.
        module: String,
        /// The base model's name.
        base: String,
    },
    /// The safetensors file is truncated or malformed.
    #[error(
        "cannot parse {path} as safetensors ({message}); the file is truncated or not a safetensors file"
    )]
    InvalidSafetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A tensor has a dtype we do not read.
    #[error("tensor {key} has dtype {dtype}; expected F32, F16, BF16 or F64")]
    UnsupportedDtype {
        /// The key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// A tensor key is not a LoRA factor key.
    #[error(
        "tensor key {key} is not a LoRA factor; expected base_model.model.<module>.lora_A[.<name>].weight or \
         lora_B"
    )]
    UnrecognizedTensor {
        /// The key.
        key: String,
    },
    /// A regex in the config is not supported by the Rust regex engine.
    #[error(
        "pattern {pattern:?} in {field} does not compile ({message}); look-around and back-references are not supported"
    )]
    BadPattern {
        /// The config field.
        field: &'static str,
        /// The pattern.
        pattern: String,
        /// The compiler's message.
        message: String,
    },
    /// The in-memory adapter does not agree with its config (before writing).
    #[error("adapter is inconsistent with its config for {module}: {message}")]
    Inconsistent {
        /// The module.
        module: String,
        /// What disagrees.
        message: String,
    },
    /// `init_lora_weights` names an initialisation that rewrites the base weights (PiSSA, OLoRA,
    /// CorDA, LoftQ): the saved factors are only valid on that residual base, not on the original.
    #[error(
        "init_lora_weights = {init:?} refused: this initialisation subtracts the initial adapter from the base \
         weights, so the saved factors only fit that residual base, not the original model. Convert it to a plain \
         LoRA with PEFT first: save_pretrained(..., path_initial_model_for_weight_conversion=<the initial \
         {init} adapter>) (or convert_pissa_to_lora), which writes an adapter with init_lora_weights = true"
    )]
    ResidualBaseInit {
        /// The `init_lora_weights` value found.
        init: String,
    },
    /// An adapter file holds no LoRA module its config targets: applying it would silently run the
    /// base model.
    #[error(
        "adapter {path} adapts no module: {detail}; applying it would silently run the base model"
    )]
    EmptyAdapter {
        /// The weights file.
        path: PathBuf,
        /// Why nothing is left (no tensors, or every tensor outside target_modules).
        detail: String,
    },
    /// Strict loading: the file holds factors for modules the config does not target.
    #[error(
        "adapter {path} holds LoRA factors for {} module(s) its config does not target ({}); PEFT ignores \
         them: fix target_modules / layers_to_transform or remove the tensors",
        modules.len(), modules.join(", ")
    )]
    UntargetedTensors {
        /// The weights file.
        path: PathBuf,
        /// The untargeted modules.
        modules: Vec<String>,
    },
    /// A combination or merge whose result adapts no module (every combined update is zero).
    #[error(
        "the {method} combination adapts no module ({detail}); nothing was written. Use non-zero --weights / \
         --lambda, or a larger --density"
    )]
    EmptyCombination {
        /// The combination method.
        method: String,
        /// Why (which settings zeroed every update).
        detail: String,
    },
    /// Invalid arguments to a combination.
    #[error("invalid combination request: {0}")]
    InvalidCombine(String),
    /// An adapter name is not in the bank.
    #[error("no adapter named {name:?} in bank {root}; known: {known:?}")]
    UnknownAdapter {
        /// The name asked for.
        name: String,
        /// The bank root.
        root: PathBuf,
        /// Known names.
        known: Vec<String>,
    },
    /// Serialising an output failed.
    #[error("cannot serialise {what}: {message}")]
    Serialize {
        /// What was being written.
        what: String,
        /// The serialiser's message.
        message: String,
    },
    /// The model runtime failed (loading the base, building tensors).
    #[error(transparent)]
    Model(#[from] lm_core::LmError),

    /// An output file or directory could not be written atomically, or was refused (it exists
    /// and `--force` was not given, it is a file, ...).
    #[error(transparent)]
    Output(#[from] atomic_fs::Error),

    /// The adapter's weights are a PyTorch pickle (`adapter_model.bin`), not safetensors.
    #[error(
        "{path} holds pickled PyTorch weights; expected adapter_model.safetensors next to it (pickles can run code and are not read). Convert it with PEFT: PeftModel.from_pretrained(base, dir).save_pretrained(out, safe_serialization=True)"
    )]
    PickleWeights {
        /// The `adapter_model.bin` file.
        path: PathBuf,
    },
}

impl LoraError {
    /// Wraps an `std::io::Error` with the path involved.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        LoraError::Io {
            path: path.into(),
            source,
        }
    }
}
