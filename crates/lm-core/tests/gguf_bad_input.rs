//! Malformed GGUF files are rejected with errors that say what was expected and what was found.

use lm_core::LmError;
use lm_core::io::gguf::{GgmlType, GgufFile, GgufWriter};

/// A valid file: two F32 tensors, with known header layout.
fn valid() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama")
        .add_u32("llama.block_count", 1);
    w.add_tensor_f32("a", &[2, 4], &[1.0; 8]).unwrap();
    w.add_tensor_f32("b", &[4], &[2.0; 4]).unwrap();
    w
}

fn open(bytes: Vec<u8>) -> LmError {
    match GgufFile::from_bytes(bytes, "bad.gguf") {
        Ok(_) => panic!("a malformed file was accepted"),
        Err(e) => e,
    }
}

fn assert_corrupt(e: &LmError, needles: &[&str]) {
    assert!(matches!(e, LmError::Corrupt { .. }), "not Corrupt: {e}");
    let msg = e.to_string();
    assert!(msg.contains("bad.gguf"), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "`{n}` not in: {msg}");
    }
}

/// Offset of the header field `rel_offset` of tensor `name` (last 8 bytes of its info record).
fn tensor_offset_field(bytes: &[u8], name: &str) -> usize {
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(name.as_bytes());
    let start = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len();
    let n_dims = u32::from_le_bytes(bytes[start..start + 4].try_into().unwrap()) as usize;
    start + 4 + 8 * n_dims + 4
}

#[test]
fn the_valid_file_opens() {
    let f = GgufFile::from_bytes(valid().to_bytes(), "ok.gguf").unwrap();
    assert_eq!(f.tensors().len(), 2);
    assert_eq!(f.tensor_info("a").unwrap().dims, vec![2, 4]);
}

#[test]
fn truncated_file() {
    let bytes = valid().to_bytes();
    // Cut inside the tensor data.
    let e = open(bytes[..bytes.len() - 20].to_vec());
    assert_corrupt(&e, &["tensor `b`", "past the end"]);
    // Cut inside the first tensor info.
    let e = open(bytes[..130].to_vec());
    assert_corrupt(&e, &["tensor `a`", "bytes left"]);
    // Cut right after the header: the counts cannot fit.
    let e = open(bytes[..40].to_vec());
    assert_corrupt(
        &e,
        &["2 tensors and 2 metadata entries", "fit in the 16 bytes"],
    );
    // Cut inside the magic.
    let e = open(bytes[..3].to_vec());
    assert_corrupt(&e, &["magic", "only 3 bytes left"]);
}

#[test]
fn header_claims_more_than_the_bytes() {
    let mut bytes = valid().to_bytes();
    bytes[8..16].copy_from_slice(&1_000_000u64.to_le_bytes()); // tensor count
    assert_corrupt(&open(bytes), &["1000000 tensors", "fit in the"]);
    let mut bytes = valid().to_bytes();
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // metadata count
    assert_corrupt(&open(bytes), &["18446744073709551615 metadata entries"]);
    // A string length past the end of the file.
    let mut bytes = valid().to_bytes();
    bytes[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_corrupt(&open(bytes), &["1099511627776 bytes for metadata key #0"]);
    // An array count past the end of the file.
    let mut w = valid();
    w.add_str_array("tokenizer.ggml.tokens", &["x", "y"]);
    let mut bytes = w.to_bytes();
    let key = b"tokenizer.ggml.tokens";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4 + 4;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    assert_corrupt(&open(bytes), &["array length", "1125899906842624 items"]);
}

#[test]
fn tensor_offset_past_the_end() {
    let mut bytes = valid().to_bytes();
    let at = tensor_offset_field(&bytes, "b");
    bytes[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    assert_corrupt(&open(bytes), &["tensor `b`", "past the end"]);
    // An offset so large that offset + size overflows.
    let mut bytes = valid().to_bytes();
    let at = tensor_offset_field(&bytes, "b");
    bytes[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert_corrupt(&open(bytes), &["tensor `b`", "beyond 2^64"]);
}

#[test]
fn overlapping_tensors() {
    let mut bytes = valid().to_bytes();
    let at = tensor_offset_field(&bytes, "b");
    bytes[at..at + 8].copy_from_slice(&0u64.to_le_bytes()); // b now starts where a does
    assert_corrupt(&open(bytes), &["non-overlapping", "`a`", "`b`"]);
}

#[test]
fn misaligned_offset() {
    let mut bytes = valid().to_bytes();
    let at = tensor_offset_field(&bytes, "b");
    bytes[at..at + 8].copy_from_slice(&36u64.to_le_bytes());
    assert_corrupt(&open(bytes), &["multiple of the alignment 32", "offset 36"]);
}

#[test]
fn unknown_ggml_type() {
    let mut bytes = valid().to_bytes();
    let at = tensor_offset_field(&bytes, "b") - 4;
    bytes[at..at + 4].copy_from_slice(&4u32.to_le_bytes()); // id 4 was removed from ggml
    let e = open(bytes);
    assert!(matches!(e, LmError::UnsupportedDtype { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("unknown ggml type id 4") && msg.contains("`b`"),
        "{msg}"
    );
}

#[test]
fn known_but_unsupported_type_fails_only_on_dequantisation() {
    let mut w = valid();
    w.add_tensor_raw("iq", &[256], GgmlType::IQ2_XXS, vec![0; 66])
        .unwrap();
    let f = GgufFile::from_bytes(w.to_bytes(), "bad.gguf").unwrap();
    let e = f.tensor_f32("iq").unwrap_err().to_string();
    assert!(
        e.contains("`iq`") && e.contains("IQ2_XXS") && e.contains("Q4_K"),
        "{e}"
    );
    assert_eq!(f.tensor_bytes("iq").unwrap().len(), 66);
}

#[test]
fn version_1_and_other_versions() {
    let mut bytes = valid().to_bytes();
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_corrupt(&open(bytes), &["version 2 or 3", "version 1"]);
    let mut bytes = valid().to_bytes();
    bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
    assert_corrupt(&open(bytes), &["version 7"]);
    let mut bytes = valid().to_bytes();
    bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_corrupt(&open(bytes), &["big-endian"]);
    let mut w = valid();
    w.set_version(2);
    assert_eq!(
        GgufFile::from_bytes(w.to_bytes(), "v2").unwrap().version(),
        2
    );
}

#[test]
fn zero_dims_and_too_many_dims() {
    let mut bytes = valid().to_bytes();
    let at = tensor_offset_field(&bytes, "b") - 4 - 8; // b's only dim
    bytes[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    assert_corrupt(&open(bytes), &["nonzero dims", "tensor `b`", "[0]"]);
    let mut bytes = valid().to_bytes();
    let at = tensor_offset_field(&bytes, "b") - 4 - 8 - 4; // b's n_dims
    bytes[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    assert_corrupt(&open(bytes), &["1..=4 dims", "9 dims"]);
}

#[test]
fn element_count_overflow() {
    let mut bytes = valid().to_bytes();
    let at = tensor_offset_field(&bytes, "a") - 4 - 16; // a's two dims
    bytes[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    bytes[at + 8..at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_corrupt(&open(bytes), &["element count", "tensor `a`"]);
}

#[test]
fn partial_quant_block_rows() {
    let mut w = GgufWriter::new();
    w.add_tensor_raw("q", &[2, 32], GgmlType::Q8_0, vec![0; 68])
        .unwrap();
    let mut bytes = w.to_bytes();
    let at = tensor_offset_field(&bytes, "q") - 4 - 16; // ne0 (row length)
    bytes[at..at + 8].copy_from_slice(&16u64.to_le_bytes());
    bytes[at + 8..at + 16].copy_from_slice(&4u64.to_le_bytes());
    assert_corrupt(
        &open(bytes),
        &["multiple of the Q8_0 block size 32", "found 16"],
    );
}

#[test]
fn bad_magic_bool_and_value_type() {
    let mut bytes = valid().to_bytes();
    bytes[..4].copy_from_slice(b"GGML");
    assert_corrupt(&open(bytes), &["magic bytes `GGUF`", "GGML"]);
    let mut w = GgufWriter::new();
    w.add_bool("flag", true);
    let mut bytes = w.to_bytes();
    bytes[24 + 8 + 4 + 4] = 7; // header, key length, "flag", type tag, then the bool
    assert_corrupt(&open(bytes), &["a bool (0 or 1)", "byte 7"]);
    let mut bytes = valid().to_bytes();
    let at = 24 + 8 + "general.architecture".len();
    bytes[at..at + 4].copy_from_slice(&13u32.to_le_bytes());
    assert_corrupt(&open(bytes), &["value type tag 0..=12", "tag 13"]);
}

#[test]
fn duplicate_names_and_empty_file() {
    let mut w = GgufWriter::new();
    w.add_tensor_f32("x", &[1], &[1.0]).unwrap();
    w.add_tensor_f32("x", &[1], &[2.0]).unwrap();
    assert_corrupt(&open(w.to_bytes()), &["unique tensor names", "`x` twice"]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.gguf");
    std::fs::write(&p, b"").unwrap();
    let e = GgufFile::open(&p).unwrap_err().to_string();
    assert!(e.contains("empty file"), "{e}");
    let e = GgufFile::open(dir.path().join("absent.gguf")).unwrap_err();
    assert!(matches!(e, LmError::Io { .. }), "{e}");
}
