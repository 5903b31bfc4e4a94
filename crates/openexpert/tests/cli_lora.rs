//! `openexpert lora ...` end to end on the PEFT fixtures of lora-zoo: inspect, combine (the
//! issue's syntax and the `--adapter` spelling), similarity, and refusals with clear messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lora_zoo::LoraAdapter;
use lora_zoo::similarity::{SimilarityReport, delta_similarity, rocket_similarity};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openexpert"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lora-zoo/tests/fixtures/adapters")
        .join(name)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_err(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

const NAMES: [&str; 4] = ["a_qv_r4", "b_mlp_rslora", "c_rank_pattern", "d_qv_r4"];

/// A bank directory with the four fixtures, a card for one, and a broken entry.
fn make_bank() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for n in NAMES {
        let d = dir.path().join(n);
        std::fs::create_dir(&d).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(fixture(n).join(f), d.join(f)).unwrap();
        }
    }
    std::fs::write(
        dir.path().join("a_qv_r4/card.json"),
        r#"{"dataset": "random", "task": "none"}"#,
    )
    .unwrap();
    let broken = dir.path().join("zz_broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("adapter_config.json"), "{oops").unwrap();
    std::fs::create_dir(dir.path().join("not_an_adapter")).unwrap();
    dir
}

#[test]
fn cli_inspect_combine_similarity() {
    let bank_dir = make_bank();
    let out_dir = tempfile::tempdir().unwrap();
    let text = run_ok(
        bin()
            .args(["lora", "inspect"])
            .arg(fixture("c_rank_pattern")),
    );
    assert!(
        text.contains("model.layers.0.self_attn.v_proj") && text.contains("r=6"),
        "{text}"
    );

    let combined = out_dir.path().join("ties");
    run_ok(
        bin()
            .args(["lora", "combine", "--method", "ties", "--adapter"])
            .arg(fixture("a_qv_r4"))
            .arg("--adapter")
            .arg(fixture("d_qv_r4"))
            .args(["--adapter-weight", "0.5", "--adapter-weight", "-0.5"])
            .args(["--rank", "3", "--density", "0.5", "--seed", "0"])
            .args(["--majority-sign", "total", "--lambda", "1", "--output"])
            .arg(&combined),
    );
    let c = LoraAdapter::load(&combined).unwrap();
    assert_eq!(c.modules.len(), 4);
    assert!(c.modules.values().all(|m| m.rank() == 3));
    assert!(combined.join("card.json").is_file());

    let sim = out_dir.path().join("sim.json");
    // the broken entry is skipped; the combined adapter is not in the bank
    run_ok(
        bin()
            .args(["lora", "similarity", "--bank"])
            .arg(bank_dir.path())
            .args(["--mode", "delta", "--output"])
            .arg(&sim),
    );
    let rep: SimilarityReport =
        serde_json::from_str(&std::fs::read_to_string(&sim).unwrap()).unwrap();
    assert_eq!(rep.names, NAMES);
    let a = LoraAdapter::load(&fixture("a_qv_r4")).unwrap();
    let d = LoraAdapter::load(&fixture("d_qv_r4")).unwrap();
    assert!((rep.matrix[0][3] - delta_similarity(&a, &d)).abs() < 1e-6);
    assert!((rep.matrix[0][0] - 4.0).abs() < 1e-6);
    run_ok(
        bin()
            .args(["lora", "similarity", "--bank"])
            .arg(bank_dir.path())
            .args(["--mode", "rocket", "--output"])
            .arg(&sim),
    );
    let rep: SimilarityReport =
        serde_json::from_str(&std::fs::read_to_string(&sim).unwrap()).unwrap();
    assert!((rep.matrix[3][0] - rocket_similarity(&d, &a)).abs() < 1e-6);
    // a (r=4) and c (r=2 / 6) share no same-shape factor
    assert_eq!(rep.matrix[0][2], 0.0);
}

/// The issue's syntax (`--adapters A,B --weights ...`, kept as aliases of `--adapter` /
/// `--adapter-weight`) reaches the library: the card records method, weights and rank.
#[test]
fn cli_parses_the_issue_syntax() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("dt");
    let adapters = format!(
        "{},{}",
        fixture("a_qv_r4").display(),
        fixture("d_qv_r4").display()
    );
    run_ok(
        bin()
            .args(["lora", "combine", "--method", "dare_ties", "--adapters"])
            .arg(&adapters)
            .args(["--weights", "0.7,-0.3", "--rank", "8", "--output"])
            .arg(&out),
    );
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["method"], "dare_ties");
    assert_eq!(card["combined_from"].as_array().unwrap().len(), 2);
    let w: Vec<f64> = serde_json::from_value(card["weights"].clone()).unwrap();
    assert!(
        (w[0] - 0.7).abs() < 1e-6 && (w[1] + 0.3).abs() < 1e-6,
        "{w:?}"
    );
    assert_eq!(card["rank"], 8);

    // an unknown method: a usage error naming the accepted ones, nothing written
    let bad = out_dir.path().join("bad");
    let (o, err) = run_err(
        bin()
            .args(["lora", "combine", "--method", "nope", "--adapter"])
            .arg(fixture("a_qv_r4"))
            .arg("--output")
            .arg(&bad),
    );
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("nope") && err.contains("dare_ties"), "{err}");
    assert!(!bad.exists());
    // one weight per adapter
    let (_, err) = run_err(
        bin()
            .args(["lora", "combine", "--method", "linear", "--adapter"])
            .arg(&adapters)
            .args(["--adapter-weight", "1", "--output"])
            .arg(&bad),
    );
    assert!(err.contains("--adapter-weight"), "{err}");
    // an unknown similarity mode
    let (o, err) = run_err(bin().args([
        "lora",
        "similarity",
        "--bank",
        "B",
        "--mode",
        "cosine",
        "--output",
        "S.json",
    ]));
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("rocket") && err.contains("delta"), "{err}");
}

/// `lora merge --dtype int4` is refused before anything is touched.
#[test]
fn merge_refuses_an_unknown_dtype() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("precious.txt"), b"keep me").unwrap();
    let (_, err) = run_err(
        bin()
            .args(["lora", "merge", "--adapter"])
            .arg(fixture("a_qv_r4"))
            .arg("--output")
            .arg(&out)
            .args(["--dtype", "int4", "--force", "--no-verify"]),
    );
    assert!(err.contains("int4") && err.contains("bf16"), "{err}");
    assert_eq!(std::fs::read(out.join("precious.txt")).unwrap(), b"keep me");
}
