//! `openexpert eval` end to end on the real model (two items, 8 new tokens): the JSON report and
//! the Markdown table are written, a K-shot file without rationales asked for reasoning
//! perplexity is a clear error, and `--adapter` (one combined expert) and `--each-adapter` (one
//! evaluation per adapter) mean what they say.

use std::path::{Path, PathBuf};
use std::process::Command;

fn gguf() -> String {
    lm_core::assets::openexpert_home()
        .join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        .display()
        .to_string()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lora-zoo/tests/fixtures/adapters")
        .join(name)
}

fn eval(task: &Path, output: &Path, metrics: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_openexpert"));
    c.args(["eval", "--model", &gguf(), "--task"])
        .arg(task)
        .args(["--shots", "1", "--seed", "1", "--format", "chat"])
        .args(["--extractor", "answer-is,auto", "--max-new-tokens", "8"])
        .args([
            "--batch-size",
            "4",
            "--bootstrap",
            "50",
            "--metrics",
            metrics,
        ])
        .arg("--output")
        .arg(output);
    c
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_task(dir: &Path) -> PathBuf {
    let task = dir.join("t.jsonl");
    std::fs::write(
        &task,
        "{\"id\":\"a\",\"question\":\"What is 2 + 2?\",\"answer\":\"4\",\"rationale\":\"2 + 2 = 4.\"}\n\
         {\"id\":\"b\",\"question\":\"What is 3 + 3?\",\"answer\":\"6\",\"rationale\":\"3 + 3 = 6.\"}\n\
         {\"id\":\"c\",\"question\":\"What is 1 + 4?\",\"answer\":\"5\",\"rationale\":\"1 + 4 = 5.\"}\n",
    )
    .unwrap();
    task
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn eval_writes_json_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(dir.path());
    let out = dir.path().join("r.json");
    run_ok(&mut eval(&task, &out, "auto"));
    let report = read_json(&out);
    assert_eq!(report["items"], 2);
    assert_eq!(report["shots"], 1);
    let e = &report["evaluations"][0];
    assert_eq!(e["exact_match"]["total"], 2);
    assert_eq!(e["reasoning_ppl"]["per_item"].as_array().unwrap().len(), 2);
    assert!(e["reasoning_ppl"]["mean_ppl"].as_f64().unwrap() > 1.0);
    let md = std::fs::read_to_string(dir.path().join("r.md")).unwrap();
    assert!(md.contains("| base |"), "{md}");

    let bare = dir.path().join("bare.jsonl");
    std::fs::write(
        &bare,
        "{\"question\":\"q1\",\"answer\":\"1\"}\n{\"question\":\"q2\",\"answer\":\"2\"}\n",
    )
    .unwrap();
    let o = eval(&bare, &out, "rppl").output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rationale"), "{err}");
}

#[test]
fn adapter_combines_and_each_adapter_separates() {
    let dir = tempfile::tempdir().unwrap();
    let task = write_task(dir.path());
    let (a, d) = (fixture("a_qv_r4"), fixture("d_qv_r4"));

    let each = dir.path().join("each.json");
    run_ok(
        eval(&task, &each, "rppl")
            .arg("--each-adapter")
            .arg(&a)
            .arg("--each-adapter")
            .arg(&d)
            .arg("--with-base"),
    );
    let each = read_json(&each);
    let names: Vec<&str> = each["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["base", "a_qv_r4", "d_qv_r4"]);

    let combined = dir.path().join("combined.json");
    run_ok(
        eval(&task, &combined, "rppl")
            .arg("--adapter")
            .arg(&a)
            .arg("--adapter")
            .arg(&d)
            .arg("--with-base"),
    );
    let combined = read_json(&combined);
    let evals = combined["evaluations"].as_array().unwrap();
    assert_eq!(evals.len(), 2);
    assert_eq!(evals[0]["name"], "base");
    assert_eq!(evals[1]["name"], "a_qv_r4+d_qv_r4");
    let ppl = |e: &serde_json::Value| e["reasoning_ppl"]["mean_ppl"].as_f64().unwrap();
    // the base is the same model either way; the combination is neither adapter alone
    let base = ppl(&each["evaluations"][0]);
    assert!((ppl(&evals[0]) - base).abs() < 1e-6 * base);
    let mix = ppl(&evals[1]);
    for single in &each["evaluations"].as_array().unwrap()[1..] {
        assert!((mix - ppl(single)).abs() > 1e-9, "{mix} vs {}", ppl(single));
    }

    // the two flags exclude each other
    let o = eval(&task, &dir.path().join("x.json"), "rppl")
        .arg("--adapter")
        .arg(&a)
        .arg("--each-adapter")
        .arg(&d)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--each-adapter") && err.contains("--adapter"),
        "{err}"
    );
}
