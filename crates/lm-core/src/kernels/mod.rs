//! Fused CPU kernels for the hot paths of the models, inside burn's graph.
//!
//! Each kernel is a function on burn [`Tensor`](burn::tensor::Tensor)s with two paths:
//!
//! - **flex** (burn's CPU backend, f32): the kernel takes the contiguous buffers behind the
//!   tensors (burn's `extension` feature: `Tensor::try_into_primitive::<Flex>`), runs one
//!   vectorised pass ([`vecmath`], run-time CPU detection) split over rayon's threads, and wraps
//!   the result back. On the autodiff device over flex, kernels that training uses register their
//!   own backward (burn-autodiff's `Backward` trait), computed with the same vectorised loops.
//! - **generic**: the composition of burn ops the model used before, kept for the GPU backends,
//!   ndarray, other dtypes, and as the reference the tests compare the fast path with
//!   (proptest over shapes).
//!
//! | kernel | replaces | where |
//! |---|---|---|
//! | [`swiglu::swiglu`] | `silu(gate) * up` (scalar `exp`, 2 passes) | decoder MLP; autodiff backward too |
//! | [`norm::rms_norm`] | `square`, `mean_dim`, `+ε`, `sqrt`, `recip`, 2 `mul` | decoder norms |
//! | [`norm::layer_norm`] | 9 ops | BERT encoder |
//! | [`rope::rope_bshd`] | `select` ×2, `narrow` ×2, `neg`, `cat`, 2 `mul`, `add` | decoder q/k |
//! | [`gelu::gelu_erf`] | burn's scalar `erf` GELU | BERT feed-forward |
//! | [`frozen_linear::frozen_linear`] | autodiff's `dY · Wᵀ` with `Wᵀ` a transposed view | training: base linears, output head |

pub mod frozen_linear;
pub mod gelu;
pub mod norm;
pub mod rope;
pub mod swiglu;
pub mod vecmath;

#[cfg(feature = "flex")]
pub(crate) mod flex;

/// Environment variable that turns the fused kernels off: `off` (or `0`) for all of them, every
/// kernel then running its generic burn path, or a comma-separated list of kernels to turn off
/// (`swiglu_backward`, `frozen_linear`: the two used in training). For before/after
/// measurements in one binary.
pub const KERNELS_ENV: &str = "OPENEXPERT_KERNELS";

/// Whether the fused kernels may run ([`KERNELS_ENV`] is not `off` / `0`); read once.
pub fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| !matches!(std::env::var(KERNELS_ENV).as_deref(), Ok("off" | "0")))
}

/// Whether the kernel `name` may run: [`enabled`], and `name` not listed in [`KERNELS_ENV`].
pub fn enabled_kernel(name: &str) -> bool {
    enabled() && !std::env::var(KERNELS_ENV).is_ok_and(|v| v.split(',').any(|k| k.trim() == name))
}

/// Elements below which a kernel runs on the calling thread (thread hand-off costs more).
pub(crate) const PARALLEL_MIN: usize = 1 << 15;
