//! Rotary position embedding (HF's `rotate_half` convention) in one pass.
//!
//! burn's composition gathers the `cos`/`sin` rows of the positions (`select` ×2), splits the
//! heads in halves (`narrow` ×2), negates one, concatenates them and multiplies and adds: about
//! ten ops and four temporaries per call, twice per block (queries and keys), which in batch-1
//! decoding is a sizeable share of the step's ~1000 ops. The kernel reads each head once and
//! writes `x · cos + rotate_half(x) · sin` with the table rows of its position.
//!
//! It works on the `[batch, seq, heads, head_dim]` layout that the q/k projections produce
//! (a reshape of their output, contiguous), before the heads are swapped to the front. Forward
//! only: on the autodiff device the generic composition runs.

use burn::tensor::{Int, Tensor};

/// Rotates each head of `x` by the angles of its token's position.
///
/// `cos`/`sin` hold `cos(pos · inv_freq)` / `sin(pos · inv_freq)` duplicated over both halves
/// of the head ([`Rope`](crate::model::layers::Rope)'s tables).
///
/// # Shapes
/// - `x`: `[batch, seq, heads, head_dim]`
/// - `cos`, `sin`: `[max_pos, head_dim]`
/// - `positions`: `[batch, seq]`, each `< max_pos`
/// - returns `[batch, seq, heads, head_dim]`
pub fn rope_bshd(
    x: Tensor<4>,
    cos: &Tensor<2>,
    sin: &Tensor<2>,
    positions: &Tensor<2, Int>,
) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if let (Some(xf), Some(cf), Some(sf), Some(pos)) = (
        super::flex::plain_f32(&x),
        super::flex::plain_f32(cos),
        super::flex::plain_f32(sin),
        super::flex::plain_ints(positions),
    ) {
        use super::flex::{for_rows, values, wrap};
        let [_, _, h, d] = x.dims();
        let max_pos = cos.dims()[0];
        assert_eq!(
            cos.dims()[1],
            d,
            "rope: tables of width {} for heads of {d}",
            cos.dims()[1]
        );
        let (xv, cv, sv) = (values(&xf), values(&cf), values(&sf));
        let row = h * d;
        let mut out = vec![0f32; xv.len()];
        // The token index of each chunk comes from the chunk's offset in `out`.
        let base = out.as_ptr() as usize;
        for_rows([xv], &mut out, row, |[x], o| {
            let first = (o.as_ptr() as usize - base) / std::mem::size_of::<f32>() / row;
            for (t, (xr, or)) in x.chunks_exact(row).zip(o.chunks_exact_mut(row)).enumerate() {
                let p = pos[first + t];
                assert!(
                    (0..max_pos as i64).contains(&p),
                    "rope: position {p} outside the tables (0..{max_pos})"
                );
                let p = p as usize;
                rotate_token(xr, or, &cv[p * d..(p + 1) * d], &sv[p * d..(p + 1) * d]);
            }
        });
        return wrap(out, x.dims());
    }
    rope_bshd_reference(x, cos, sin, positions)
}

/// Rotates the heads of one token (`x`, `out`: `heads · head_dim` values).
#[inline]
fn rotate_token(x: &[f32], out: &mut [f32], cos: &[f32], sin: &[f32]) {
    let d = cos.len();
    let half = d / 2;
    let (c1, c2) = cos.split_at(half);
    let (s1, s2) = sin.split_at(half);
    for (xh, oh) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let (x1, x2) = xh.split_at(half);
        let (o1, o2) = oh.split_at_mut(half);
        for i in 0..half {
            // Same expression and order as the reference: `x · cos + rotated · sin`.
            o1[i] = x1[i] * c1[i] + (-x2[i]) * s1[i];
            o2[i] = x2[i] * c2[i] + x1[i] * s2[i];
        }
    }
}

/// The generic composition of burn ops (the fallback off flex and the tests' reference).
///
/// # Shapes
/// - as [`rope_bshd`]
pub fn rope_bshd_reference(
    x: Tensor<4>,
    cos: &Tensor<2>,
    sin: &Tensor<2>,
    positions: &Tensor<2, Int>,
) -> Tensor<4> {
    let [b, s, _h, d] = x.dims();
    let flat = positions.clone().reshape([b * s]);
    let cos = cos.clone().select(0, flat.clone()).reshape([b, s, 1, d]);
    let sin = sin.clone().select(0, flat).reshape([b, s, 1, d]);
    let half = d / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos + rotated * sin
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use crate::model::layers::Rope;
    use burn::tensor::{Device, Distribution, TensorData};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn one_pass_rope_equals_the_layers_rope(
            b in 1usize..4, s in 1usize..24, h in 1usize..6, half in 1usize..40, offset in 0usize..50
        ) {
            let d = 2 * half;
            let dev = Device::flex();
            let rope = Rope::new(d, 10_000.0, 128, &dev);
            let x = Tensor::<4>::random([b, s, h, d], Distribution::Normal(0.0, 1.0), &dev);
            let pos: Vec<i64> = (0..b * s).map(|i| ((i * 7 + offset) % 128) as i64).collect();
            let positions = Tensor::<2, Int>::from_data(TensorData::new(pos, [b, s]), &dev);
            let fused = rope_bshd(x.clone(), &rope.cos, &rope.sin, &positions);
            // The layers' `Rope::apply` works on `[batch, heads, seq, head_dim]`.
            let want = rope.apply(x.swap_dims(1, 2), &positions).swap_dims(1, 2);
            let (a, w) = (fused.into_data().try_to_vec::<f32>().unwrap(), want.into_data().try_to_vec::<f32>().unwrap());
            for (x, y) in a.iter().zip(&w) {
                prop_assert!((x - y).abs() <= 1e-6 + 1e-6 * y.abs(), "{x} vs {y}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside the tables")]
    fn a_position_past_the_tables_is_refused() {
        let dev = Device::flex();
        let rope = Rope::new(4, 10_000.0, 8, &dev);
        let x = Tensor::<4>::zeros([1, 1, 1, 4], &dev);
        let positions = Tensor::<2, Int>::from_data(TensorData::new(vec![8i64], [1, 1]), &dev);
        let _ = rope_bshd(x, &rope.cos, &rope.sin, &positions);
    }
}
