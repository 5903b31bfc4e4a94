//! AdamW, the warm-up + cosine learning-rate schedule and global gradient-norm clipping, on the
//! host, with PyTorch's exact update rules (`torch.optim.AdamW`, `clip_grad_norm_`, and
//! transformers' `get_cosine_schedule_with_warmup`).
//!
//! The trainable LoRA parameters are a few hundred thousand values, so a host-side update costs
//! microseconds, and keeping the state in plain vectors makes checkpoints exact and portable.

use serde::{Deserialize, Serialize};

/// AdamW state: first and second moments and the number of steps taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// First moment estimate `m`.
    pub m: Vec<f32>,
    /// Second moment estimate `v`.
    pub v: Vec<f32>,
    /// Optimiser steps taken so far.
    pub steps: u64,
}

/// The constants of an AdamW update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    /// Learning rate of this step.
    pub lr: f64,
    /// `beta1`.
    pub beta1: f64,
    /// `beta2`.
    pub beta2: f64,
    /// `epsilon`.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamW {
    /// Zero state for `n` parameters.
    pub fn new(n: usize) -> Self {
        Self {
            m: vec![0.0; n],
            v: vec![0.0; n],
            steps: 0,
        }
    }

    /// One update of `params` with `grads` (PyTorch's AdamW, bias-corrected, decay first).
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], h: AdamWParams) {
        assert_eq!(params.len(), grads.len(), "one gradient per parameter");
        assert_eq!(
            params.len(),
            self.m.len(),
            "optimiser sized for these parameters"
        );
        self.steps += 1;
        let t = self.steps as i32;
        let bc1 = 1.0 - h.beta1.powi(t);
        let bc2 = 1.0 - h.beta2.powi(t);
        let step_size = (h.lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - h.lr * h.weight_decay) as f32;
        let (b1, b2, eps) = (h.beta1 as f32, h.beta2 as f32, h.eps as f32);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *p *= decay;
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let denom = v.sqrt() / bc2_sqrt + eps;
            *p -= step_size * *m / denom;
        }
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (PyTorch's
/// `clip_grad_norm_`: coefficient `max_norm / (norm + 1e-6)`, never above 1). Returns the norm
/// before clipping.
pub fn clip_global_norm(grads: &mut [f32], max_norm: Option<f64>) -> f64 {
    let norm = grads
        .iter()
        .map(|g| f64::from(*g) * f64::from(*g))
        .sum::<f64>()
        .sqrt();
    if let Some(max) = max_norm {
        let coef = max / (norm + 1e-6);
        if coef < 1.0 {
            let c = coef as f32;
            grads.iter_mut().for_each(|g| *g *= c);
        }
    }
    norm
}

/// Learning-rate multiplier for optimiser step `step` (0-based) of `total`: linear warm-up
/// from 0 over `warmup` steps, then a half cosine down to `min_ratio` (transformers'
/// `get_cosine_schedule_with_warmup` when `min_ratio = 0`).
pub fn lr_factor(step: usize, total: usize, warmup: usize, min_ratio: f64) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
    min_ratio + (1.0 - min_ratio) * cosine
}

/// Warm-up steps for a ratio of the total (rounded up, as transformers does).
pub fn warmup_steps(total: usize, ratio: f64) -> usize {
    (total as f64 * ratio).ceil() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn adamw_matches_a_hand_computed_step() {
        // One step from zero state: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g² → p -= lr·g/(|g|+eps).
        let mut opt = AdamW::new(2);
        let mut p = vec![1.0f32, -2.0];
        let h = AdamWParams {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.5,
        };
        opt.step(&mut p, &[0.5, -4.0], h);
        assert!((p[0] - (1.0 * 0.95 - 0.1)).abs() < 1e-6, "{}", p[0]);
        assert!((p[1] - (-2.0 * 0.95 + 0.1)).abs() < 1e-6, "{}", p[1]);
        assert_eq!(opt.steps, 1);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        assert_eq!(lr_factor(0, 100, 10, 0.0), 0.0);
        assert!((lr_factor(5, 100, 10, 0.0) - 0.5).abs() < 1e-12);
        assert!((lr_factor(10, 100, 10, 0.0) - 1.0).abs() < 1e-12);
        assert!((lr_factor(55, 100, 10, 0.0) - 0.5).abs() < 1e-12);
        assert!(lr_factor(100, 100, 10, 0.1) >= 0.1 - 1e-12);
        assert_eq!(warmup_steps(95, 0.1), 10);
    }

    proptest! {
        #[test]
        fn clipping_bounds_the_norm_and_keeps_the_direction(
            g in prop::collection::vec(-100f32..100.0, 1..64), max in 0.01f64..10.0
        ) {
            let mut c = g.clone();
            let before = clip_global_norm(&mut c, Some(max));
            let after = c.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            prop_assert!(after <= max * (1.0 + 1e-5) || after <= before + 1e-9);
            if before <= max {
                prop_assert_eq!(&c, &g);
            }
            for (a, b) in c.iter().zip(&g) {
                prop_assert!(a * b >= 0.0);
            }
        }

        #[test]
        fn schedule_is_within_bounds(step in 0usize..500, total in 1usize..500, w in 0usize..50) {
            let f = lr_factor(step, total, w, 0.0);
            prop_assert!((0.0..=1.0).contains(&f));
        }
    }
}
