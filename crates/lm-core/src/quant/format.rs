//! Weight block formats kept from a GGUF file, the activation blocks they are multiplied with,
//! and the portable (scalar) dot products of one weight row with one activation row.
//!
//! Every weight format is read in 32-element groups matched to one [`ActBlock`] of the
//! activations (llama.cpp quantises activations per 256 for the k-quants; a scale per 32 is
//! finer and lets every format share one activation layout):
//!
//! | format | block | group `g` of 32 weights |
//! |---|---|---|
//! | Q8_0 | 32 | `d · q`, `q` ∈ i8 |
//! | Q4_1 | 32 | `d · q + m`, `q` ∈ 0..16 |
//! | Q5_0 | 32 | `d · (q − 16)`, `q` ∈ 0..32 |
//! | Q4_K | 256 | `d · sc_g · q − dmin · m_g`, `q` ∈ 0..16, 6-bit `sc`, `m` |
//! | Q6_K | 256 | `d · sc_h · (q − 32)` per 16, `q` ∈ 0..64, i8 `sc` |
//!
//! With activations `x ≈ d_a · qa` (`qa` ∈ −127..=127), a group's contribution is an integer dot
//! `Σ q · qa` times float scales, plus the offset terms through the activation block's sums.

use crate::io::dequant::GgmlType;
pub(crate) use crate::io::dequant::{f16, scale_min_k4};

/// Elements per activation block (and per weight group).
pub const GROUP: usize = 32;

/// Elements per k-quant super-block.
pub const QK_K: usize = 256;

/// A weight format with a quantised matrix-vector kernel.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// 8-bit, 32-element blocks, one f16 scale.
    Q8_0,
    /// 4-bit, 32-element blocks, f16 scale and minimum.
    Q4_1,
    /// 5-bit, 32-element blocks, one f16 scale.
    Q5_0,
    /// 4-bit k-quant, 256-element super-blocks.
    Q4_K,
    /// 6-bit k-quant, 256-element super-blocks.
    Q6_K,
}

impl QuantType {
    /// Every format with a kernel.
    pub const ALL: [QuantType; 5] = [
        QuantType::Q8_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ];

    /// The ggml type of the same layout.
    pub fn ggml(self) -> GgmlType {
        match self {
            QuantType::Q8_0 => GgmlType::Q8_0,
            QuantType::Q4_1 => GgmlType::Q4_1,
            QuantType::Q5_0 => GgmlType::Q5_0,
            QuantType::Q4_K => GgmlType::Q4_K,
            QuantType::Q6_K => GgmlType::Q6_K,
        }
    }

    /// The format of a ggml type, when a kernel exists for it.
    pub fn from_ggml(ty: GgmlType) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|q| q.ggml() == ty)
    }

    /// Elements per block.
    pub fn block_elems(self) -> usize {
        self.ggml().block_size()
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.ggml().type_size()
    }

    /// ggml's name (`Q4_K`).
    pub fn name(self) -> &'static str {
        self.ggml().name()
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// 32 activations quantised to i8 with one f32 scale (llama.cpp's `block_q8_1`, with the sums
/// kept as integers per half for Q6_K's 16-element sub-blocks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActBlock {
    /// Quantised values, `x ≈ d · qs`.
    pub qs: [i8; GROUP],
    /// Scale.
    pub d: f32,
    /// `d · Σ qs`.
    pub sum: f32,
    /// `Σ qs` over elements 0..16 and 16..32.
    pub half_sums: [i32; 2],
}

/// Quantises activations to [`ActBlock`]s: `d = max|x| / 127`, `qs = round(x / d)`
/// (llama.cpp's `quantize_row_q8_1`).
///
/// # Shapes
/// - `x`: `[n · 32]` -> `n` blocks
///
/// # Panics
/// When `x.len()` is not a multiple of 32 (callers check the matrix width first).
pub fn quantize_activations(x: &[f32], out: &mut Vec<ActBlock>) {
    assert!(
        x.len().is_multiple_of(GROUP),
        "activations of width {} are not whole 32-element blocks",
        x.len()
    );
    out.clear();
    out.extend(x.chunks_exact(GROUP).map(|c| {
        let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; GROUP];
        for (q, &v) in qs.iter_mut().zip(c) {
            *q = (v * id).round() as i8;
        }
        let lo: i32 = qs[..16].iter().map(|&q| q as i32).sum();
        let hi: i32 = qs[16..].iter().map(|&q| q as i32).sum();
        ActBlock {
            qs,
            d,
            sum: d * (lo + hi) as f32,
            half_sums: [lo, hi],
        }
    }));
}

/// Quantises a row-major `[rows, cols]` f32 matrix to Q8_0 blocks (ggml's
/// `quantize_row_q8_0_ref`: `d = max|w| / 127` stored as f16, `q = round(w / d)`).
///
/// # Panics
/// When `cols` is not a multiple of 32.
pub fn quantize_q8_0(w: &[f32], cols: usize) -> Vec<u8> {
    assert!(
        cols.is_multiple_of(GROUP),
        "Q8_0 needs rows of whole 32-element blocks, found {cols}"
    );
    let mut out = Vec::with_capacity(w.len() / GROUP * 34);
    for c in w.chunks_exact(GROUP) {
        let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        out.extend(c.iter().map(|&v| ((v * id).round() as i8) as u8));
    }
    out
}

/// Dot product of one weight row with one activation row, portable Rust.
///
/// `row` holds whole blocks of `ty`; `act` one [`ActBlock`] per 32 weights.
pub fn dot_scalar(ty: QuantType, row: &[u8], act: &[ActBlock]) -> f32 {
    match ty {
        QuantType::Q8_0 => dot_q8_0(row, act),
        QuantType::Q4_1 => dot_q4_1(row, act),
        QuantType::Q5_0 => dot_q5_0(row, act),
        QuantType::Q4_K => dot_q4_k(row, act),
        QuantType::Q6_K => dot_q6_k(row, act),
    }
}

fn dot_q8_0(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in row.chunks_exact(34).zip(act) {
        let s: i32 = b[2..34]
            .iter()
            .zip(&a.qs)
            .map(|(&w, &x)| (w as i8 as i32) * x as i32)
            .sum();
        acc += f16(b[0], b[1]) * a.d * s as f32;
    }
    acc
}

fn dot_q4_1(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in row.chunks_exact(20).zip(act) {
        let mut s = 0i32;
        for j in 0..16 {
            let x = b[4 + j];
            s += (x & 0x0F) as i32 * a.qs[j] as i32 + (x >> 4) as i32 * a.qs[j + 16] as i32;
        }
        acc += f16(b[0], b[1]) * a.d * s as f32 + f16(b[2], b[3]) * a.sum;
    }
    acc
}

fn dot_q5_0(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in row.chunks_exact(22).zip(act) {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let mut s = 0i32;
        for j in 0..16 {
            let x = b[6 + j];
            let lo = ((x & 0x0F) as u32 | (((qh >> j) & 1) << 4)) as i32 - 16;
            let hi = ((x >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32 - 16;
            s += lo * a.qs[j] as i32 + hi * a.qs[j + 16] as i32;
        }
        acc += f16(b[0], b[1]) * a.d * s as f32;
    }
    acc
}

fn dot_q4_k(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in row.chunks_exact(144).zip(act.chunks_exact(8)) {
        let d = f16(b[0], b[1]);
        let dmin = f16(b[2], b[3]);
        let (sc, mn) = scale_min_k4(&b[4..16]);
        let qs = &b[16..144];
        for g in 0..8 {
            let shift = 4 * (g % 2);
            let src = &qs[32 * (g / 2)..32 * (g / 2) + 32];
            let s: i32 = src
                .iter()
                .zip(&a[g].qs)
                .map(|(&x, &y)| ((x >> shift) & 0x0F) as i32 * y as i32)
                .sum();
            acc += d * sc[g] as f32 * a[g].d * s as f32 - dmin * mn[g] as f32 * a[g].sum;
        }
    }
    acc
}

/// The 6-bit value of element `l` (0..32) of group `c` (0..4) in one 128-element half of a
/// Q6_K block (`ql`: 64 bytes, `qh`: 32 bytes).
#[inline(always)]
fn q6_value(ql: &[u8], qh: &[u8], c: usize, l: usize) -> i32 {
    let h = qh[l];
    let v = match c {
        0 => (ql[l] & 0x0F) | ((h & 0x03) << 4),
        1 => (ql[l + 32] & 0x0F) | (((h >> 2) & 0x03) << 4),
        2 => (ql[l] >> 4) | (((h >> 4) & 0x03) << 4),
        _ => (ql[l + 32] >> 4) | (((h >> 6) & 0x03) << 4),
    };
    v as i32 - 32
}

fn dot_q6_k(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = 0f32;
    for (b, a) in row.chunks_exact(210).zip(act.chunks_exact(8)) {
        let d = f16(b[208], b[209]);
        let sc = &b[192..208];
        for half in 0..2 {
            let ql = &b[64 * half..64 * half + 64];
            let qh = &b[128 + 32 * half..128 + 32 * half + 32];
            for c in 0..4 {
                let ab = &a[4 * half + c];
                let mut s = [0i32; 2];
                for l in 0..32 {
                    s[l / 16] += q6_value(ql, qh, c, l) * ab.qs[l] as i32;
                }
                let sa = sc[8 * half + 2 * c] as i8 as i32;
                let sb = sc[8 * half + 2 * c + 1] as i8 as i32;
                acc += d * ab.d * (sa * s[0] + sb * s[1]) as f32;
            }
        }
    }
    acc
}
