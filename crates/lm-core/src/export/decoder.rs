//! [`export_decoder`]: the windowed read → update → convert → write loop.

use std::path::Path;

use rayon::prelude::*;

use super::{ExportBase, ExportDtype, SafetensorsStreamWriter, WEIGHTS_FILE};
use crate::error::LmError;

/// Most elements read, updated and encoded at once (the streaming window), besides one tensor
/// that is larger on its own.
pub const WINDOW_ELEMENTS: usize = 1 << 24;

/// What [`export_decoder`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    /// Number of tensors.
    pub tensors: usize,
    /// Size of `model.safetensors` in bytes.
    pub bytes: u64,
}

/// Streams the base's tensors into `dir/model.safetensors`: each tensor is read (f32), handed to
/// `update(name, shape, values)` (which may change the values in place, e.g. add a LoRA ΔW), encoded
/// to `dtype` and written; `on_tensor` is called after each write (progress). Tensors of a window
/// (up to [`WINDOW_ELEMENTS`]) are processed in parallel and written in plan order.
///
/// # Shapes
/// `values` are row-major in the PyTorch shape `shape` (`[d_out, d_in]` for linear weights).
pub fn export_decoder<E, U>(
    base: &ExportBase,
    dir: &Path,
    dtype: ExportDtype,
    update: U,
    on_tensor: &(dyn Fn(&str) + Sync),
) -> std::result::Result<ExportSummary, E>
where
    E: From<LmError> + Send,
    U: Fn(&str, &[usize], &mut [f32]) -> std::result::Result<(), E> + Sync,
{
    let plan = base.plan();
    let path = dir.join(WEIGHTS_FILE);
    let mut writer = SafetensorsStreamWriter::create(&path, plan.clone(), dtype)?;
    let mut start = 0;
    while start < plan.len() {
        let mut end = start + 1;
        let mut elems = plan[start].numel();
        while end < plan.len() && elems + plan[end].numel() <= WINDOW_ELEMENTS {
            elems += plan[end].numel();
            end += 1;
        }
        let encoded: Vec<std::result::Result<Vec<u8>, E>> = plan[start..end]
            .par_iter()
            .map(|entry| {
                let (mut values, shape) = base.tensor(&entry.name)?;
                if shape != entry.shape {
                    return Err(LmError::ShapeMismatch {
                        tensor: entry.name.clone(),
                        expected: entry.shape.clone(),
                        found: shape,
                    }
                    .into());
                }
                update(&entry.name, &entry.shape, &mut values)?;
                let mut bytes = Vec::new();
                dtype.encode_into(&values, &mut bytes);
                Ok(bytes)
            })
            .collect();
        for (entry, bytes) in plan[start..end].iter().zip(encoded) {
            writer.write_encoded(&entry.name, &bytes?)?;
            on_tensor(&entry.name);
        }
        start = end;
    }
    writer.finish()?;
    let bytes = std::fs::metadata(&path)
        .map_err(|e| LmError::io(&path, e))?
        .len();
    Ok(ExportSummary {
        tensors: plan.len(),
        bytes,
    })
}
