//! [`StagedDir`]: an output directory built in a hidden sibling and renamed into place.

use std::path::{Path, PathBuf};

use crate::error::{LmError, Result};

/// An output directory being written: files go to a hidden sibling directory that
/// [`commit`](StagedDir::commit) renames into place; dropped uncommitted, it is removed.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Checks `target` (refused when it is a file, or a non-empty directory unless `force`) and
    /// creates the staging directory next to it.
    pub fn create(target: &Path, force: bool) -> Result<Self> {
        if target.exists() {
            if !target.is_dir() {
                return Err(LmError::InvalidInput(format!(
                    "output {} exists and is not a directory: pick another --output",
                    target.display()
                )));
            }
            let non_empty = std::fs::read_dir(target)
                .map_err(|e| LmError::io(target, e))?
                .next()
                .is_some();
            if non_empty && !force {
                return Err(LmError::InvalidInput(format!(
                    "output directory {} exists and is not empty: pass --force to replace it, or pick another --output",
                    target.display()
                )));
            }
        }
        let name = target
            .file_name()
            .ok_or_else(|| {
                LmError::InvalidInput(format!("output {} has no directory name", target.display()))
            })?
            .to_string_lossy()
            .to_string();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| LmError::io(&parent, e))?;
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| LmError::io(&staging, e))?;
        }
        std::fs::create_dir(&staging).map_err(|e| LmError::io(&staging, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// Where files are written until the commit.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final directory.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the staged directory into place (replacing an existing target).
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            std::fs::remove_dir_all(&self.target).map_err(|e| LmError::io(&self.target, e))?;
        }
        std::fs::rename(&self.staging, &self.target).map_err(|e| LmError::io(&self.target, e))?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}
