//! LoraHub (Huang et al. 2023, `sail-sg/lorahub:lorahub/algorithm.py`) as a baseline: a
//! gradient-free search of one weight per expert, used as a static mix
//! (`ExpertMix::Static(w)`), minimising the K-shot loss plus `λ · mean_e |w_e|`.
//!
//! Defaults follow LoraHub's code: weights start at 0 and are bounded to `[-1.5, 1.5]` (L274-281),
//! `λ = 0.05` with the mean absolute weight as "L1" (`default_l1_regularization`), a budget of 40
//! evaluations (`max_inference_step` in the README example), seed 42. LoraHub's optimiser is
//! nevergrad's `NGOpt`; here it is CMA-ES (the `cmaes` crate, seeded), with an initial step of 0.5
//! (3σ covers the bounds). Points outside the bounds are clipped before evaluation.
//!
//! Difference to LoraHub, on purpose: LoraHub mixes the factors (`A = Σ w_e A_e`, `B = Σ w_e B_e`),
//! which adds cross terms `w_i w_j B_i A_j`; a static mix here is `Σ_e w_e s_e B_e A_e`, the
//! exact weighted sum of the experts' updates, and works across ranks and target modules.

use cmaes::{CMAESOptions, DVector};

use crate::error::{MoeError, Result};

/// Default evaluation budget (40, LoraHub's `max_inference_step`).
pub fn default_budget() -> usize {
    40
}
/// Default L1 coefficient λ (0.05, LoraHub).
pub fn default_l1() -> f64 {
    0.05
}
/// Default bound on each weight (1.5, LoraHub).
pub fn default_bound() -> f32 {
    1.5
}
/// Default CMA-ES initial step size (0.5).
pub fn default_step() -> f64 {
    0.5
}
/// Default seed (42, LoraHub's `seed`).
pub fn default_seed() -> u64 {
    42
}

/// Options of [`lorahub_search`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraHubOptions {
    /// Objective evaluations (at most; CMA-ES evaluates whole generations).
    #[serde(default = "default_budget")]
    pub budget: usize,
    /// λ of the `λ · mean|w|` penalty.
    #[serde(default = "default_l1")]
    pub l1: f64,
    /// Weights are clipped to `[-bound, bound]`.
    #[serde(default = "default_bound")]
    pub bound: f32,
    /// Initial CMA-ES step size σ₀.
    #[serde(default = "default_step")]
    pub step: f64,
    /// Seed of the optimiser.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

impl Default for LoraHubOptions {
    fn default() -> Self {
        Self {
            budget: default_budget(),
            l1: default_l1(),
            bound: default_bound(),
            step: default_step(),
            seed: default_seed(),
        }
    }
}

/// What [`lorahub_search`] found.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraHubResult {
    /// The best weights (clipped), one per expert: run them as `ExpertMix::Static(weights)`.
    pub weights: Vec<f32>,
    /// The task loss at `weights` (what the objective returned).
    pub loss: f64,
    /// `loss + λ · mean|weights|`, the minimised value.
    pub penalized: f64,
    /// Objective evaluations made.
    pub evaluations: usize,
    /// Task loss of the starting point (all weights 0, the base model).
    pub initial_loss: f64,
}

/// Searches `n` expert weights minimising `loss(w) + λ · mean|w|`.
///
/// `loss` is the K-shot loss of the model run with `ExpertMix::Static(w)` (e.g. mean token
/// cross-entropy of the K answers); it is called `options.budget` times at most, plus once at the
/// starting point. Deterministic for a given seed and a deterministic `loss`.
pub fn lorahub_search(
    n: usize,
    loss: impl Fn(&[f32]) -> f64,
    options: &LoraHubOptions,
) -> Result<LoraHubResult> {
    if n == 0 || options.budget == 0 {
        return Err(MoeError::EmptySearch);
    }
    let bound = options.bound.abs();
    let clip = |x: &DVector<f64>| -> Vec<f32> {
        x.iter().map(|&v| (v as f32).clamp(-bound, bound)).collect()
    };
    let penalty =
        |w: &[f32]| options.l1 * w.iter().map(|v| f64::from(v.abs())).sum::<f64>() / n as f64;
    let initial = vec![0.0f32; n];
    let initial_loss = loss(&initial);
    let mut best = (
        initial.clone(),
        initial_loss,
        initial_loss + penalty(&initial),
    );
    let mut evaluations = 0usize;
    {
        let objective = |x: &DVector<f64>| {
            // The rest of the last generation past the budget is not evaluated.
            if evaluations >= options.budget {
                return f64::MAX;
            }
            let w = clip(x);
            let l = loss(&w);
            let p = l + penalty(&w);
            evaluations += 1;
            if p < best.2 {
                best = (w, l, p);
            }
            if p.is_finite() { p } else { f64::MAX }
        };
        let mut state = CMAESOptions::new(vec![0.0; n], options.step)
            .max_function_evals(options.budget)
            .seed(options.seed)
            .build(objective)
            .map_err(|e| MoeError::Optimizer(format!("{e:?}")))?;
        let _ = state.run();
    }
    tracing::debug!(evaluations, loss = best.1, weights = ?best.0, "LoraHub search done");
    Ok(LoraHubResult {
        weights: best.0,
        loss: best.1,
        penalized: best.2,
        evaluations,
        initial_loss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quadratic(target: &'static [f32]) -> impl Fn(&[f32]) -> f64 {
        move |w: &[f32]| {
            w.iter()
                .zip(target)
                .map(|(a, b)| f64::from((a - b) * (a - b)))
                .sum::<f64>()
                + 1.0
        }
    }

    #[test]
    fn finds_the_minimum_of_a_quadratic() {
        const T: [f32; 4] = [0.8, -0.4, 0.2, 1.2];
        let opts = LoraHubOptions {
            budget: 600,
            l1: 0.0,
            ..LoraHubOptions::default()
        };
        let r = lorahub_search(4, quadratic(&T), &opts).unwrap();
        for (w, t) in r.weights.iter().zip(T) {
            assert!((w - t).abs() < 0.05, "{:?}", r.weights);
        }
        assert!(r.evaluations <= 600);
        assert!(
            (r.initial_loss - (1.0 + T.iter().map(|t| f64::from(t * t)).sum::<f64>())).abs() < 1e-6
        );
    }

    #[test]
    fn default_budget_improves_deterministically_and_respects_bounds() {
        const T: [f32; 3] = [3.0, -0.5, 0.5]; // the first weight is past the bound
        let opts = LoraHubOptions::default();
        let r = lorahub_search(3, quadratic(&T), &opts).unwrap();
        assert!(r.loss < r.initial_loss);
        assert!(r.evaluations <= 40, "{}", r.evaluations);
        assert!(r.weights.iter().all(|w| w.abs() <= 1.5));
        let again = lorahub_search(3, quadratic(&T), &opts).unwrap();
        assert_eq!(r, again);
        // The L1 penalty pulls weights towards zero.
        let strong = LoraHubOptions {
            l1: 100.0,
            budget: 200,
            ..opts
        };
        let z = lorahub_search(3, quadratic(&T), &strong).unwrap();
        assert!(z.weights.iter().all(|w| w.abs() < 0.2), "{:?}", z.weights);
        assert!(matches!(
            lorahub_search(0, quadratic(&T), &opts),
            Err(MoeError::EmptySearch)
        ));
    }
}
