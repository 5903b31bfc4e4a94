//! `.npy` reading and writing of 2-D `f32` matrices (embeddings), on the `ndarray-npy` crate.
//!
//! Writes numpy's format (`'<f4'`, C order, version 1.0 headers unless the header needs 2.0, padded so the data
//! starts at a multiple of 64 bytes as numpy does). Reads versions 1, 2 and 3, dtype `'<f4'` (and `'<f8'`,
//! converted to `f32`), C order only, 1-D (read as one column) or 2-D shapes. The header is parsed and the data
//! read by `ndarray-npy`; this module adds the checks that make a bad file a clear [`SelectError::BadNpy`] naming
//! the file (the data length is checked against the file before anything is allocated for it).

use std::io::{BufWriter, Read, Seek, Write};
use std::path::Path;

use ndarray::{Array2, ArrayView2};
use ndarray_npy::npy::header::{Header, ReadHeaderError};
use ndarray_npy::{ReadDataError, ReadableElement, WriteNpyExt};
use py_literal::Value as PyValue;

use crate::error::{BoxError, Result, SelectError};

/// Writes `matrix` as a `.npy` (`'<f4'`, C order), atomically (a temporary sibling renamed over `path`).
///
/// # Shapes
/// `matrix: [rows, cols]`
pub fn write_npy(path: &Path, matrix: ArrayView2<'_, f32>) -> Result<()> {
    Ok(atomic_fs::write_atomic_with(path, |f| {
        write_npy_to(&mut BufWriter::with_capacity(1 << 20, f), matrix)
    })?)
}

/// Encodes `matrix` as `.npy` bytes into `out`.
///
/// # Shapes
/// `matrix: [rows, cols]`
pub fn encode_npy(out: &mut Vec<u8>, matrix: ArrayView2<'_, f32>) {
    out.reserve(128 + matrix.len() * 4);
    write_npy_to(out, matrix).expect("writing to a Vec cannot fail");
}

/// Writes `.npy` bytes of `matrix` (`'<f4'`, C order) to any writer.
///
/// # Shapes
/// `matrix: [rows, cols]`
pub fn write_npy_to(w: &mut impl Write, matrix: ArrayView2<'_, f32>) -> std::io::Result<()> {
    // ndarray-npy writes a Fortran-ordered header for column-major views; keep the files C order.
    matrix
        .as_standard_layout()
        .write_npy(w)
        .map_err(std::io::Error::other)
}

/// Reads a `.npy` file into an `f32` matrix. The data is read straight into the matrix (peak memory is the
/// matrix; for `'<f8'` files the f64 data as well).
///
/// # Shapes
/// returns `[rows, cols]`; a 1-D file of length `n` is returned as `[n, 1]`.
pub fn read_npy(path: &Path) -> Result<Array2<f32>> {
    let mut file = std::fs::File::open(path).map_err(|e| SelectError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| SelectError::io(path, e))?.len();
    decode_from(
        &mut file,
        |f| Ok(file_len.saturating_sub(f.stream_position()?)),
        &path.display().to_string(),
        |e| SelectError::io(path, e),
    )
}

/// Decodes `.npy` bytes; `what` names the input in errors.
///
/// # Shapes
/// returns `[rows, cols]`
pub fn decode_npy(bytes: &[u8], what: &str) -> Result<Array2<f32>> {
    let mut reader = bytes;
    decode_from(
        &mut reader,
        |r| Ok(r.len() as u64),
        what,
        |e| SelectError::BadNpy {
            what: what.to_string(),
            reason: "cannot read the data".into(),
            source: Some(e.into()),
        },
    )
}

/// The shared reader: header by `ndarray-npy`, checks, then the data by `ndarray-npy`.
/// `data_len` tells how many bytes follow the header; `io` turns an I/O error into this crate's error.
fn decode_from<R: Read>(
    r: &mut R,
    data_len: impl FnOnce(&mut R) -> std::io::Result<u64>,
    what: &str,
    io: impl Fn(std::io::Error) -> SelectError,
) -> Result<Array2<f32>> {
    let bad = |reason: String, source: Option<BoxError>| SelectError::BadNpy {
        what: what.to_string(),
        reason,
        source,
    };
    let header = match Header::from_reader(r) {
        Ok(h) => h,
        Err(ReadHeaderError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(bad(
                "the file ends inside the header".into(),
                Some(e.into()),
            ));
        }
        Err(ReadHeaderError::Io(e)) => return Err(io(e)),
        Err(e @ ReadHeaderError::Parse(_)) => {
            return Err(bad("cannot parse the header".into(), Some(e.into())));
        }
    };
    let elem = match &header.type_descriptor {
        PyValue::String(s) if s == "<f4" => 4,
        PyValue::String(s) if s == "<f8" => 8,
        other => return Err(bad(format!("dtype {other} is not supported"), None)),
    };
    if header.layout.is_fortran() {
        return Err(bad(
            "fortran_order is True; save with np.ascontiguousarray".into(),
            None,
        ));
    }
    let (rows, cols) = match header.shape.as_slice() {
        [n] => (*n, 1),
        [r, c] => (*r, *c),
        other => {
            return Err(bad(
                format!("shape has {} dimensions, expected 2", other.len()),
                None,
            ));
        }
    };
    let count = rows.checked_mul(cols);
    let bytes = count.and_then(|c| c.checked_mul(elem));
    let (Some(count), Some(bytes)) = (count, bytes) else {
        return Err(bad(format!("shape ({rows}, {cols}) overflows"), None));
    };
    let have = data_len(r).map_err(&io)?;
    if have != bytes as u64 {
        return Err(bad(
            format!("shape ({rows}, {cols}) needs {bytes} data bytes, file has {have}"),
            None,
        ));
    }
    let data = |e: ReadDataError| match e {
        ReadDataError::Io(e) => io(e),
        e => bad("cannot read the data".into(), Some(e.into())),
    };
    let values: Vec<f32> = if elem == 4 {
        f32::read_to_end_exact_vec(r, &header.type_descriptor, count).map_err(data)?
    } else {
        f64::read_to_end_exact_vec(r, &header.type_descriptor, count)
            .map_err(data)?
            .into_iter()
            .map(|v| v as f32)
            .collect()
    };
    Array2::from_shape_vec((rows, cols), values).map_err(|e| bad(e.to_string(), Some(e.into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAGIC: &[u8; 6] = b"\x93NUMPY";

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
    fn truncated_wrong_dtype_and_oversized_files_are_clear_errors() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("emb.npy");
        let m = Array2::from_shape_fn((7, 4), |(i, j)| i as f32 * 0.5 - j as f32);
        write_npy(&p, m.view()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes.len(), 128 + 7 * 4 * 4);
        let name = p.display().to_string();
        for cut in [
            0,
            3,
            6,
            9,
            10,
            40,
            127,
            128,
            129,
            bytes.len() - 4,
            bytes.len() - 1,
        ] {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let err = read_npy(&p).unwrap_err();
            assert!(
                matches!(err, SelectError::BadNpy { .. }),
                "cut {cut}: {err}"
            );
            assert!(err.to_string().contains(&name), "cut {cut}: {err}");
        }
        // one byte too many is an error as well
        let mut long = bytes.clone();
        long.push(0);
        std::fs::write(&p, &long).unwrap();
        assert!(matches!(read_npy(&p), Err(SelectError::BadNpy { .. })));
        // a file cut inside the header keeps the reader's error as its source
        std::fs::write(&p, &bytes[..40]).unwrap();
        assert!(read_npy(&p).unwrap_err().source().is_some());
        // a header that does not parse keeps the parser's error as its source
        let garbled = with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, }\n",
            &[0; 8],
        );
        std::fs::write(&p, &garbled).unwrap();
        let err = read_npy(&p).unwrap_err();
        assert!(
            matches!(err, SelectError::BadNpy { .. }) && err.source().is_some(),
            "{err}"
        );
        for (descr, data) in [("<i4", 8), ("<f2", 4), (">f4", 8), ("|u1", 2), ("<c8", 16)] {
            let h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (2,), }}\n");
            std::fs::write(&p, with_header(&h, &vec![0; data])).unwrap();
            let err = read_npy(&p).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, SelectError::BadNpy { .. }), "{descr}: {msg}");
            assert!(
                msg.contains(&name) && msg.contains("dtype"),
                "{descr}: {msg}"
            );
        }
        // a shape far larger than the file is refused before anything is allocated for it
        for shape in [
            "(1099511627776, 1048576)",
            "(18446744073709551615, 2)",
            "(1000000000000,)",
        ] {
            let h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
            std::fs::write(&p, with_header(&h, &[0; 16])).unwrap();
            let err = read_npy(&p).unwrap_err();
            assert!(matches!(err, SelectError::BadNpy { .. }), "{shape}: {err}");
            assert!(decode_npy(&with_header(&h, &[0; 16]), "bytes").is_err());
        }
    }

    #[test]
    fn writes_c_order_for_any_layout() {
        let m = Array2::from_shape_fn((3, 5), |(i, j)| (i * 10 + j) as f32);
        let mut c = Vec::new();
        encode_npy(&mut c, m.t());
        let mut f = Vec::new();
        encode_npy(&mut f, m.t().as_standard_layout().view());
        assert_eq!(c, f);
        assert!(
            std::str::from_utf8(&c[10..128])
                .unwrap()
                .contains("'fortran_order': False")
        );
        assert_eq!(decode_npy(&c, "t").unwrap(), m.t());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/t.npy");
        write_npy(&p, m.slice(ndarray::s![.., ..;2])).unwrap();
        assert_eq!(read_npy(&p).unwrap(), m.slice(ndarray::s![.., ..;2]));
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
