//! [`QuantMatrix`] (a weight kept in its block format) and its product with a few f32 rows.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::format::{ActBlock, GROUP, QuantType, dot_scalar, quantize_activations, quantize_q8_0};
use crate::error::{LmError, Result};
use crate::io::dequant::dequantize;

/// A `[rows, cols]` weight (PyTorch layout: one output per row) in a block format.
#[derive(Debug, Clone)]
pub struct QuantMatrix {
    ty: QuantType,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
}

impl QuantMatrix {
    /// Wraps raw GGUF tensor bytes (`rows` rows of `cols` elements each).
    ///
    /// # Errors
    /// [`LmError::InvalidInput`] when `cols` is not whole blocks of `ty` or the byte count is
    /// not `rows` rows of them.
    pub fn from_raw(ty: QuantType, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self> {
        let be = ty.block_elems();
        if cols == 0 || !cols.is_multiple_of(be) {
            return Err(LmError::InvalidInput(format!(
                "a {ty} matrix needs rows of whole {be}-element blocks, found {cols} columns"
            )));
        }
        let expected = rows * cols / be * ty.block_bytes();
        if data.len() != expected {
            return Err(LmError::InvalidInput(format!(
                "a [{rows}, {cols}] {ty} matrix has {expected} bytes, found {}",
                data.len()
            )));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// Quantises a row-major `[rows, cols]` f32 matrix to Q8_0.
    ///
    /// # Errors
    /// [`LmError::InvalidInput`] when `cols` is not a multiple of 32 or `w` is not
    /// `rows · cols` values.
    pub fn quantize_q8_0(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        if cols == 0 || !cols.is_multiple_of(GROUP) || w.len() != rows * cols {
            return Err(LmError::InvalidInput(format!(
                "Q8_0 needs a [{rows}, {cols}] matrix with a multiple of 32 columns, found {} values",
                w.len()
            )));
        }
        Ok(Self {
            ty: QuantType::Q8_0,
            rows,
            cols,
            data: quantize_q8_0(w, cols),
        })
    }

    /// Its format.
    pub fn quant_type(&self) -> QuantType {
        self.ty
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of the quantised data.
    pub fn size_bytes(&self) -> usize {
        self.data.len()
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_elems() * self.ty.block_bytes()
    }

    /// Reorders the rows: row `i` of the result is row `from[i]` of `self`.
    ///
    /// # Panics
    /// When `from.len() != rows` or an index is out of range.
    pub fn permute_rows(&self, from: &[usize]) -> Self {
        assert_eq!(from.len(), self.rows, "one source row per row");
        let rb = self.row_bytes();
        let mut data = Vec::with_capacity(self.data.len());
        for &r in from {
            data.extend_from_slice(&self.data[r * rb..(r + 1) * rb]);
        }
        Self { data, ..*self }
    }

    /// The matrix in f32 (`[rows, cols]` row-major), through the loader's dequantiser.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        dequantize(self.ty.ggml(), &self.data, self.rows * self.cols)
    }

    /// `y = x · Wᵀ` for `n` rows of `x` (activations quantised per 32 to i8 first).
    ///
    /// # Shapes
    /// - `x`: `[n, cols]` row-major -> `[n, rows]`
    ///
    /// # Panics
    /// When `x.len()` is not a multiple of `cols`.
    pub fn matmul(&self, x: &[f32]) -> Vec<f32> {
        self.matmul_with(x, Kernel::detect())
    }

    /// [`matmul`](Self::matmul) with a chosen kernel (tests and benches compare them).
    ///
    /// # Panics
    /// As `matmul`, and when `kernel` is [`Kernel::Avx2`] on a CPU without it.
    pub fn matmul_with(&self, x: &[f32], kernel: Kernel) -> Vec<f32> {
        assert!(
            x.len().is_multiple_of(self.cols),
            "{} activations are not rows of {}",
            x.len(),
            self.cols
        );
        assert!(kernel.is_available(), "kernel {kernel:?} is not available");
        let n = x.len() / self.cols;
        let mut act = Vec::new();
        quantize_activations(x, &mut act);
        let groups = self.cols / GROUP;
        let rb = self.row_bytes();
        let ty = self.ty;
        // Output `[rows, n]` while computing, so a weight row is read once for all `n` inputs
        // (it stays in L1 between them); transposed at the end.
        let mut out_t = vec![0f32; self.rows * n];
        let task = |(t, chunk): (usize, &mut [f32])| {
            for (i, o) in chunk.chunks_exact_mut(n).enumerate() {
                let r = t * ROWS_PER_TASK + i;
                let w = &self.data[r * rb..(r + 1) * rb];
                for (k, y) in o.iter_mut().enumerate() {
                    *y = kernel.dot(ty, w, &act[k * groups..(k + 1) * groups]);
                }
            }
        };
        if self.rows * self.cols * n < PARALLEL_MIN_MACS {
            out_t
                .chunks_mut(ROWS_PER_TASK * n)
                .enumerate()
                .for_each(task);
        } else {
            out_t
                .par_chunks_mut(ROWS_PER_TASK * n)
                .enumerate()
                .for_each(task);
        }
        if n == 1 {
            return out_t;
        }
        let mut out = vec![0f32; n * self.rows];
        for r in 0..self.rows {
            for k in 0..n {
                out[k * self.rows + r] = out_t[r * n + k];
            }
        }
        out
    }
}

/// Output rows per rayon task.
const ROWS_PER_TASK: usize = 16;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// Which dot-product implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust (any CPU).
    Scalar,
    /// AVX2 + FMA + F16C (x86-64, checked at run time).
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs (detected once). `OPENEXPERT_QUANT_KERNEL=scalar`
    /// forces the portable one.
    pub fn detect() -> Kernel {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            let forced = std::env::var("OPENEXPERT_QUANT_KERNEL").ok();
            if forced.as_deref() != Some("scalar") && Kernel::Avx2.is_available() {
                Kernel::Avx2
            } else {
                Kernel::Scalar
            }
        })
    }

    /// Whether this CPU can run it.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => super::avx2::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 => false,
        }
    }

    /// One weight row · one activation row.
    #[inline]
    fn dot(self, ty: QuantType, row: &[u8], act: &[ActBlock]) -> f32 {
        match self {
            Kernel::Scalar => dot_scalar(ty, row, act),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `matmul_with` asserted `is_available()` (AVX2, FMA and F16C present).
            Kernel::Avx2 => unsafe {
                use super::avx2;
                match ty {
                    QuantType::Q8_0 => avx2::dot_q8_0(row, act),
                    QuantType::Q4_1 => avx2::dot_q4_1(row, act),
                    QuantType::Q5_0 => avx2::dot_q5_0(row, act),
                    QuantType::Q4_K => avx2::dot_q4_k(row, act),
                    QuantType::Q6_K => avx2::dot_q6_k(row, act),
                }
            },
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 => dot_scalar(ty, row, act),
        }
    }
}
