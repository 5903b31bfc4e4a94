//! Streaming sha256: of a file on disk, and of bytes while they are copied.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{LmError, Result};

const CHUNK: usize = 1 << 20;

/// The lowercase hex sha256 of the file at `path`, read in 1 MiB chunks.
pub fn sha256_file(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let mut file = File::open(path).map_err(|e| LmError::io(path, e))?;
    let mut hasher = Sha256::new();
    copy_hashing(&mut file, &mut io::sink(), &mut hasher, &mut |_| {})
        .map_err(|e| LmError::io(path, e))?;
    Ok(hex(&hasher.finalize()))
}

/// Copies `reader` to `writer`, feeding every byte to `hasher` and calling `progress` with the
/// size of each chunk. Returns the number of bytes copied.
pub(crate) fn copy_hashing(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    hasher: &mut Sha256,
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        total += n as u64;
        progress(n as u64);
    }
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&p, b"").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn missing_file_is_io_error_with_path() {
        let err = sha256_file("/nonexistent/openexpert/x").unwrap_err();
        assert!(matches!(err, LmError::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/openexpert/x"));
    }

    #[test]
    fn copy_hashing_matches_one_shot_and_counts() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        let mut h = Sha256::new();
        let mut seen = 0u64;
        let n = copy_hashing(&mut data.as_slice(), &mut out, &mut h, &mut |k| seen += k).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(seen, n);
        assert_eq!(out, data);
        assert_eq!(hex(&h.finalize()), hex(&Sha256::digest(&data)));
    }
}
