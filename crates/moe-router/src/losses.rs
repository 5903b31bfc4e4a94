//! Auxiliary router losses as burn tensor functions of the router logits.
//!
//! Both take one router's logits for one forward, `[tokens, E]` (tokens in `[batch, seq]`
//! row-major order, as a [`RouteRecorder`](lm_core::model::adapted_linear::RouteRecorder)
//! keeps them), and an optional per-token weight `mask: [tokens]` (0 leaves a token out). The
//! trainer passes 1 for every real token and 0 for padding
//! ([`Batch::token_weights`](lm_core::train::data::Batch::token_weights)): padding is not
//! routed traffic. A mask of response tokens only (the Relax RFC's choice) is the caller's to
//! build.
//! [`aux_losses`] averages each loss over routers (per module and forward, then the mean:
//! transformers#28255) and scales it by its coefficient; the result is meant to be added to
//! the task loss and logged separately from it (open_lm#255).

use lm_core::burn::tensor::activation::softmax;
use lm_core::burn::tensor::{IndexingUpdateOp, Tensor};

/// Switch-style load-balancing loss of one router: `E · Σ_e f_e · P_e`.
///
/// - `P_e` = mean over tokens of the full softmax probability of expert `e` (differentiable);
/// - `f_e` = share of the token-to-expert assignments of the top-k that go to `e`: the number of
///   tokens whose top-k contains `e`, divided by `k ·` tokens (so `Σ_e f_e = 1`, OLMoE#45; with
///   `k = 1` this is Switch Transformer's fraction of tokens dispatched to `e`). No gradient.
///
/// Uniform routing gives 1; all tokens on one expert with certainty gives `E`.
///
/// # Shapes
/// - `logits`: `[tokens, E]`, `mask`: `[tokens]` -> `[1]`
pub fn switch_balance_loss(logits: Tensor<2>, top_k: usize, mask: Option<Tensor<1>>) -> Tensor<1> {
    let [n, e] = logits.dims();
    let k = top_k.clamp(1, e);
    let device = logits.device();
    let probs = softmax(logits.clone(), 1);
    let (_, idx) = logits.detach().topk_with_indices(k, 1);
    let assigned = Tensor::<2>::zeros([n, e], &device).scatter(
        1,
        idx,
        Tensor::<2>::ones([n, k], &device),
        IndexingUpdateOp::Add,
    );
    let (weights, total) = token_weights(mask, n, &device);
    let p = (probs * weights.clone()).sum_dim(0) / total.clone().unsqueeze_dim::<2>(1); // [1, E]
    let f = (assigned * weights).sum_dim(0) / (total.unsqueeze_dim::<2>(1) * k as f32); // [1, E]
    (f * p).sum() * e as f32
}

/// Router z-loss of one router (ST-MoE): `mean_t (log Σ_e exp(logit_te))²`, masked mean when a
/// mask is given. Penalises large logits, which keeps the f32 softmax well conditioned.
///
/// # Shapes
/// - `logits`: `[tokens, E]`, `mask`: `[tokens]` -> `[1]`
pub fn router_z_loss(logits: Tensor<2>, mask: Option<Tensor<1>>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let device = logits.device();
    let lse = logsumexp(logits); // [tokens]
    let (weights, total) = token_weights(mask, n, &device);
    (lse.clone() * lse * weights.reshape([n])).sum() / total
}

/// `log Σ_e exp(x_te)` per token, computed stably (max subtracted).
///
/// # Shapes
/// - `logits`: `[tokens, E]` -> `[tokens]`
pub fn logsumexp(logits: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let max = logits.clone().max_dim(1).detach(); // [tokens, 1]
    ((logits - max.clone()).exp().sum_dim(1).log() + max).reshape([n])
}

/// Per-token weights `[tokens, 1]` and their sum `[1]` (all ones without a mask).
fn token_weights(
    mask: Option<Tensor<1>>,
    n: usize,
    device: &lm_core::burn::tensor::Device,
) -> (Tensor<2>, Tensor<1>) {
    let w = mask.unwrap_or_else(|| Tensor::<1>::ones([n], device));
    debug_assert_eq!(w.dims()[0], n, "one mask weight per token");
    let total = w.clone().sum().clamp_min(1e-12);
    (w.reshape([n, 1]), total)
}

/// The auxiliary losses of one training forward.
#[derive(Debug, Clone)]
pub struct AuxLosses {
    /// Mean Switch balance loss over routers (unscaled), if its coefficient is non-zero.
    pub balance: Option<Tensor<1>>,
    /// Mean router z-loss over routers (unscaled), if its coefficient is non-zero.
    pub z: Option<Tensor<1>>,
    /// `balance_coef · balance + z_coef · z`: add this to the task loss.
    pub total: Tensor<1>,
}

/// Averages the balance and z-losses over every router call in `logits` (pairs of module name
/// and the logits of its forwards, as [`crate::RouteRecorders::take_logits`] returns them) and
/// weights them. `None` when both coefficients are zero or there are no logits. A `mask` is
/// applied to every call whose token count matches it.
///
/// # Shapes
/// - each logits tensor: `[tokens, E]`, `mask`: `[tokens]` -> losses `[1]`
pub fn aux_losses(
    logits: &[(String, Vec<Tensor<2>>)],
    top_k: usize,
    balance_coef: f32,
    z_coef: f32,
    mask: Option<&Tensor<1>>,
) -> Option<AuxLosses> {
    let calls: Vec<&Tensor<2>> = logits.iter().flat_map(|(_, v)| v).collect();
    if calls.is_empty() || (balance_coef == 0.0 && z_coef == 0.0) {
        return None;
    }
    let mask_for = |t: &Tensor<2>| mask.filter(|m| m.dims()[0] == t.dims()[0]).cloned();
    let mean = |f: &dyn Fn(&Tensor<2>) -> Tensor<1>| {
        let sum = calls
            .iter()
            .map(|t| f(t))
            .reduce(|a, b| a + b)
            .expect("calls is not empty");
        sum / calls.len() as f32
    };
    let balance = (balance_coef != 0.0)
        .then(|| mean(&|t| switch_balance_loss(t.clone(), top_k, mask_for(t))));
    let z = (z_coef != 0.0).then(|| mean(&|t| router_z_loss(t.clone(), mask_for(t))));
    let total = match (&balance, &z) {
        (Some(b), Some(z)) => b.clone() * balance_coef + z.clone() * z_coef,
        (Some(b), None) => b.clone() * balance_coef,
        (None, Some(z)) => z.clone() * z_coef,
        (None, None) => unreachable!("one coefficient is non-zero"),
    };
    Some(AuxLosses { balance, z, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lm_core::burn::tensor::TensorData;

    fn device() -> lm_core::burn::tensor::Device {
        lm_core::device::device_from_name("cpu").unwrap()
    }

    fn scalar(t: Tensor<1>) -> f64 {
        f64::from(t.into_scalar::<f32>())
    }

    const LOGITS: [f32; 9] = [1.0, 0.0, -1.0, 0.5, 2.0, 0.0, 0.0, 0.0, 3.0];

    fn softmax_row(r: &[f64]) -> Vec<f64> {
        let m = r.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = r.iter().map(|x| (x - m).exp()).sum();
        r.iter().map(|x| (x - m).exp() / z).collect()
    }

    #[test]
    fn balance_loss_equals_the_hand_computed_value() {
        let dev = device();
        let logits = Tensor::<2>::from_data(TensorData::new(LOGITS.to_vec(), [3, 3]), &dev);
        let rows: Vec<Vec<f64>> = LOGITS
            .chunks(3)
            .map(|r| softmax_row(&r.iter().map(|&x| f64::from(x)).collect::<Vec<_>>()))
            .collect();
        let p: Vec<f64> = (0..3)
            .map(|e| rows.iter().map(|r| r[e]).sum::<f64>() / 3.0)
            .collect();
        // top-1: tokens pick experts 0, 1, 2 -> f = (1/3, 1/3, 1/3).
        let want1 = 3.0 * p.iter().map(|pe| pe / 3.0).sum::<f64>();
        let got1 = scalar(switch_balance_loss(logits.clone(), 1, None));
        assert!((got1 - want1).abs() < 1e-6, "{got1} vs {want1}");
        // top-2: {0,1}, {1,0}, {2,0 or 1: logits 0,0 tie} -> counts depend on the tie; token 3's
        // second choice is expert 0 or 1, both give f = (2/6, 2/6, 1/6) up to swapping 0 and 1.
        let got2 = scalar(switch_balance_loss(logits.clone(), 2, None));
        let a = 3.0 * (p[0] * 3.0 / 6.0 + p[1] * 2.0 / 6.0 + p[2] / 6.0);
        let b = 3.0 * (p[0] * 2.0 / 6.0 + p[1] * 3.0 / 6.0 + p[2] / 6.0);
        assert!(
            (got2 - a).abs() < 1e-6 || (got2 - b).abs() < 1e-6,
            "{got2} vs {a} or {b}"
        );
        // Masking the last token: f over tokens 0 and 1 (experts 0, 1), P over them too.
        let mask = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [3]), &dev);
        let pm: Vec<f64> = (0..3).map(|e| (rows[0][e] + rows[1][e]) / 2.0).collect();
        let want = 3.0 * (pm[0] / 2.0 + pm[1] / 2.0);
        let got = scalar(switch_balance_loss(logits, 1, Some(mask)));
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn uniform_routing_has_balance_one() {
        let dev = device();
        let logits = Tensor::<2>::zeros([5, 4], &dev);
        assert!((scalar(switch_balance_loss(logits, 4, None)) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn z_loss_equals_the_hand_computed_value() {
        let dev = device();
        let logits = Tensor::<2>::from_data(TensorData::new(LOGITS.to_vec(), [3, 3]), &dev);
        let want: f64 = LOGITS
            .chunks(3)
            .map(|r| {
                let lse = r.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln();
                lse * lse
            })
            .sum::<f64>()
            / 3.0;
        let got = scalar(router_z_loss(logits.clone(), None));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let aux = aux_losses(
            &[("m".into(), vec![logits.clone(), logits])],
            1,
            0.5,
            0.1,
            None,
        )
        .unwrap();
        let total = scalar(aux.total);
        let bal = scalar(aux.balance.unwrap());
        assert!((total - (0.5 * bal + 0.1 * want)).abs() < 1e-5);
        assert!(aux_losses(&[], 1, 0.5, 0.0, None).is_none());
    }
}
