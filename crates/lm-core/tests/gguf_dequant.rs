//! Bit-exactness of dequantisation against the Python `gguf` package
//! (fixtures from `scripts/gen_gguf_fixtures.py`).

use std::path::PathBuf;

use lm_core::io::gguf::{GgmlType, GgufFile};
use lm_core::model::loader::unpermute_llama_qk;
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

fn assert_bits_eq(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{name}[{i}]: got {g:e}, gguf.quants gives {w:e}"
        );
    }
}

#[test]
fn every_type_is_bit_identical_to_gguf_quants() {
    let f = GgufFile::open(fixture("dequant_reference.gguf")).unwrap();
    let mut checked = Vec::new();
    for t in f.tensors() {
        if t.name.ends_with(".ref") {
            continue;
        }
        let (got, dims) = f.tensor_f32(&t.name).unwrap();
        let (want, want_dims) = f.tensor_f32(&format!("{}.ref", t.name)).unwrap();
        assert_eq!(dims, want_dims, "{}", t.name);
        assert_bits_eq(&t.name, &got, &want);
        // The fixture must exercise the data: not all zeros, and not trivially the raw bytes.
        assert!(got.iter().any(|&x| x != 0.0), "{}: all zeros", t.name);
        checked.push(t.dtype);
    }
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        assert!(checked.contains(&ty), "fixture lacks {ty}");
    }
}

fn model_path() -> Option<PathBuf> {
    lm_core::testing::default_model_if_fetched()
}

fn sha256_f32(x: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in x {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn check_against(name: &str, data: &[f32], dims: &[usize], want: &serde_json::Value) {
    let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
    assert_eq!(dims, shape.as_slice(), "{name}: shape");
    let first: Vec<u32> = serde_json::from_value(want["first64_bits"].clone()).unwrap();
    let got_first: Vec<u32> = data.iter().take(64).map(|x| x.to_bits()).collect();
    assert_eq!(got_first, first, "{name}: first 64 values");
    assert_eq!(
        sha256_f32(data),
        want["sha256"].as_str().unwrap(),
        "{name}: sha256 of all values"
    );
}

#[test]
fn real_smollm2_tensors_are_bit_identical() {
    let Some(path) = model_path() else { return };
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("smollm2_reference.json")).unwrap())
            .unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.tensors().len(), 272);
    let tensors = reference["tensors"].as_object().unwrap();
    let mut types = Vec::new();
    for (name, want) in tensors {
        let info = f.tensor_info(name).unwrap();
        assert_eq!(
            info.dtype.name(),
            want["ggml_type"].as_str().unwrap(),
            "{name}"
        );
        types.push(info.dtype);
        let (data, dims) = f.tensor_f32(name).unwrap();
        check_against(name, &data, &dims, want);
        if let Some(unperm) = want.get("unpermuted") {
            let n_head = want["n_head"].as_u64().unwrap() as usize;
            let hf = unpermute_llama_qk(&data, n_head, dims[0], dims[1]);
            check_against(&format!("{name} unpermuted"), &hf, &dims, unperm);
        }
    }
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::F32] {
        assert!(types.contains(&ty), "reference lacks a {ty} tensor");
    }
}

#[test]
fn every_real_smollm2_tensor_dequantises_to_finite_values() {
    let Some(path) = model_path() else { return };
    let start = std::time::Instant::now();
    let f = GgufFile::open(&path).unwrap();
    let opened = start.elapsed();
    let mut total = 0usize;
    for t in f.tensors() {
        let (data, dims) = f.tensor_f32(&t.name).unwrap();
        assert_eq!(data.len(), dims.iter().product::<usize>(), "{}", t.name);
        assert!(
            data.iter().all(|x| x.is_finite()),
            "{}: non-finite value",
            t.name
        );
        total += data.len();
    }
    // SmolLM2-135M: about 135M parameters (tied embeddings, so no output.weight).
    assert!(
        (130_000_000..140_000_000).contains(&total),
        "{total} parameters"
    );
    eprintln!(
        "opened in {opened:?}, dequantised {total} values in {:?}",
        start.elapsed() - opened
    );
}
