//! Quantised matrix-vector products (the decode-step kernels of `lm_core::quant`) against the
//! f32 product burn runs, on a 2048 x 2048 weight (4M values) and 1 or 8 input rows (the
//! quantised kernels run each row separately, so 8 rows shows where f32 overtakes them).
//!
//! Run: `cargo bench -p lm-core --bench quant_matmul`.

use burn::tensor::{Tensor, TensorData};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lm_core::quant::{Kernel, QuantMatrix, QuantType};

const ROWS: usize = 2048;
const COLS: usize = 2048;

/// xorshift bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// Random but valid blocks: random bytes with a sane f16 scale in every f16 field.
fn matrix(ty: QuantType) -> QuantMatrix {
    matrix_of(ty, ROWS, COLS)
}

fn matrix_of(ty: QuantType, rows: usize, cols: usize) -> QuantMatrix {
    let bb = ty.block_bytes();
    let mut data = noise(rows * cols / ty.block_elems() * bb, 0x9E37_79B9_7F4A_7C15);
    let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    let fields: &[usize] = match ty {
        QuantType::Q6_K => &[208],
        QuantType::Q4_1 | QuantType::Q4_K => &[0, 2],
        QuantType::Q8_0 | QuantType::Q5_0 => &[0],
    };
    for block in data.chunks_mut(bb) {
        for &f in fields {
            block[f..f + 2].copy_from_slice(&scale);
        }
    }
    QuantMatrix::from_raw(ty, rows, cols, data).expect("whole blocks")
}

fn bench(c: &mut Criterion) {
    for n in [1usize, 8] {
        let x: Vec<f32> = noise(n * COLS, 7)
            .into_iter()
            .map(|b| b as f32 / 128.0 - 1.0)
            .collect();
        let mut group = c.benchmark_group(format!("matvec_2048x2048_rows{n}"));
        group.throughput(Throughput::Elements((ROWS * COLS) as u64));
        group.sample_size(30);
        for ty in QuantType::ALL {
            let m = matrix(ty);
            for kernel in [Kernel::Avx2, Kernel::Scalar] {
                if !kernel.is_available() {
                    continue;
                }
                group.bench_function(format!("{ty}/{kernel:?}"), |b| {
                    b.iter(|| m.matmul_with(std::hint::black_box(&x), kernel))
                });
            }
        }
        // The f32 path a decode step takes without quantised weights: burn's linear on the
        // CPU backend, `[n, 1, 2048] x [2048, 2048]`, result read back to the host.
        let device = lm_core::device::device_from_name("cpu").expect("the CPU backend");
        let w: Vec<f32> = noise(ROWS * COLS, 3)
            .into_iter()
            .map(|b| b as f32 / 1e4)
            .collect();
        let w = Tensor::<2>::from_data(TensorData::new(w, [COLS, ROWS]), &device);
        let xt = Tensor::<3>::from_data(TensorData::new(x.clone(), [n, 1, COLS]), &device);
        group.bench_function("f32/burn", |b| {
            b.iter(|| {
                burn::tensor::module::linear(xt.clone(), w.clone(), None)
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap()
            })
        });
        group.finish();
    }
}

/// SmolLM2's MLP up projection (576 -> 1536) and output head (576 -> 49152), one row: the
/// shapes a decode step of the benchmark model multiplies by, in its GGUF's Q4_1 / Q8_0.
fn bench_smollm2(c: &mut Criterion) {
    let device = lm_core::device::device_from_name("cpu").expect("the CPU backend");
    let mut group = c.benchmark_group("smollm2_shapes_rows1");
    group.sample_size(30);
    for (name, ty, rows) in [
        ("up_1536x576", QuantType::Q4_1, 1536),
        ("head_49152x576", QuantType::Q8_0, 49152),
    ] {
        let cols = 576;
        let m = matrix_of(ty, rows, cols);
        let x: Vec<f32> = noise(cols, 7)
            .into_iter()
            .map(|b| b as f32 / 128.0 - 1.0)
            .collect();
        group.bench_function(format!("{name}/{ty}"), |b| {
            b.iter(|| m.matmul(std::hint::black_box(&x)))
        });
        let w: Vec<f32> = noise(rows * cols, 3)
            .into_iter()
            .map(|b| b as f32 / 1e4)
            .collect();
        let w = Tensor::<2>::from_data(TensorData::new(w, [cols, rows]), &device);
        let xt = Tensor::<3>::from_data(TensorData::new(x, [1, 1, cols]), &device);
        group.bench_function(format!("{name}/f32"), |b| {
            b.iter(|| {
                burn::tensor::module::linear(xt.clone(), w.clone(), None)
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, bench_smollm2);
criterion_main!(benches);
