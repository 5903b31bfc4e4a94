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

pub mod gelu;
pub mod norm;
pub mod rope;
pub mod swiglu;
pub mod vecmath;

#[cfg(feature = "flex")]
pub(crate) mod flex;

/// Elements below which a kernel runs on the calling thread (thread hand-off costs more).
pub(crate) const PARALLEL_MIN: usize = 1 << 15;
