//! AVX2 + FMA + F16C dot products of one weight row with one activation row (the formats of
//! [`super::format`]), in llama.cpp's manner: 32 weights are unpacked to bytes in one register,
//! multiplied with the i8 activations by `vpmaddubsw` (unsigned × signed pairs to i16, so
//! signed Q8_0 weights go through `vpsignb` first), summed to i32 by `vpmaddwd`, and scaled in
//! f32 with one FMA per group.
//!
//! Callers must check [`available`] before calling any of them (the wrappers in
//! [`super::matmul`] do, once).

use std::arch::x86_64::*;

use super::format::{ActBlock, scale_min_k4};

/// Whether this CPU has what these kernels need (checked at run time; the build does not
/// assume it).
pub fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16(lo: u8, hi: u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        u16::from_le_bytes([lo, hi]) as i32,
    )))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(p: &[u8]) -> __m256i {
    let p = &p[..32];
    // SAFETY: `p` has 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(p.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load16(p: &[u8]) -> __m128i {
    let p = &p[..16];
    // SAFETY: `p` has 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(p.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_act(a: &ActBlock) -> __m256i {
    // SAFETY: `qs` is 32 bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(a.qs.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `Σ u · s` in eight i32 lanes (lanes 0..4 from bytes 0..16, 4..8 from 16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
}

/// Two 16-byte nibble halves of 16 packed bytes: low nibbles in bytes 0..16, high in 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn nibbles(x: __m128i) -> __m256i {
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(x, m);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(x), m);
    _mm256_set_m128i(hi, lo)
}

/// Byte `i` is 0xFF when bit `i` of `x` is set (llama.cpp's `bytes_from_bits_32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bytes_from_bits(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Q8_0 row · activations.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q8_0(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, a) in row.chunks_exact(34).zip(act) {
        let w = load32(&b[2..]);
        let x = load_act(a);
        let p = dot_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        let d = _mm256_set1_ps(f16(b[0], b[1]) * a.d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
    }
    hsum(acc)
}

/// Q4_1 row · activations.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_1(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (b, a) in row.chunks_exact(20).zip(act) {
        let q = nibbles(load16(&b[4..]));
        let p = dot_u8_i8(q, load_act(a));
        let d = _mm256_set1_ps(f16(b[0], b[1]) * a.d);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc);
        mins += f16(b[2], b[3]) * a.sum;
    }
    hsum(acc) + mins
}

/// Q5_0 row · activations: `Σ (q − 16) · qa = Σ q · qa − 16 Σ qa`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q5_0(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut offsets = 0f32;
    for (b, a) in row.chunks_exact(22).zip(act) {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let high = _mm256_and_si256(bytes_from_bits(qh), _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles(load16(&b[6..])), high);
        let p = dot_u8_i8(q, load_act(a));
        let d = f16(b[0], b[1]);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(p), acc);
        offsets += 16.0 * d * a.sum;
    }
    hsum(acc) - offsets
}

/// Q4_K row · activations.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q4_k(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    let m4 = _mm256_set1_epi8(0x0F);
    for (b, a) in row.chunks_exact(144).zip(act.chunks_exact(8)) {
        let d = f16(b[0], b[1]);
        let dmin = f16(b[2], b[3]);
        let (sc, mn) = scale_min_k4(&b[4..16]);
        for j in 0..4 {
            let x = load32(&b[16 + 32 * j..]);
            let lo = _mm256_and_si256(x, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), m4);
            for (g, q) in [(2 * j, lo), (2 * j + 1, hi)] {
                let p = dot_u8_i8(q, load_act(&a[g]));
                let s = _mm256_set1_ps(d * sc[g] as f32 * a[g].d);
                acc = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(p), acc);
                mins += dmin * mn[g] as f32 * a[g].sum;
            }
        }
    }
    hsum(acc) - mins
}

/// Q6_K row · activations: the 16-element sub-block scales multiply the i16 pair sums
/// (`vpmaddwd` with the scales instead of ones), the `− 32` goes through the half sums.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C ([`available`]).
#[target_feature(enable = "avx2,fma,f16c")]
pub fn dot_q6_k(row: &[u8], act: &[ActBlock]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut offsets = 0f32;
    let m4 = _mm256_set1_epi8(0x0F);
    for (b, a) in row.chunks_exact(210).zip(act.chunks_exact(8)) {
        let d = f16(b[208], b[209]);
        let sc = &b[192..208];
        for half in 0..2 {
            let ql0 = load32(&b[64 * half..]);
            let ql1 = load32(&b[64 * half + 32..]);
            let qh = load32(&b[128 + 32 * half..]);
            let q = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(0x03))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C))),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, _mm256_set1_epi8(0x30)),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(0xC0u8 as i8))),
                ),
            ];
            for (c, qc) in q.into_iter().enumerate() {
                let ab = &a[4 * half + c];
                let sa = sc[8 * half + 2 * c] as i8 as i16;
                let sb = sc[8 * half + 2 * c + 1] as i8 as i16;
                let scales = _mm256_set_m128i(_mm_set1_epi16(sb), _mm_set1_epi16(sa));
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qc, load_act(ab)), scales);
                let s = d * ab.d;
                acc = _mm256_fmadd_ps(_mm256_set1_ps(s), _mm256_cvtepi32_ps(p), acc);
                offsets +=
                    32.0 * s * (sa as i32 * ab.half_sums[0] + sb as i32 * ab.half_sums[1]) as f32;
            }
        }
    }
    hsum(acc) - offsets
}
