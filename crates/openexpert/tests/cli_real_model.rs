//! The CLI end to end on the default models, against the PyTorch fixtures of lm-core:
//! `score --dump-logits` and `embed` outputs, `generate --chat`, and clear errors on bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openexpert"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lm-core/tests/fixtures")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("binary runs");
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read_f32_tensor(path: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    let v = t
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (v, t.shape().to_vec())
}

#[test]
fn score_dump_logits_matches_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let reference = read_json(&fixtures().join("smollm2/reference.json"));
    let prompts = reference["prompts"].as_array().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = prompts
        .iter()
        .map(|p| serde_json::json!({"text": p["text"]}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = dir.path().join("out.jsonl");
    let logits = dir.path().join("last.safetensors");
    run_ok(
        bin()
            .args(["score", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .arg("--dump-logits")
            .arg(&logits),
    );
    let (got, shape) = read_f32_tensor(&logits, "logits");
    let (want, want_shape) = read_f32_tensor(
        &fixtures().join("smollm2/last_logits.safetensors"),
        "logits",
    );
    assert_eq!(shape, want_shape);
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-3, "last logits max diff {diff}");
    let rows: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (row, p) in rows.iter().zip(prompts) {
        let want: f64 = p["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum();
        let n = p["ids"].as_array().unwrap().len() - 1;
        assert_eq!(row["n_tokens"].as_u64().unwrap() as usize, n);
        assert!((row["logprob"].as_f64().unwrap() - want).abs() < 1e-3 * n as f64);
        let ppl = (-row["logprob"].as_f64().unwrap() / n as f64).exp();
        assert!((row["ppl"].as_f64().unwrap() - ppl).abs() < 1e-9 * ppl);
        assert_eq!(row["text"], p["text"]);
    }
}

#[test]
fn embed_matches_sentence_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let reference = read_json(&fixtures().join("minilm/reference.json"));
    let sentences = reference["sentences"].as_array().unwrap();
    let input = dir.path().join("in.jsonl");
    let lines: Vec<String> = sentences
        .iter()
        .map(|s| serde_json::json!({"text": s}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let output = dir.path().join("e.npy");
    run_ok(
        bin()
            .args(["embed", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output),
    );
    let bytes = std::fs::read(&output).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(
        header.contains(&format!("'shape': ({}, 384)", sentences.len())),
        "{header}"
    );
    let values: Vec<f32> = bytes[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for (i, want) in reference["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let want: Vec<f32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let got = &values[i * 384..(i + 1) * 384];
        let cos: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        assert!(cos > 0.9999, "sentence {i}: cosine {cos}");
    }
}

#[test]
fn generate_answers_in_chat_mode() {
    let out = run_ok(bin().args([
        "generate",
        "--prompt",
        "What is the capital of France?",
        "--chat",
    ]));
    assert_eq!(out.trim(), "The capital of France is Paris.");
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(&input, "{\"text\": \"ok\"}\n{\"txt\": \"wrong key\"}\n").unwrap();
    let out = bin()
        .args(["score", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("o.jsonl"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("row 2") && err.contains("`text`"), "{err}");

    let out = bin()
        .args(["generate", "--model", "no-such-model", "--prompt", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-model"), "{err}");

    let corrupt = dir.path().join("corrupt.gguf");
    std::fs::write(&corrupt, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let out = bin()
        .args(["generate", "--model"])
        .arg(&corrupt)
        .args(["--prompt", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt GGUF"), "{err}");
}

#[test]
fn adapters_change_scores_and_weight_zero_is_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"text\": \"The quick brown fox jumps over the lazy dog.\"}\n",
    )
    .unwrap();
    let adapter = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lora-zoo/tests/fixtures/adapters/b_mlp_rslora");
    let logprob = |extra: &[&str], name: &str| -> f64 {
        let out = dir.path().join(name);
        let mut cmd = bin();
        cmd.args(["score", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .args(extra);
        run_ok(&mut cmd);
        let row: Value = serde_json::from_str(
            std::fs::read_to_string(&out)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        row["logprob"].as_f64().unwrap()
    };
    let a = adapter.to_str().unwrap();
    let base = logprob(&[], "base.jsonl");
    let with = logprob(&["--adapter", a], "with.jsonl");
    let zero = logprob(&["--adapter", a, "--adapter-weight", "0"], "zero.jsonl");
    assert!(
        (with - base).abs() > 1e-3,
        "the adapter changed nothing: {with} vs {base}"
    );
    assert!(
        (zero - base).abs() < 1e-4,
        "weight 0 should be the base: {zero} vs {base}"
    );
}
