//! The crate's error type: every refusal says what was expected, what was found and what to do.

use std::path::PathBuf;

/// Result alias for everything in `moe-router`.
pub type Result<T> = std::result::Result<T, MoeError>;

/// Everything that can go wrong while building, validating, saving or loading a mixture.
#[derive(Debug, thiserror::Error)]
pub enum MoeError {
    /// A forward pass of the mixed model failed while collecting routing statistics.
    #[error(
        "routing statistics: expected every text to score through the mixture, but a forward pass failed (cause below); check that each text fits the model's context and was encoded with its tokenizer"
    )]
    Route {
        /// What lm-core said.
        #[source]
        source: Box<lm_core::LmError>,
    },
    /// No experts were listed.
    #[error("the mixture has no experts; list at least one PEFT adapter directory in `experts`")]
    NoExperts,
    /// The same expert appears twice (by name or by directory).
    #[error(
        "expert {name:?} is listed twice ({detail}); each expert must appear once, remove the duplicate"
    )]
    DuplicateExpert {
        /// The repeated name.
        name: String,
        /// What is repeated (the name, or the directory and both names).
        detail: String,
    },
    /// An expert name that cannot be a directory name.
    #[error(
        "expert name {name:?} is not usable: names must be non-empty and contain no '/', '\\' or '..' (they become directory names)"
    )]
    BadExpertName {
        /// The name.
        name: String,
    },
    /// `top_k` outside `1..=E`.
    #[error(
        "top_k = {k} is outside 1..={experts} (the number of experts); use {experts} for dense soft routing"
    )]
    BadTopK {
        /// The k asked for.
        k: usize,
        /// Number of experts.
        experts: usize,
    },
    /// The numbers of expert specs and loaded adapters differ.
    #[error("{specs} experts are configured but {adapters} adapters were given")]
    ExpertCount {
        /// Experts in the config.
        specs: usize,
        /// Adapters passed.
        adapters: usize,
    },
    /// An expert's adapter could not be read.
    #[error("expert {expert:?}: cannot load the PEFT adapter at {path}")]
    LoadExpert {
        /// The expert.
        expert: String,
        /// Its directory.
        path: PathBuf,
        /// What lora-zoo said.
        #[source]
        source: Box<lora_zoo::LoraError>,
    },
    /// An expert does not fit the base model (unknown module or other shapes).
    #[error(
        "expert {expert:?} was not trained for this base model ({base}); use adapters of the same base model"
    )]
    ExpertForAnotherBase {
        /// The expert.
        expert: String,
        /// The base model the mixture is built on.
        base: String,
        /// The first mismatch lora-zoo found.
        #[source]
        source: Box<lora_zoo::LoraError>,
    },
    /// Experts name different base models in their `adapter_config.json`.
    #[error(
        "expert {expert:?} names base model {found:?} but expert {first:?} names {expected:?}; a mixture needs \
         experts of one base model (if both names are the same model, fix base_model_name_or_path)"
    )]
    BaseModelNames {
        /// The expert that differs.
        expert: String,
        /// Its base model name.
        found: String,
        /// The first expert.
        first: String,
        /// The first expert's base model name.
        expected: String,
    },
    /// An expert shares no target module with the other experts.
    #[error(
        "expert {expert:?} targets {modules:?}, which no other expert targets (the others target {others:?}); \
         routing would pick between it and zero experts. Use experts trained on overlapping target_modules \
         (e.g. all on q_proj,v_proj)"
    )]
    DisjointTargets {
        /// The expert.
        expert: String,
        /// Its target module suffixes.
        modules: Vec<String>,
        /// The other experts' target module suffixes.
        others: Vec<String>,
    },
    /// Attaching the experts to the decoder failed.
    #[error("attaching the experts to the decoder failed")]
    Attach(#[source] Box<lora_zoo::LoraError>),
    /// A mix does not fit an adapted layer.
    #[error("module {module}: the expert mix does not fit")]
    Mix {
        /// The module.
        module: String,
        /// What lm-core said.
        #[source]
        source: lm_core::model::adapted_linear::MixError,
    },
    /// The decoder holds no mixture where one was expected.
    #[error(
        "module {module} has no routed experts; build or load the mixture on this decoder first"
    )]
    NotAttached {
        /// The module.
        module: String,
    },
    /// A router weight is not finite.
    #[error(
        "router of {module} has a non-finite weight {value} at index {index}; the file is corrupt or training diverged"
    )]
    NonFiniteRouter {
        /// The module.
        module: String,
        /// The value.
        value: f32,
        /// Its flat index.
        index: usize,
    },
    /// A router tensor is missing or has the wrong shape.
    #[error("router of {module}: expected {expected}, found {found}")]
    RouterShape {
        /// The module.
        module: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// A saved mixture was built on another base model.
    #[error(
        "the mixture at {path} was built for another base model: {field} is {saved} there but {found} here; \
         load it on the base model it was built on"
    )]
    BaseMismatch {
        /// The mixture directory.
        path: PathBuf,
        /// Which property differs.
        field: String,
        /// The saved value.
        saved: String,
        /// The value of the decoder at hand.
        found: String,
    },
    /// A file could not be read or written.
    #[error("i/o error on {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A directory given as a mixture is not one.
    #[error(
        "{path} is not a mixture directory: expected {expected} (as written by `openexpert moe build`, \
         `moe arrow` or `moe train`), found {found}"
    )]
    NotAMixture {
        /// The directory.
        path: PathBuf,
        /// What a mixture directory holds.
        expected: String,
        /// What is there instead.
        found: String,
    },
    /// `moe_config.json` is not valid.
    #[error(
        "{path} is not a valid mixture config (edited or truncated?); rebuild the mixture with \
         `openexpert moe build` or `moe train`"
    )]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// `router.safetensors` is not valid.
    #[error(
        "{path} is not a valid safetensors file (truncated or corrupt?); rebuild the mixture with \
         `openexpert moe build` or `moe train`"
    )]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// Writing an expert back as a PEFT adapter failed.
    #[error("saving expert {expert:?} as a PEFT adapter failed")]
    SaveExpert {
        /// The expert.
        expert: String,
        /// What lora-zoo said.
        #[source]
        source: Box<lora_zoo::LoraError>,
    },
    /// The LoraHub search was given nothing to search.
    #[error("LoraHub needs at least one expert and a budget of at least one evaluation")]
    EmptySearch,
    /// The CMA-ES optimiser refused its options.
    #[error("CMA-ES refused its options: {0}")]
    Optimizer(String),

    /// The mixture directory could not be written.
    #[error("writing the mixture directory")]
    Output(#[source] Box<atomic_fs::Error>),
}

impl MoeError {
    /// An i/o error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MoeError::Io {
            path: path.into(),
            source,
        }
    }
}
