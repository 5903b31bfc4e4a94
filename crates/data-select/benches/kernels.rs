//! Criterion benches for the hot paths: the dot-product tiles, the dense labelled pass, k-center end to end, and
//! greedy dedup.

use criterion::{Criterion, criterion_group, criterion_main};
use data_select::Metric;
use data_select::dedup::{DedupMode, dedup};
use data_select::distance::{Prepared, dot, dot_tile};
use data_select::kcenter::{KCenterOptions, Strategy, kcenter_greedy};
use ndarray::Array2;

fn matrix(n: usize, d: usize, seed: u64) -> Array2<f32> {
    let mut s = seed;
    Array2::from_shape_fn((n, d), |_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    })
}

fn kernels(c: &mut Criterion) {
    let m = matrix(8, 576, 1);
    let r = |i: usize| m.row(i).to_slice().unwrap();
    c.bench_function("dot 576", |b| {
        b.iter(|| dot(std::hint::black_box(r(0)), r(1)))
    });
    c.bench_function("dot_tile 4x4 576", |b| {
        b.iter(|| {
            dot_tile(
                std::hint::black_box([r(0), r(1), r(2), r(3)]),
                [r(4), r(5), r(6), r(7)],
            )
        })
    });
    let big = matrix(4000, 576, 2);
    let p = Prepared::new(big.view(), Metric::Euclidean, "bench").unwrap();
    let rows: Vec<usize> = (100..4000).collect();
    let centers: Vec<usize> = (0..100).collect();
    c.bench_function("min_block 3900 rows x 100 centers x 576", |b| {
        b.iter(|| {
            let mut best = vec![f32::INFINITY; rows.len()];
            p.min_block(&rows, &centers, &mut best);
            best
        })
    });
}

fn selection(c: &mut Criterion) {
    let mut g = c.benchmark_group("selection");
    g.sample_size(10);
    let m = matrix(5000, 576, 3);
    let labeled: Vec<usize> = (0..50).map(|i| i * 97).collect();
    for strategy in [Strategy::Lazy, Strategy::Eager] {
        g.bench_function(format!("kcenter 5000x576 k=250 {strategy:?}"), |b| {
            b.iter(|| {
                kcenter_greedy(
                    m.view(),
                    &labeled,
                    &KCenterOptions {
                        k: 250,
                        metric: Metric::Euclidean,
                        strategy,
                    },
                )
                .unwrap()
            })
        });
    }
    let order: Vec<usize> = (0..2000).collect();
    g.bench_function("dedup greedy 2000x576", |b| {
        b.iter(|| dedup(m.view(), &order, 0.9, DedupMode::Greedy).unwrap())
    });
    g.finish();
}

criterion_group!(benches, kernels, selection);
criterion_main!(benches);
