//! Wall-clock and process CPU time of the bank similarity matrix (64 adapters, rank 8, SmolLM2 q/v on
//! 30 layers), for machines shared with other jobs where criterion's wall times mostly measure the
//! contention. Run: `cargo run --release -p lora-zoo --example similarity_timing`.

use std::collections::BTreeMap;
use std::time::Instant;

use lora_zoo::similarity::{SimilarityMode, similarity_matrix};
use lora_zoo::{AdapterConfig, LoraAdapter, LoraModule};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// utime + stime of this process in seconds (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let mut rng = StdRng::seed_from_u64(1);
    let ads: Vec<LoraAdapter> = (0..64)
        .map(|_| {
            let mut modules = BTreeMap::new();
            for l in 0..30 {
                for (m, d_out) in [("q_proj", 576), ("v_proj", 192)] {
                    let a = Array2::from_shape_fn((8, 576), |_| rng.random::<f32>() - 0.5);
                    let b = Array2::from_shape_fn((d_out, 8), |_| rng.random::<f32>() - 0.5);
                    modules.insert(
                        format!("model.layers.{l}.self_attn.{m}"),
                        LoraModule::new(a, b, 16.0, 2.0).unwrap(),
                    );
                }
            }
            LoraAdapter {
                config: AdapterConfig::default(),
                modules,
            }
        })
        .collect();
    let refs: Vec<&LoraAdapter> = ads.iter().collect();
    for mode in [SimilarityMode::Delta, SimilarityMode::Rocket] {
        let runs = 5;
        let (t0, c0) = (Instant::now(), cpu_seconds());
        for _ in 0..runs {
            std::hint::black_box(similarity_matrix(&refs, mode));
        }
        let wall = t0.elapsed().as_secs_f64() / runs as f64;
        let cpu = (cpu_seconds() - c0) / runs as f64;
        println!(
            "{mode:?}: wall {wall:.3} s, cpu {cpu:.3} s per matrix ({} threads)",
            rayon::current_num_threads()
        );
    }
}
