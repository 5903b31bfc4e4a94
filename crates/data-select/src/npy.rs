//! A small `.npy` reader and writer for 2-D `f32` matrices (embeddings).
//!
//! Writes version 1.0 headers (`'<f4'`, C order), padded so the data starts at a multiple of 64 bytes as numpy does.
//! Reads versions 1, 2 and 3, dtype `'<f4'` (and `'<f8'`, converted to `f32`), C order only, 1-D (read as one
//! column) or 2-D shapes.

use std::io::{Read, Write};
use std::path::Path;

use ndarray::{Array2, ArrayView2};

use crate::error::{Result, SelectError};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Writes `matrix` as a version 1.0 `.npy` (`'<f4'`, C order).
///
/// # Shapes
/// `matrix: [rows, cols]`
pub fn write_npy(path: &Path, matrix: ArrayView2<'_, f32>) -> Result<()> {
    let mut bytes = Vec::with_capacity(128 + matrix.len() * 4);
    encode_npy(&mut bytes, matrix);
    Ok(atomic_fs::write_atomic(path, &bytes)?)
}

/// Encodes `matrix` as `.npy` bytes into `out`.
///
/// # Shapes
/// `matrix: [rows, cols]`
pub fn encode_npy(out: &mut Vec<u8>, matrix: ArrayView2<'_, f32>) {
    let (r, c) = matrix.dim();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({r}, {c}), }}");
    // magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    header.extend(std::iter::repeat_n(' ', pad));
    header.push('\n');
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in matrix.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Reads a `.npy` file into an `f32` matrix, streaming the data (peak memory is the matrix plus a 1 MiB buffer).
///
/// # Shapes
/// returns `[rows, cols]`; a 1-D file of length `n` is returned as `[n, 1]`.
pub fn read_npy(path: &Path) -> Result<Array2<f32>> {
    let what = path.display().to_string();
    let bad = |reason: String| SelectError::BadNpy {
        what: what.clone(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| SelectError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| SelectError::io(path, e))?.len();
    let mut pre = [0u8; 12];
    let got = read_up_to(&mut file, &mut pre[..10]).map_err(|e| SelectError::io(path, e))?;
    if got < 10 || &pre[..6] != MAGIC {
        return Err(bad("missing the \\x93NUMPY magic".into()));
    }
    let (header_len, start) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10usize),
        2 | 3 => {
            if read_up_to(&mut file, &mut pre[10..12]).map_err(|e| SelectError::io(path, e))? < 2 {
                return Err(bad("truncated header length".into()));
            }
            (
                u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    if (start + header_len) as u64 > file_len {
        return Err(bad(format!(
            "header length {header_len} runs past the end of the file"
        )));
    }
    let mut header = vec![0u8; header_len];
    file.read_exact(&mut header)
        .map_err(|e| SelectError::io(path, e))?;
    let header = std::str::from_utf8(&header).map_err(|_| bad("header is not UTF-8".into()))?;
    let (elem, rows, cols) = parse_header(header).map_err(bad)?;
    let count = rows * cols;
    let data_len = file_len - (start + header_len) as u64;
    if data_len != (count * elem) as u64 {
        return Err(bad(format!(
            "shape ({rows}, {cols}) needs {} data bytes, file has {data_len}",
            count * elem
        )));
    }
    let mut values: Vec<f32> = Vec::with_capacity(count);
    let mut buf = vec![0u8; 1 << 20];
    let mut remaining = count * elem;
    while remaining > 0 {
        let take = remaining.min(buf.len());
        file.read_exact(&mut buf[..take])
            .map_err(|e| SelectError::io(path, e))?;
        push_values(&mut values, &buf[..take], elem);
        remaining -= take;
    }
    Array2::from_shape_vec((rows, cols), values).map_err(|e| bad(e.to_string()))
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn push_values(values: &mut Vec<f32>, data: &[u8], elem: usize) {
    if elem == 4 {
        values.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
    } else {
        values.extend(
            data.chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("chunk of 8")) as f32),
        );
    }
}

/// Parses a header dict into (element size, rows, cols).
fn parse_header(header: &str) -> std::result::Result<(usize, usize, usize), String> {
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    let shape = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let elem = match descr.trim_matches(|c| c == '\'' || c == '"') {
        "<f4" => 4,
        "<f8" => 8,
        other => return Err(format!("dtype {other} is not supported")),
    };
    if fortran != "False" {
        return Err(format!(
            "fortran_order is {fortran}; save with np.ascontiguousarray"
        ));
    }
    let dims = parse_shape(shape).ok_or_else(|| format!("cannot parse shape {shape}"))?;
    let (rows, cols) = match dims.as_slice() {
        [n] => (*n, 1),
        [r, c] => (*r, *c),
        other => return Err(format!("shape has {} dimensions, expected 2", other.len())),
    };
    rows.checked_mul(cols)
        .and_then(|c| c.checked_mul(elem))
        .ok_or_else(|| format!("shape ({rows}, {cols}) overflows"))?;
    Ok((elem, rows, cols))
}

/// Decodes `.npy` bytes; `what` names the input in errors.
///
/// # Shapes
/// returns `[rows, cols]`
pub fn decode_npy(bytes: &[u8], what: &str) -> Result<Array2<f32>> {
    let bad = |reason: String| SelectError::BadNpy {
        what: what.to_string(),
        reason,
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing the \\x93NUMPY magic".into()));
    }
    let (header_len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header length".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            bad(format!(
                "header length {header_len} runs past the end of the file"
            ))
        })?;
    let header =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| bad("header is not UTF-8".into()))?;
    let (elem, rows, cols) = parse_header(header).map_err(bad)?;
    let count = rows * cols;
    let data = &bytes[end..];
    if data.len() != count * elem {
        return Err(bad(format!(
            "shape ({rows}, {cols}) needs {} data bytes, file has {}",
            count * elem,
            data.len()
        )));
    }
    let mut values = Vec::with_capacity(count);
    push_values(&mut values, data, elem);
    Array2::from_shape_vec((rows, cols), values).map_err(|e| bad(e.to_string()))
}

/// Writes `.npy` bytes of `matrix` to any writer.
pub fn write_npy_to(w: &mut impl Write, matrix: ArrayView2<'_, f32>) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    encode_npy(&mut bytes, matrix);
    w.write_all(&bytes)
}

/// Finds the raw text of `'key': value` in a numpy header dict.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat_s = format!("'{key}'");
    let pat_d = format!("\"{key}\"");
    let pos = header
        .find(&pat_s)
        .map(|p| p + pat_s.len())
        .or_else(|| header.find(&pat_d).map(|p| p + pat_d.len()))?;
    let rest = header[pos..].trim_start().strip_prefix(':')?.trim_start();
    if rest.starts_with('(') {
        let close = rest.find(')')?;
        Some(&rest[..=close])
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

/// Parses `(3, 4)`, `(3,)` or `()` into dimensions.
fn parse_shape(s: &str) -> Option<Vec<usize>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_end_matches('L').parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(rows in 0usize..12, cols in 0usize..9, seed in any::<u64>()) {
            let mut state = seed;
            let m = Array2::from_shape_fn((rows, cols), |_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                f32::from_bits((state >> 32) as u32 & 0x7f7f_ffff) * if state & 1 == 0 { 1.0 } else { -1.0 }
            });
            let mut bytes = Vec::new();
            encode_npy(&mut bytes, m.view());
            // numpy's rule: the data starts at a multiple of 64 bytes.
            let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            prop_assert_eq!((10 + hl) % 64, 0);
            let back = decode_npy(&bytes, "test").unwrap();
            prop_assert_eq!(back.dim(), (rows, cols));
            for (a, b) in back.iter().zip(m.iter()) {
                prop_assert_eq!(a.to_bits(), b.to_bits());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_npy(&bytes, "garbage");
        }
    }

    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn file_round_trip_and_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.npy");
        let m = Array2::from_shape_fn((5, 3), |(i, j)| i as f32 - 0.25 * j as f32);
        write_npy(&p, m.view()).unwrap();
        assert_eq!(read_npy(&p).unwrap(), m);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(matches!(read_npy(&p), Err(SelectError::BadNpy { .. })));
        std::fs::write(&p, b"\x93NUMPY").unwrap();
        assert!(matches!(read_npy(&p), Err(SelectError::BadNpy { .. })));
    }

    #[test]
    fn reads_f8_and_1d() {
        let data: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b = with_header(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n",
            &data,
        );
        let m = decode_npy(&b, "t").unwrap();
        assert_eq!(m.dim(), (2, 1));
        assert_eq!(m[[1, 0]], -2.0);
    }

    #[test]
    fn bad_headers_are_errors() {
        let f4 = [0u8; 8];
        let cases = [
            with_header(
                "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }\n",
                &f4,
            ),
            with_header(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }\n",
                &f4,
            ),
            with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n",
                &f4,
            ),
            with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2), }\n",
                &f4,
            ),
            with_header("{'descr': '<f4', 'fortran_order': False }\n", &f4),
            b"NOTNPY0000".to_vec(),
        ];
        for (i, c) in cases.iter().enumerate() {
            let err = decode_npy(c, "t").unwrap_err();
            assert!(matches!(err, SelectError::BadNpy { .. }), "case {i}: {err}");
        }
        // header length pointing past the end
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[1, 0, 0xff, 0x00]);
        assert!(decode_npy(&b, "t").is_err());
    }
}
