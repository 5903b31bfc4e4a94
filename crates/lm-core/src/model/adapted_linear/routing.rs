//! The learned router of an [`ExpertSet`](super::ExpertSet) and an optional recorder of what it
//! decides.
//!
//! A [`Router`] is a linear map `d_in → E` (no bias) whose logits go through a softmax in f32;
//! [`ExpertMix::Routed`](super::ExpertMix::Routed) then keeps the top-k gates per token and
//! renormalises them. `abs_logits` turns the logits into `|x · w_e|` first: training-free Arrow
//! routing, whose router rows are the experts' top right-singular vectors and whose sign is
//! arbitrary.
//!
//! A [`RouteRecorder`] attached to a router sees every routed forward pass of that module
//! (training, scoring, and each step of generation with a KV cache): it accumulates
//! [`RouteStats`] on the host (load per expert, mean gate, mean entropy) and, when asked, keeps
//! the logits tensors themselves (still on the autodiff graph) so a trainer can add a balance or
//! z-loss. The recorder is shared (`Arc`), so clones of the model — `to_device`, `.train()`,
//! forks — record into the same place. It is not part of the module's record (`#[module(skip)]`).

use std::sync::{Arc, Mutex, MutexGuard};

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;

/// A per-module router: `logits = x W_g` with `W_g: [d_in, E]` (burn layout), optionally `|·|`.
#[derive(Module, Debug)]
pub struct Router {
    /// The gate projection `d_in → E`, no bias.
    pub linear: Linear,
    /// Use `|x · w_e|` as logits (Arrow routing). Not saved with the module record: whoever
    /// builds or loads the router sets it.
    #[module(skip)]
    pub abs_logits: bool,
    /// Where routing decisions of this module are recorded, if anywhere.
    #[module(skip)]
    pub recorder: Option<RouteRecorder>,
}

impl From<Linear> for Router {
    fn from(linear: Linear) -> Self {
        Self {
            linear,
            abs_logits: false,
            recorder: None,
        }
    }
}

impl Router {
    /// Number of experts `E` (columns of the gate projection).
    pub fn num_experts(&self) -> usize {
        self.linear.weight.shape().dims::<2>()[1]
    }

    /// Router logits, after `|·|` when `abs_logits` is set.
    ///
    /// # Shapes
    /// - `x`: `[tokens, d_in]` -> `[tokens, E]`
    pub fn logits(&self, x: Tensor<2>) -> Tensor<2> {
        let logits = self.linear.forward(x);
        if self.abs_logits {
            logits.abs()
        } else {
            logits
        }
    }
}

/// Accumulated routing statistics of one module.
///
/// Every token of every recorded forward counts (padding included: a caller that wants
/// response-only statistics records only such forwards, or masks with the kept logits).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteStats {
    /// Tokens seen.
    pub tokens: u64,
    /// Experts kept per token in the recorded forwards (the last `k` seen).
    pub top_k: usize,
    /// Per expert: tokens whose kept top-k set contains it.
    pub routed: Vec<u64>,
    /// Per expert: tokens whose largest gate is it (top-1 share).
    pub top1: Vec<u64>,
    /// Per expert: sum over tokens of the full softmax probability (before top-k).
    pub gate_sum: Vec<f64>,
    /// Sum over tokens of the entropy (nats) of the full softmax distribution.
    pub entropy_sum: f64,
}

impl RouteStats {
    /// Adds the softmax gates of `n` tokens (`gates.len() == n · E`, row-major) with the top-k
    /// expert indices of each token (`top.len() == n · k`).
    pub fn add(&mut self, gates: &[f32], top: &[usize], e: usize, k: usize) {
        if self.routed.len() != e {
            *self = Self {
                routed: vec![0; e],
                top1: vec![0; e],
                gate_sum: vec![0.0; e],
                ..Self::default()
            };
        }
        self.top_k = k;
        let n = gates.len() / e.max(1);
        self.tokens += n as u64;
        for t in 0..n {
            let row = &gates[t * e..(t + 1) * e];
            let mut best = 0;
            for (i, &p) in row.iter().enumerate() {
                self.gate_sum[i] += f64::from(p);
                if p > 0.0 {
                    self.entropy_sum -= f64::from(p) * f64::from(p).ln();
                }
                if p > row[best] {
                    best = i;
                }
            }
            self.top1[best] += 1;
            for &i in &top[t * k..(t + 1) * k] {
                self.routed[i] += 1;
            }
        }
    }

    /// Per expert: share of the token-to-expert assignments it received (sums to one; uniform
    /// load is `1/E` each).
    pub fn load_share(&self) -> Vec<f64> {
        let total = (self.tokens as f64 * self.top_k as f64).max(1.0);
        self.routed.iter().map(|&c| c as f64 / total).collect()
    }

    /// Per expert: share of tokens whose largest gate it is.
    pub fn top1_share(&self) -> Vec<f64> {
        let n = (self.tokens as f64).max(1.0);
        self.top1.iter().map(|&c| c as f64 / n).collect()
    }

    /// Per expert: mean softmax probability over tokens.
    pub fn mean_gate(&self) -> Vec<f64> {
        let n = (self.tokens as f64).max(1.0);
        self.gate_sum.iter().map(|&s| s / n).collect()
    }

    /// Mean entropy (nats) of the per-token softmax over experts; `ln E` is uniform routing.
    pub fn mean_entropy(&self) -> f64 {
        self.entropy_sum / (self.tokens as f64).max(1.0)
    }

    /// [`mean_entropy`](Self::mean_entropy) divided by `ln E` (1 = uniform, 0 = one expert).
    pub fn normalized_entropy(&self) -> f64 {
        let e = self.routed.len();
        if e < 2 {
            return 0.0;
        }
        self.mean_entropy() / (e as f64).ln()
    }
}

/// What one module's recorder holds.
#[derive(Debug, Default)]
pub struct RouteLog {
    /// Host statistics, accumulated when `collect_stats` is on.
    pub stats: RouteStats,
    /// Whether to accumulate [`RouteStats`] (costs one device-to-host copy of the gates).
    pub collect_stats: bool,
    /// Whether to keep each forward's logits tensor (for auxiliary losses).
    pub keep_logits: bool,
    /// Logits of the recorded forwards, in call order (after `|·|` for Arrow routers).
    /// Shapes: `[tokens, E]` each, tokens in `[batch, seq]` row-major order.
    pub logits: Vec<Tensor<2>>,
}

/// A shared, thread-safe handle on a [`RouteLog`].
#[derive(Debug, Clone, Default)]
pub struct RouteRecorder(Arc<Mutex<RouteLog>>);

impl RouteRecorder {
    /// A recorder that accumulates statistics and/or keeps logits.
    pub fn new(collect_stats: bool, keep_logits: bool) -> Self {
        Self(Arc::new(Mutex::new(RouteLog {
            collect_stats,
            keep_logits,
            ..RouteLog::default()
        })))
    }

    /// Locks the log (a poisoned lock is recovered: the log holds plain data).
    pub fn lock(&self) -> MutexGuard<'_, RouteLog> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The statistics so far.
    pub fn stats(&self) -> RouteStats {
        self.lock().stats.clone()
    }

    /// Takes the kept logits, leaving none (call once per training step, or they accumulate
    /// with their autodiff graphs).
    pub fn take_logits(&self) -> Vec<Tensor<2>> {
        std::mem::take(&mut self.lock().logits)
    }

    /// Clears statistics and kept logits.
    pub fn reset(&self) {
        let mut log = self.lock();
        log.stats = RouteStats::default();
        log.logits.clear();
    }

    /// Whether the host needs the gates of this forward.
    pub(crate) fn wants_stats(&self) -> bool {
        self.lock().collect_stats
    }

    /// Records one forward.
    pub(crate) fn record(&self, logits: &Tensor<2>, gates: Option<(&[f32], &[usize], usize)>) {
        let mut log = self.lock();
        if log.keep_logits {
            log.logits.push(logits.clone());
        }
        if let Some((g, top, k)) = gates {
            let e = logits.dims()[1];
            log.stats.add(g, top, e, k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_hand_made_gates() {
        let mut s = RouteStats::default();
        // Two tokens, three experts, k = 2.
        let gates = [0.5f32, 0.3, 0.2, 0.1, 0.1, 0.8];
        s.add(&gates, &[0, 1, 2, 0], 3, 2);
        assert_eq!(s.tokens, 2);
        assert_eq!(s.routed, vec![2, 1, 1]);
        assert_eq!(s.top1, vec![1, 0, 1]);
        let share = s.load_share();
        assert!((share[0] - 0.5).abs() < 1e-12 && (share[1] - 0.25).abs() < 1e-12);
        let mean = s.mean_gate();
        assert!((mean[2] - 0.5).abs() < 1e-6);
        let h = |p: &[f64]| -p.iter().map(|x| x * x.ln()).sum::<f64>();
        let want = (h(&[0.5, 0.3, 0.2]) + h(&[0.1, 0.1, 0.8])) / 2.0;
        assert!((s.mean_entropy() - want).abs() < 1e-6);
    }
}
