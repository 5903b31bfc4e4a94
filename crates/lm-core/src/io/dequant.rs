//! Dequantisation of ggml tensor data to `f32`.
//!
//! [`GgmlType`] names every ggml element type a GGUF file may hold, with its block geometry
//! (elements per block, bytes per block) so the reader can validate sizes of any tensor. The
//! types in [`SUPPORTED`] can be turned into `f32` with [`dequantize_into`] / [`dequantize`].
//!
//! The arithmetic is bit-identical to the Python `gguf` package's `gguf.quants.dequantize`
//! (the reference the fixtures in `tests/fixtures/gguf/` come from): every `f16` scale is
//! widened to `f32` first, then multiplied and added in the same order as its numpy code, one
//! rounding per operation (Rust never fuses `a * b + c` into an FMA on its own). NaN payloads
//! of `f16` data are the only values not covered by that guarantee.
//!
//! Large tensors are dequantised in parallel over chunks of blocks with rayon; nothing is
//! allocated per element or per block.

use std::fmt;

use rayon::prelude::*;

use crate::error::{LmError, Result};

/// The types [`dequantize_into`] can turn into `f32`, for error messages.
pub const SUPPORTED: &str = "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K";

/// Elements per super-block of the k-quants.
const QK_K: usize = 256;

/// Below this many output elements, dequantisation runs on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Output elements handled by one rayon task.
const CHUNK_ELEMENTS: usize = 1 << 14;

/// A ggml tensor element type, as stored in a GGUF tensor info (`ggml_type` in ggml.h).
///
/// The names follow ggml's spelling (`Q4_K`, `IQ2_XXS`...), which is what users see in model
/// file names, hence the non-camel-case variants.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, 32-element blocks, one f16 scale.
    Q4_0,
    /// 4-bit, 32-element blocks, f16 scale and minimum.
    Q4_1,
    /// 5-bit, 32-element blocks, one f16 scale.
    Q5_0,
    /// 5-bit, 32-element blocks, f16 scale and minimum.
    Q5_1,
    /// 8-bit, 32-element blocks, one f16 scale.
    Q8_0,
    /// 8-bit, 32-element blocks, f32 scale and sum (an activation format).
    Q8_1,
    /// 2-bit k-quant.
    Q2_K,
    /// 3-bit k-quant.
    Q3_K,
    /// 4-bit k-quant: 256-element super-blocks of eight 32-element sub-blocks.
    Q4_K,
    /// 5-bit k-quant.
    Q5_K,
    /// 6-bit k-quant: 256-element super-blocks of sixteen 16-element sub-blocks.
    Q6_K,
    /// 8-bit k-quant (an activation format).
    Q8_K,
    /// i-quant, 2.06 bits per weight.
    IQ2_XXS,
    /// i-quant, 2.31 bits per weight.
    IQ2_XS,
    /// i-quant, 3.06 bits per weight.
    IQ3_XXS,
    /// i-quant, 1.56 bits per weight.
    IQ1_S,
    /// i-quant, 4.5 bits per weight, non-linear.
    IQ4_NL,
    /// i-quant, 3.44 bits per weight.
    IQ3_S,
    /// i-quant, 2.5 bits per weight.
    IQ2_S,
    /// i-quant, 4.25 bits per weight.
    IQ4_XS,
    /// 8-bit signed integer.
    I8,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// 64-bit signed integer.
    I64,
    /// 64-bit IEEE float.
    F64,
    /// i-quant, 1.75 bits per weight.
    IQ1_M,
    /// bfloat16.
    BF16,
    /// Ternary, 1.69 bits per weight.
    TQ1_0,
    /// Ternary, 2.06 bits per weight.
    TQ2_0,
    /// Microscaling 4-bit float.
    MXFP4,
    /// NVIDIA 4-bit float.
    NVFP4,
    /// 1-bit, 128-element blocks.
    Q1_0,
}

/// `(type, ggml id, name, elements per block, bytes per block)` for every known type.
const TABLE: &[(GgmlType, u32, &str, usize, usize)] = &[
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 40),
    (GgmlType::Q2_K, 10, "Q2_K", 256, 84),
    (GgmlType::Q3_K, 11, "Q3_K", 256, 110),
    (GgmlType::Q4_K, 12, "Q4_K", 256, 144),
    (GgmlType::Q5_K, 13, "Q5_K", 256, 176),
    (GgmlType::Q6_K, 14, "Q6_K", 256, 210),
    (GgmlType::Q8_K, 15, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", 256, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", 256, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
    (GgmlType::NVFP4, 40, "NVFP4", 64, 36),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 18),
];

impl GgmlType {
    fn row(self) -> &'static (GgmlType, u32, &'static str, usize, usize) {
        // Every variant has exactly one row (checked by a unit test), so the fallback is never used.
        TABLE.iter().find(|r| r.0 == self).unwrap_or(&TABLE[0])
    }

    /// The type with ggml id `id`, or `None` for an id this crate does not know.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|r| r.1 == id).map(|r| r.0)
    }

    /// The ggml id written in GGUF tensor infos.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// ggml's name for the type, e.g. `Q4_K`.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for plain float and integer types).
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// Whether the type is block-quantised (block size above 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Whether [`dequantize_into`] supports this type.
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
        )
    }

    /// Bytes taken by `n_elements` elements, or `None` when `n_elements` is not a whole number
    /// of blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n_elements.is_multiple_of(bs) {
            return None;
        }
        (n_elements / bs).checked_mul(self.type_size() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Dequantises `data` (whole blocks of type `ty`) into a new vector of `n_elements` floats.
///
/// # Shapes
/// `data: [n_elements / block_size * type_size]` bytes -> `[n_elements]` f32, in storage order.
///
/// # Errors
/// [`LmError::UnsupportedDtype`] for a type outside [`SUPPORTED`]; [`LmError::InvalidInput`]
/// when the byte length does not match `n_elements`.
pub fn dequantize(ty: GgmlType, data: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    check(ty, data.len(), n_elements)?;
    let mut out = vec![0f32; n_elements];
    dequantize_into(ty, data, &mut out)?;
    Ok(out)
}

fn check(ty: GgmlType, n_bytes: usize, n_elements: usize) -> Result<()> {
    if !ty.can_dequantize() {
        return Err(LmError::UnsupportedDtype {
            path: Default::default(),
            tensor: "<buffer>".into(),
            dtype: ty.name().into(),
            supported: SUPPORTED,
        });
    }
    let expected = ty.bytes_for(n_elements as u64);
    if expected != Some(n_bytes as u64) {
        return Err(LmError::InvalidInput(format!(
            "dequantize {ty}: {n_elements} elements need {} bytes (whole blocks of {} elements, {} bytes each), got {n_bytes} bytes",
            expected.map_or_else(
                || "a multiple-of-block-size element count and".into(),
                |e| e.to_string()
            ),
            ty.block_size(),
            ty.type_size(),
        )));
    }
    Ok(())
}

/// Dequantises `data` (whole blocks of type `ty`) into `out`, whose length is the element count.
///
/// # Shapes
/// `data: [out.len() / block_size * type_size]` bytes -> `out: [n_elements]` f32.
///
/// # Errors
/// As [`dequantize`].
pub fn dequantize_into(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    check(ty, data.len(), out.len())?;
    match ty {
        GgmlType::F32 => run::<4, 1>(data, out, |b, o| o[0] = f32::from_le_bytes(*b)),
        GgmlType::F16 => run::<2, 1>(data, out, |b, o| o[0] = f16(b[0], b[1])),
        GgmlType::BF16 => run::<2, 1>(data, out, |b, o| {
            o[0] = f32::from_bits((u16::from_le_bytes(*b) as u32) << 16)
        }),
        GgmlType::Q4_0 => run::<18, 32>(data, out, q4_0),
        GgmlType::Q4_1 => run::<20, 32>(data, out, q4_1),
        GgmlType::Q5_0 => run::<22, 32>(data, out, q5_0),
        GgmlType::Q5_1 => run::<24, 32>(data, out, q5_1),
        GgmlType::Q8_0 => run::<34, 32>(data, out, q8_0),
        GgmlType::Q4_K => run::<144, QK_K>(data, out, q4_k),
        GgmlType::Q5_K => run::<176, QK_K>(data, out, q5_k),
        GgmlType::Q6_K => run::<210, QK_K>(data, out, q6_k),
        // `check` rejected every other type.
        _ => {}
    }
    Ok(())
}

/// Applies `f` to every `(TS-byte block, BS-element output)` pair, in parallel for big tensors.
fn run<const TS: usize, const BS: usize>(
    data: &[u8],
    out: &mut [f32],
    f: impl Fn(&[u8; TS], &mut [f32; BS]) + Sync,
) {
    let serial = |d: &[u8], o: &mut [f32]| {
        let (blocks, _) = d.as_chunks::<TS>();
        let (outs, _) = o.as_chunks_mut::<BS>();
        for (b, o) in blocks.iter().zip(outs.iter_mut()) {
            f(b, o);
        }
    };
    if out.len() < PARALLEL_MIN_ELEMENTS {
        serial(data, out);
    } else {
        let blocks_per_task = (CHUNK_ELEMENTS / BS).max(1);
        out.par_chunks_mut(blocks_per_task * BS)
            .zip(data.par_chunks(blocks_per_task * TS))
            .for_each(|(o, d)| serial(d, o));
    }
}

/// Little-endian IEEE half to f32 (exact).
#[inline(always)]
pub(crate) fn f16(lo: u8, hi: u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

/// Q4_0: `d: f16, qs: [u8; 16]`; element `j` is the low nibble of `qs[j]`, element `j + 16`
/// the high nibble; value `d * (q - 8)`.
fn q4_0(b: &[u8; 18], o: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    for j in 0..16 {
        let x = b[2 + j];
        o[j] = d * ((x & 0x0F) as i32 - 8) as f32;
        o[j + 16] = d * ((x >> 4) as i32 - 8) as f32;
    }
}

/// Q4_1: `d: f16, m: f16, qs: [u8; 16]`; value `d * q + m`.
fn q4_1(b: &[u8; 20], o: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    let m = f16(b[2], b[3]);
    for j in 0..16 {
        let x = b[4 + j];
        o[j] = d * (x & 0x0F) as f32 + m;
        o[j + 16] = d * (x >> 4) as f32 + m;
    }
}

/// Q5_0: `d: f16, qh: u32 (bit j = 5th bit of element j), qs: [u8; 16]`; value `d * (q - 16)`.
fn q5_0(b: &[u8; 22], o: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for j in 0..16 {
        let x = b[6 + j];
        let lo = (x & 0x0F) as u32 | (((qh >> j) & 1) << 4);
        let hi = (x >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
        o[j] = d * (lo as i32 - 16) as f32;
        o[j + 16] = d * (hi as i32 - 16) as f32;
    }
}

/// Q5_1: `d: f16, m: f16, qh: u32, qs: [u8; 16]`; value `d * q + m`.
fn q5_1(b: &[u8; 24], o: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    let m = f16(b[2], b[3]);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for j in 0..16 {
        let x = b[8 + j];
        let lo = (x & 0x0F) as u32 | (((qh >> j) & 1) << 4);
        let hi = (x >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4);
        o[j] = d * lo as f32 + m;
        o[j + 16] = d * hi as f32 + m;
    }
}

/// Q8_0: `d: f16, qs: [i8; 32]`; value `q * d`.
fn q8_0(b: &[u8; 34], o: &mut [f32; 32]) {
    let d = f16(b[0], b[1]);
    for j in 0..32 {
        o[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// The eight 6-bit scales and eight 6-bit minimums packed in 12 bytes (Q4_K, Q5_K).
#[inline(always)]
pub(crate) fn scale_min_k4(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. Sub-block `s` (32 elements)
/// takes the low (even `s`) or high (odd `s`) nibbles of `qs[32 * (s / 2)..][..32]`; value
/// `(d * sc[s]) * q - dmin * m[s]`.
fn q4_k(b: &[u8; 144], o: &mut [f32; QK_K]) {
    let d = f16(b[0], b[1]);
    let dmin = f16(b[2], b[3]);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qs = &b[16..144];
    for s in 0..8 {
        let ds = d * sc[s] as f32;
        let dm = dmin * mn[s] as f32;
        let shift = 4 * (s % 2);
        let src = &qs[32 * (s / 2)..32 * (s / 2) + 32];
        let dst = &mut o[32 * s..32 * s + 32];
        for (y, &x) in dst.iter_mut().zip(src) {
            *y = ds * ((x >> shift) & 0x0F) as f32 - dm;
        }
    }
}

/// Q5_K: `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`; as Q4_K with a
/// fifth bit `(qh[l] >> s) & 1` for element `l` of sub-block `s`.
fn q5_k(b: &[u8; 176], o: &mut [f32; QK_K]) {
    let d = f16(b[0], b[1]);
    let dmin = f16(b[2], b[3]);
    let (sc, mn) = scale_min_k4(&b[4..16]);
    let qh = &b[16..48];
    let qs = &b[48..176];
    for s in 0..8 {
        let ds = d * sc[s] as f32;
        let dm = dmin * mn[s] as f32;
        let shift = 4 * (s % 2);
        let src = &qs[32 * (s / 2)..32 * (s / 2) + 32];
        let dst = &mut o[32 * s..32 * s + 32];
        for l in 0..32 {
            let q = ((src[l] >> shift) & 0x0F) | (((qh[l] >> s) & 1) << 4);
            dst[l] = ds * q as f32 - dm;
        }
    }
}

/// Q6_K: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`. Element `i` has low bits
/// `ql[64 * (i / 128) + i % 64] >> (4 * ((i % 128) / 64))` and high bits
/// `qh[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))`; value `(d * scales[i / 16]) * (q - 32)`.
fn q6_k(b: &[u8; 210], o: &mut [f32; QK_K]) {
    let d = f16(b[208], b[209]);
    let mut ds = [0f32; 16];
    for (s, x) in ds.iter_mut().zip(&b[192..208]) {
        *s = d * (*x as i8) as f32;
    }
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let ds = &ds[8 * half..8 * half + 8];
        let o = &mut o[128 * half..128 * half + 128];
        // Elements l, l + 32, l + 64, l + 96 share qh[l]; sub-block of element i is i / 16.
        for l in 0..32 {
            let h = qh[l];
            let q0 = ((ql[l] & 0x0F) | ((h & 0x03) << 4)) as i32 - 32;
            let q1 = ((ql[l + 32] & 0x0F) | (((h >> 2) & 0x03) << 4)) as i32 - 32;
            let q2 = ((ql[l] >> 4) | (((h >> 4) & 0x03) << 4)) as i32 - 32;
            let q3 = ((ql[l + 32] >> 4) | (((h >> 6) & 0x03) << 4)) as i32 - 32;
            let s = l / 16;
            o[l] = ds[s] * q0 as f32;
            o[l + 32] = ds[s + 2] * q1 as f32;
            o[l + 64] = ds[s + 4] * q2 as f32;
            o[l + 96] = ds[s + 6] * q3 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn table_covers_every_variant_once_and_ids_round_trip() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(GgmlType::from_id(row.1), Some(row.0));
            assert_eq!(row.0.id(), row.1);
            assert_eq!(row.0.name(), row.2);
            assert!(TABLE[i + 1..].iter().all(|r| r.0 != row.0 && r.1 != row.1));
        }
        assert_eq!(
            GgmlType::from_id(4),
            None,
            "ids 4 and 5 (Q4_2, Q4_3) were removed from ggml"
        );
        assert_eq!(GgmlType::Q4_K.block_size(), 256);
        assert_eq!(GgmlType::Q8_0.type_size(), 34);
    }

    #[test]
    fn q4_0_hand_computed_block() {
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&f16_bytes(0.5));
        b[2] = 0xF0; // element 0 -> 0 - 8, element 16 -> 15 - 8
        b[3] = 0x19; // element 1 -> 9 - 8, element 17 -> 1 - 8
        let out = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        assert_eq!(out[0], -4.0);
        assert_eq!(out[16], 3.5);
        assert_eq!(out[1], 0.5);
        assert_eq!(out[17], -3.5);
        assert_eq!(out[2], -4.0);
    }

    #[test]
    fn q4_1_and_q5_1_add_the_minimum() {
        let mut b = [0u8; 20];
        b[..2].copy_from_slice(&f16_bytes(2.0));
        b[2..4].copy_from_slice(&f16_bytes(-1.0));
        b[4] = 0x3A;
        let out = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        assert_eq!((out[0], out[16], out[1]), (19.0, 5.0, -1.0));

        let mut b = [0u8; 24];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        b[2..4].copy_from_slice(&f16_bytes(0.25));
        b[4..8].copy_from_slice(&(1u32 | (1 << 16) | (1 << 31)).to_le_bytes());
        b[8] = 0x21;
        let out = dequantize(GgmlType::Q5_1, &b, 32).unwrap();
        assert_eq!(out[0], 17.25); // 1 | 16
        assert_eq!(out[16], 18.25); // 2 | 16
        assert_eq!(out[31], 16.25); // 0 | 16
        assert_eq!(out[1], 0.25);
    }

    #[test]
    fn q5_0_uses_the_high_bit_field() {
        let mut b = [0u8; 22];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        b[2..6].copy_from_slice(&(1u32 << 3).to_le_bytes());
        let out = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        assert_eq!(out[3], 0.0);
        assert_eq!(out[4], -16.0);
    }

    #[test]
    fn q8_0_and_bf16_and_f16() {
        let mut b = [0u8; 34];
        b[..2].copy_from_slice(&f16_bytes(0.125));
        b[2] = 0x80; // -128
        b[33] = 127;
        let out = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        assert_eq!((out[0], out[31], out[5]), (-16.0, 15.875, 0.0));

        let bf = [0x80u8, 0x3F, 0x40, 0xC0]; // 1.0, -3.0
        assert_eq!(dequantize(GgmlType::BF16, &bf, 2).unwrap(), vec![1.0, -3.0]);
        let h = [f16_bytes(-2.5), f16_bytes(6.1035156e-5)].concat();
        assert_eq!(
            dequantize(GgmlType::F16, &h, 2).unwrap(),
            vec![-2.5, 6.1035156e-5]
        );
    }

    #[test]
    fn q6_k_element_layout() {
        let mut b = [0u8; 210];
        b[208..210].copy_from_slice(&f16_bytes(1.0));
        for s in 0..16 {
            b[192 + s] = 1;
        }
        // element 64 + 3: high nibble of ql[3], qh[3] bits 4..6
        b[3] = 0x50;
        b[128 + 3] = 0b10_0000;
        let out = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        assert_eq!(out[67], (5 | (2 << 4)) as f32 - 32.0);
        assert_eq!(out[3], -32.0);
    }

    #[test]
    fn q4_k_scale_unpacking() {
        let mut b = [0u8; 144];
        b[..2].copy_from_slice(&f16_bytes(1.0));
        b[2..4].copy_from_slice(&f16_bytes(1.0));
        let s = &mut b[4..16];
        s[0] = 0b11_000010; // sc[0] = 2, top bits of sc[4] = 3
        s[4] = 0b01_000001; // m[0] = 1, top bits of m[4] = 1
        s[8] = 0x52; // sc[4] low = 2, m[4] low = 5
        b[16] = 0x73; // sub-block 0 elem 0 -> 3, sub-block 1 elem 0 -> 7
        let out = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
        assert_eq!(out[0], 2.0 * 3.0 - 1.0);
        assert_eq!(out[32], 0.0);
        // sub-block 4 uses qs[64..96] low nibbles (zero): -(m[4]) = -(5 | 16)
        assert_eq!(out[128], -21.0);
    }

    #[test]
    fn size_mismatch_and_unsupported_are_errors() {
        let e = dequantize(GgmlType::Q4_0, &[0u8; 17], 32).unwrap_err();
        assert!(e.to_string().contains("need 18 bytes"), "{e}");
        let e = dequantize(GgmlType::Q4_0, &[0u8; 18], 31).unwrap_err();
        assert!(e.to_string().contains("multiple-of-block-size"), "{e}");
        let e = dequantize(GgmlType::IQ2_XXS, &[0u8; 66], 256).unwrap_err();
        assert!(matches!(e, LmError::UnsupportedDtype { .. }), "{e}");
    }

    proptest! {
        /// The parallel path gives exactly the serial result, for every supported type.
        #[test]
        fn parallel_equals_serial(seed in any::<u64>(), ty_idx in 0usize..11) {
            let types = [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1,
                GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];
            let ty = types[ty_idx];
            let n = PARALLEL_MIN_ELEMENTS + 3 * 256;
            let n_bytes = ty.bytes_for(n as u64).unwrap() as usize;
            let mut state = seed | 1;
            let data: Vec<u8> = (0..n_bytes).map(|_| {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                (state >> 24) as u8
            }).collect();
            let par = dequantize(ty, &data, n).unwrap();
            let mut serial = vec![0f32; n];
            // Dequantise in small pieces (each below the parallel threshold).
            let piece = 4096;
            let bs = ty.block_size();
            let ts = ty.type_size();
            for (o, d) in serial.chunks_mut(piece).zip(data.chunks(piece / bs * ts)) {
                dequantize_into(ty, d, o).unwrap();
            }
            for (a, b) in par.iter().zip(&serial) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }
    }
}
