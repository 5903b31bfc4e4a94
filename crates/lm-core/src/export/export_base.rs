//! [`export_base`]: a base model (GGUF or HF) written as an HF checkpoint, unchanged.

use std::path::{Path, PathBuf};

use atomic_fs::StagedDir;

use super::{ExportBase, ExportDtype, export_decoder, write_sidecar_files};
use crate::error::{LmError, Result};

/// Exports a base model unchanged (GGUF → HF conversion): weights, config and tokenizer files.
pub fn export_base(spec: &str, output: &Path, dtype: ExportDtype, force: bool) -> Result<PathBuf> {
    let base = ExportBase::open(spec)?;
    let staged = StagedDir::create(output, force)?;
    export_decoder::<LmError, _>(&base, staged.path(), dtype, |_, _, _| Ok(()), &|_| {})?;
    write_sidecar_files(&base, staged.path(), dtype)?;
    Ok(staged.commit()?)
}
