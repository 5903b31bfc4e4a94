//! moe-router: token-routed mixtures of LoRA experts built from bank adapters (Rocket stages 6-7),
//! with training-free Arrow routing and the LoraHub static-mix search as baselines.
//!
//! - [`config`]: [`MoeConfig`] (experts, `top_k`, router placement and init, loss coefficients).
//! - [`moe`]: [`Moe`] — validation, building on a decoder (scales folded, ranks padded, seeded
//!   routers), routing recorders and statistics, save / load of a mixture directory.
//! - [`losses`]: Switch balance loss and router z-loss on recorded router logits.
//! - [`arrow`]: Arrow prototypes (top right-singular vectors of each expert's `ΔW`).
//! - [`lorahub`]: LoraHub's gradient-free search of static expert weights (CMA-ES).
//! - [`fingerprint`]: the base-model identity a saved mixture is checked against.
//! - [`train`]: [`train::MoeTrainable`], a mixture's routers (and experts) as the trainer's parameters.
//!
//! The routed forward itself is lm-core's: `AdaptedLinear` with
//! `ExpertMix::Routed { top_k }` computes each expert only on the tokens routed to it.
//!
//! ```no_run
//! # fn demo(decoder: &mut lm_core::model::Decoder) -> moe_router::Result<()> {
//! use moe_router::{ExpertSpec, Moe, MoeConfig};
//! let config = MoeConfig::new(vec![
//!     ExpertSpec { name: "arc".into(), path: "bank/arc".into() },
//!     ExpertSpec { name: "gsm8k".into(), path: "bank/gsm8k".into() },
//! ]);
//! let moe = Moe::from_config(decoder, config)?;
//! let recorders = moe.record(decoder, true, false);
//! // ... decoder.forward(tokens, &moe.mix()) / lm_core::score / lm_core::generate ...
//! for m in recorders.stats() { println!("{} {:?}", m.module, m.load_share); }
//! moe.save(decoder, "out/moe".as_ref())?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod arrow;
pub mod config;
pub mod error;
pub mod fingerprint;
pub mod lorahub;
pub mod losses;
pub mod moe;
pub mod train;

pub use config::{ExpertSpec, MoeConfig, RouterInit, RouterPlacement};
pub use error::{MoeError, Result};
pub use fingerprint::BaseFingerprint;
pub use lorahub::{LoraHubOptions, LoraHubResult, lorahub_search};
pub use losses::{AuxLosses, aux_losses, router_z_loss, switch_balance_loss};
pub use moe::{
    ExpertInfo, ModuleRouting, Moe, RouteRecorders, RouterWeights, decoder_spec, layer_load_share,
    load_experts,
};
