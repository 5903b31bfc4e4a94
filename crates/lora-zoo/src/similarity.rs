//! Similarity between adapters, and the pairwise matrix of a bank.
//!
//! - **Rocket** (`Model_Selection/group_diversity.py` of the Rocket code): the sum over stored tensors
//!   (each module's `lora_A` and `lora_B`) of `|cos(vec W_i, vec W_j)|`, with
//!   `cos(u, v) = u·v / max(‖u‖‖v‖, 1e-8)`. Tensors present in only one adapter, or with different
//!   shapes (different ranks), contribute 0. Not invariant to `A → R A, B → B R⁻¹`.
//! - **Delta** (gauge-invariant): the sum over modules of `|⟨ΔW_i, ΔW_j⟩_F| / (‖ΔW_i‖_F ‖ΔW_j‖_F)`
//!   with `⟨B_i A_i, B_j A_j⟩_F = trace((B_jᵀ B_i)(A_i A_jᵀ))`: only `r × r` products, never
//!   `d_out × d_in`. For a bank the products of all pairs come from one Gram matrix of the stacked
//!   factors per module, modules in parallel.

use std::collections::BTreeMap;

use ndarray::{Array2, ArrayView2, Axis, concatenate, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::adapter::{LoraAdapter, LoraModule};

/// The cosine denominator floor of the reference implementation.
pub const COS_EPS: f64 = 1e-8;

/// Which similarity to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityMode {
    /// Sum of per-tensor |cos| over lora_A and lora_B factors (the Rocket paper's code).
    #[default]
    Rocket,
    /// Sum over modules of |cos| between the ΔW's, from r×r products (gauge invariant).
    Delta,
}

lm_core::named_enum!(SimilarityMode, "similarity mode", { Rocket => "rocket", Delta => "delta" });

/// A named similarity matrix, as written by `openexpert lora similarity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimilarityReport {
    /// The mode used.
    pub mode: SimilarityMode,
    /// Adapter names, in matrix order.
    pub names: Vec<String>,
    /// `matrix[i][j]`: similarity of adapters `i` and `j` (symmetric).
    pub matrix: Vec<Vec<f64>>,
}

fn cos_from(dot: f64, n1: f64, n2: f64) -> f64 {
    dot / (n1 * n2).max(COS_EPS)
}

/// Rocket criterion between two adapters.
pub fn rocket_similarity(x: &LoraAdapter, y: &LoraAdapter) -> f64 {
    let mut total = 0.0;
    for (name, mx) in &x.modules {
        let Some(my) = y.modules.get(name) else {
            continue;
        };
        for (u, v) in [(&mx.a, &my.a), (&mx.b, &my.b)] {
            if u.shape() != v.shape() {
                continue;
            }
            let dot: f64 = u
                .iter()
                .zip(v.iter())
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            let nu: f64 = u.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            let nv: f64 = v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
            total += cos_from(dot, nu, nv).abs();
        }
    }
    total
}

/// `⟨ΔW_x, ΔW_y⟩_F` from r×r products: `s_x s_y · Σ (B_xᵀ B_y) ∘ (A_x A_yᵀ)`.
///
/// # Shapes
/// `x.a: [r_x, d_in]`, `y.a: [r_y, d_in]`, `x.b: [d_out, r_x]`, `y.b: [d_out, r_y]`.
pub fn delta_inner(x: &LoraModule, y: &LoraModule) -> f64 {
    let gb = x.b.t().dot(&y.b); // [r_x, r_y]
    let ga = x.a.dot(&y.a.t()); // [r_x, r_y]
    let s: f64 = gb
        .iter()
        .zip(ga.iter())
        .map(|(p, q)| f64::from(*p) * f64::from(*q))
        .sum();
    s * f64::from(x.scale) * f64::from(y.scale)
}

/// Gauge-invariant similarity between two adapters (sum over common modules of |cos ΔW|).
pub fn delta_similarity(x: &LoraAdapter, y: &LoraAdapter) -> f64 {
    let mut total = 0.0;
    for (name, mx) in &x.modules {
        let Some(my) = y.modules.get(name) else {
            continue;
        };
        if (mx.d_in(), mx.d_out()) != (my.d_in(), my.d_out()) {
            continue;
        }
        let nx = delta_inner(mx, mx).max(0.0).sqrt();
        let ny = delta_inner(my, my).max(0.0).sqrt();
        total += cos_from(delta_inner(mx, my), nx, ny).abs();
    }
    total
}

/// Pairwise similarity matrix of a bank, modules in parallel.
///
/// # Shapes
/// returns `[n, n]` for `n` adapters, symmetric.
pub fn similarity_matrix(adapters: &[&LoraAdapter], mode: SimilarityMode) -> Array2<f64> {
    let n = adapters.len();
    let mut by_module: BTreeMap<&str, Vec<(usize, &LoraModule)>> = BTreeMap::new();
    for (i, a) in adapters.iter().enumerate() {
        for (name, m) in &a.modules {
            by_module.entry(name.as_str()).or_default().push((i, m));
        }
    }
    let groups: Vec<Vec<(usize, &LoraModule)>> =
        by_module.into_values().filter(|g| g.len() > 1).collect();
    let contribution = |g: &Vec<(usize, &LoraModule)>| -> Array2<f64> {
        match mode {
            SimilarityMode::Delta => delta_block(n, g),
            SimilarityMode::Rocket => rocket_block(n, g),
        }
    };
    let mut out = groups
        .par_iter()
        .map(contribution)
        .reduce(|| Array2::zeros((n, n)), |a, b| a + b);
    // Self-similarity counts every module/tensor of the adapter, also those no other adapter has.
    for (i, a) in adapters.iter().enumerate() {
        out[[i, i]] = match mode {
            SimilarityMode::Delta => delta_similarity(a, a),
            SimilarityMode::Rocket => rocket_similarity(a, a),
        };
    }
    out
}

/// Adapters per chunk in [`delta_block`]: Gram blocks are computed for chunk pairs `P <= Q` only.
const CHUNK: usize = 8;

/// Sum of |cos ΔW| contributions of one module to all pairs, from the Gram blocks of the stacked
/// factors, `B_Pᵀ B_Q` and `A_P A_Qᵀ` for chunks of adapters `P <= Q` (half of the full Gram matrices).
fn delta_block(n: usize, g: &[(usize, &LoraModule)]) -> Array2<f64> {
    let mut out = Array2::zeros((n, n));
    // Groups with differing shapes (should not happen in a validated bank) are compared per shape.
    let shape0 = (g[0].1.d_in(), g[0].1.d_out());
    let g: Vec<_> = g
        .iter()
        .filter(|(_, m)| (m.d_in(), m.d_out()) == shape0)
        .collect();
    let chunks: Vec<&[&(usize, &LoraModule)]> = g.chunks(CHUNK).collect();
    let stacked: Vec<(Array2<f32>, Array2<f32>, Vec<usize>)> = chunks
        .iter()
        .map(|c| {
            let b_views: Vec<ArrayView2<'_, f32>> = c.iter().map(|(_, m)| m.b.view()).collect();
            let a_views: Vec<ArrayView2<'_, f32>> = c.iter().map(|(_, m)| m.a.view()).collect();
            let mut offsets = vec![0usize];
            for (_, m) in c.iter() {
                offsets.push(offsets.last().expect("non-empty") + m.rank());
            }
            (
                concatenate(Axis(1), &b_views).expect("same d_out"),
                concatenate(Axis(0), &a_views).expect("same d_in"),
                offsets,
            )
        })
        .collect();
    // inner[(p, q)] for global positions p <= q in `g`
    let mut inner: BTreeMap<(usize, usize), f64> = BTreeMap::new();
    for (ci, (bi, ai, oi)) in stacked.iter().enumerate() {
        for (cj, (bj, aj, oj)) in stacked.iter().enumerate().skip(ci) {
            let gb = bi.t().dot(bj);
            let ga = ai.dot(&aj.t());
            for p in 0..oi.len() - 1 {
                let q0 = if ci == cj { p } else { 0 };
                for q in q0..oj.len() - 1 {
                    let x = gb.slice(s![oi[p]..oi[p + 1], oj[q]..oj[q + 1]]);
                    let y = ga.slice(s![oi[p]..oi[p + 1], oj[q]..oj[q + 1]]);
                    let sum: f64 = x
                        .iter()
                        .zip(y.iter())
                        .map(|(u, v)| f64::from(*u) * f64::from(*v))
                        .sum();
                    let (gp, gq) = (ci * CHUNK + p, cj * CHUNK + q);
                    inner.insert(
                        (gp, gq),
                        sum * f64::from(g[gp].1.scale) * f64::from(g[gq].1.scale),
                    );
                }
            }
        }
    }
    let norms: Vec<f64> = (0..g.len())
        .map(|p| inner[&(p, p)].max(0.0).sqrt())
        .collect();
    for (&(p, q), &v) in &inner {
        if p == q {
            continue;
        }
        let c = cos_from(v, norms[p], norms[q]).abs();
        let (i, j) = (g[p].0, g[q].0);
        out[[i, j]] += c;
        out[[j, i]] += c;
    }
    out
}

/// Sum of per-tensor |cos| contributions (lora_A and lora_B) of one module to all pairs.
fn rocket_block(n: usize, g: &[(usize, &LoraModule)]) -> Array2<f64> {
    let mut out = Array2::zeros((n, n));
    for factor in 0..2 {
        // Group by tensor shape: only same-shape tensors are compared.
        let mut by_shape: BTreeMap<Vec<usize>, Vec<(usize, &Array2<f32>)>> = BTreeMap::new();
        for (i, m) in g {
            let t = if factor == 0 { &m.a } else { &m.b };
            by_shape
                .entry(t.shape().to_vec())
                .or_default()
                .push((*i, t));
        }
        for members in by_shape.values().filter(|v| v.len() > 1) {
            let len = members[0].1.len();
            let mut x = Array2::<f32>::zeros((members.len(), len));
            for (row, (_, t)) in members.iter().enumerate() {
                let flat = t.as_standard_layout();
                x.row_mut(row).assign(&ndarray::ArrayView1::from(
                    flat.as_slice().expect("standard layout"),
                ));
            }
            let gram = x.dot(&x.t());
            let norms: Vec<f64> = (0..members.len())
                .map(|p| f64::from(gram[[p, p]]).max(0.0).sqrt())
                .collect();
            for p in 0..members.len() {
                for q in (p + 1)..members.len() {
                    let c = cos_from(f64::from(gram[[p, q]]), norms[p], norms[q]).abs();
                    let (i, j) = (members[p].0, members[q].0);
                    out[[i, j]] += c;
                    out[[j, i]] += c;
                }
            }
        }
    }
    out
}

/// Builds a [`SimilarityReport`] for named adapters.
pub fn similarity_report(
    names: Vec<String>,
    adapters: &[&LoraAdapter],
    mode: SimilarityMode,
) -> SimilarityReport {
    let m = similarity_matrix(adapters, mode);
    SimilarityReport {
        mode,
        names,
        matrix: m.outer_iter().map(|r| r.to_vec()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AdapterConfig;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn rand_adapter(seed: u64, names: &[&str], r: usize) -> LoraAdapter {
        let mut rng = StdRng::seed_from_u64(seed);
        let modules = names
            .iter()
            .map(|n| {
                let a = Array2::from_shape_fn((r, 20), |_| rng.random::<f32>() - 0.5);
                let b = Array2::from_shape_fn((12, r), |_| rng.random::<f32>() - 0.5);
                (
                    n.to_string(),
                    LoraModule::new(a, b, 2.0 * r as f64, 2.0).unwrap(),
                )
            })
            .collect();
        LoraAdapter {
            config: AdapterConfig::default(),
            modules,
        }
    }

    fn dense_cos(x: &LoraModule, y: &LoraModule) -> f64 {
        let (dx, dy) = (x.delta().mapv(f64::from), y.delta().mapv(f64::from));
        let dot: f64 = (&dx * &dy).sum();
        dot / ((&dx * &dx).sum().sqrt() * (&dy * &dy).sum().sqrt())
    }

    #[test]
    fn delta_similarity_matches_dense_and_is_gauge_invariant() {
        let x = rand_adapter(1, &["m.q", "m.v"], 4);
        let y = rand_adapter(2, &["m.q", "m.v", "m.o"], 3);
        let want: f64 = ["m.q", "m.v"]
            .iter()
            .map(|n| dense_cos(&x.modules[*n], &y.modules[*n]).abs())
            .sum();
        assert!((delta_similarity(&x, &y) - want).abs() < 1e-6);
        // A -> R A, B -> B R^-1 with R = diag(2, 0.5, 4, 1) changes Rocket but not Delta.
        let mut z = x.clone();
        for m in z.modules.values_mut() {
            for (i, f) in [2.0f32, 0.5, 4.0, 1.0].iter().enumerate() {
                m.a.row_mut(i).mapv_inplace(|v| v * f);
                m.b.column_mut(i).mapv_inplace(|v| v / f);
            }
        }
        assert!((delta_similarity(&z, &y) - delta_similarity(&x, &y)).abs() < 1e-5);
        assert!((delta_similarity(&z, &x) - 2.0).abs() < 1e-5);
        assert!((rocket_similarity(&z, &x) - 4.0).abs() > 1e-3);
    }

    #[test]
    fn rocket_counts_same_shape_tensors() {
        let x = rand_adapter(1, &["m.q", "m.v"], 4);
        let y = rand_adapter(2, &["m.q", "m.v"], 3);
        assert_eq!(rocket_similarity(&x, &y), 0.0); // different ranks: nothing comparable
        assert!((rocket_similarity(&x, &x) - 4.0).abs() < 1e-9);
        let mut neg = x.clone();
        neg.modules
            .values_mut()
            .for_each(|m| m.a.mapv_inplace(|v| -v));
        assert!((rocket_similarity(&x, &neg) - 4.0).abs() < 1e-9); // |cos| = 1 for A and B
    }

    #[test]
    fn matrix_equals_pairwise_across_chunks() {
        let ads: Vec<LoraAdapter> = (0..19)
            .map(|i| rand_adapter(i, &["m.q", "m.v"], 1 + (i as usize % 4)))
            .collect();
        let refs: Vec<&LoraAdapter> = ads.iter().collect();
        let m = similarity_matrix(&refs, SimilarityMode::Delta);
        for i in 0..ads.len() {
            for j in 0..ads.len() {
                assert!(
                    (m[[i, j]] - delta_similarity(&ads[i], &ads[j])).abs() < 1e-5,
                    "{i} {j}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn matrix_equals_pairwise(seeds in prop::collection::vec(0u64..10_000, 2..6), ranks in prop::collection::vec(1usize..5, 6)) {
            let names: [&[&str]; 3] = [&["m.q", "m.v"], &["m.q"], &["m.v", "m.o"]];
            let ads: Vec<LoraAdapter> = seeds.iter().enumerate()
                .map(|(i, s)| rand_adapter(*s, names[i % 3], ranks[i])).collect();
            let refs: Vec<&LoraAdapter> = ads.iter().collect();
            for mode in [SimilarityMode::Delta, SimilarityMode::Rocket] {
                let m = similarity_matrix(&refs, mode);
                for i in 0..ads.len() {
                    for j in 0..ads.len() {
                        let want = match mode {
                            SimilarityMode::Delta => delta_similarity(&ads[i], &ads[j]),
                            SimilarityMode::Rocket => rocket_similarity(&ads[i], &ads[j]),
                        };
                        prop_assert!((m[[i, j]] - want).abs() < 1e-5, "{:?} {} {}: {} vs {}", mode, i, j, m[[i, j]], want);
                    }
                }
            }
        }
    }
}
