//! Option groups shared by several commands, flattened into each command's arguments
//! (`#[command(flatten)]`), so a flag is spelled, documented and defaulted in one place:
//!
//! - [`model`]: `--model` (a decoder; default [`lm_core::assets::DEFAULT_MODEL`]) and the global
//!   `--device` / `--threads`;
//! - [`adapters`]: `--adapter` / `--adapter-weight`: PEFT adapters *combined* into one expert;
//! - [`output`]: report outputs (`--output` + `--markdown`, `--output` + `--report`);
//! - [`trainer`]: the LoRA trainer's flags (`train`, `select evolve`), defaults from
//!   [`lm_core::train::TrainConfig`];
//! - [`evaluation`]: the K-shot evaluation flags (`eval`, `rank-bank`), defaults from
//!   [`kshot_eval::EvalConfig`];
//! - [`format`]: `--format chat|plain`, one meaning in every command.
//!
//! Defaults come from the libraries (`default_value_t = <library default>`), never restated.
//! The libraries' algorithm switches (`Metric`, `CombineMethod`, ...) parse through their own
//! `FromStr`; [`named`] adds the accepted words to `--help`.

pub mod adapters;
pub mod evaluation;
pub mod format;
pub mod model;
pub mod output;
pub mod trainer;

use std::str::FromStr;

use clap::builder::{PossibleValuesParser, TypedValueParser};

/// A library enum with a fixed set of names (`lm_core::named_enum!` / `data_select::named_enum!`).
pub trait Named: FromStr + Clone + Send + Sync + 'static {
    /// The accepted names.
    const NAMES: &'static [&'static str];
}

macro_rules! named {
    ($($ty:ty),+ $(,)?) => {
        $(impl Named for $ty {
            const NAMES: &'static [&'static str] = <$ty>::NAMES;
        })+
    };
}

named!(
    data_select::Metric,
    data_select::kcenter::Strategy,
    data_select::dedup::DedupMode,
    data_select::retrieve::Similarity,
    data_select::baselines::Allocation,
    data_select::baselines::Within,
    data_select::evolve::EvolveStrategy,
    kshot_eval::select::ShortlistRule,
    kshot_eval::select::TupleRule,
    kshot_eval::rank::PplSignal,
    kshot_eval::rank::AccuracySignal,
    lora_zoo::SimilarityMode,
    lora_zoo::combine::CombineMethod,
    lora_zoo::combine::MajoritySign,
);

/// The value parser of a [`Named`] enum: its own `FromStr`, with the accepted names listed in
/// `--help` and in the error for an unknown one.
pub fn named<T: Named>() -> impl TypedValueParser<Value = T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(T::NAMES).try_map(|s| s.parse::<T>())
}
