//! Getting at the flex tensors behind burn [`Tensor`]s and back.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Int, Tensor, TensorData};
use rayon::prelude::*;

use super::PARALLEL_MIN;

/// The f32 flex tensor behind `x`, made contiguous, when `x` lives on the plain flex device
/// (not autodiff) and is f32; `None` sends the caller to the generic path.
pub(crate) fn plain_f32<const D: usize>(x: &Tensor<D>) -> Option<FlexTensor> {
    if !super::enabled() || x.device().is_autodiff() || x.dtype() != DType::F32 {
        return None;
    }
    let t = x.clone().try_into_primitive::<Flex>().ok()?;
    Some(contiguous(t))
}

/// `t` itself when its buffer is contiguous from offset 0, else a contiguous copy.
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    match t.layout().contiguous_offsets() {
        Some((0, _)) => t,
        _ => t.to_contiguous(),
    }
}

/// The f32 values of a contiguous flex tensor.
pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 flex tensor (see `plain_f32`)")
}

/// The positions behind an int tensor on the plain flex device, as `i64`.
pub(crate) fn plain_ints<const D: usize>(x: &Tensor<D, Int>) -> Option<Vec<i64>> {
    if !super::enabled() || x.device().is_autodiff() {
        return None;
    }
    let t = contiguous(x.clone().try_into_primitive::<Flex>().ok()?);
    if let Some(v) = t.as_slice::<i64>() {
        return Some(v.to_vec());
    }
    t.as_slice::<i32>()
        .map(|v| v.iter().map(|&i| i as i64).collect())
}

/// A flex tensor holding `data` with `shape`.
pub(crate) fn flex_tensor<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// A plain flex tensor holding `data` with `shape`.
pub(crate) fn wrap<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(flex_tensor(data, shape))
}

/// Runs `f(chunk_of_inputs, chunk_of_out)` over aligned chunks of whole rows of `row` values,
/// in parallel when there is enough work. `inputs` are slices of `out.len()` values.
pub(crate) fn for_rows<const N: usize>(
    inputs: [&[f32]; N],
    out: &mut [f32],
    row: usize,
    f: impl Fn([&[f32]; N], &mut [f32]) + Sync,
) {
    let n = out.len();
    let row = row.max(1);
    if n < PARALLEL_MIN {
        f(inputs, out);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    // Several chunks per thread for balance, whole rows each.
    let rows_per = (n / row).div_ceil(threads * 4).max(1);
    let chunk = rows_per * row;
    out.par_chunks_mut(chunk).enumerate().for_each(|(i, o)| {
        let start = i * chunk;
        let ins = inputs.map(|s| &s[start..start + o.len()]);
        f(ins, o);
    });
}
