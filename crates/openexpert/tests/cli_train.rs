//! `openexpert train` end to end on SmolLM2: a run killed with SIGKILL mid-training and resumed
//! with `--resume` writes the same adapter as an uninterrupted run; clear errors on bad input.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openexpert"))
}

fn write_data(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("train.jsonl");
    let words = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree"];
    let lines: Vec<String> = (0..16)
        .map(|i| {
            let w = [words[i % 8], words[(i * 3 + 1) % 8], words[(i * 5 + 2) % 8]];
            serde_json::json!({
                "question": format!("Reverse the words: {}", w.join(" ")),
                "answer": format!("{} {} {}", w[2], w[1], w[0]),
            })
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn train_cmd(data: &Path, out: &Path) -> Command {
    let mut c = bin();
    c.args(["train", "--data"])
        .arg(data)
        .arg("--output")
        .arg(out)
        .args([
            "--max-steps",
            "6",
            "--batch-size",
            "2",
            "--checkpoint-every",
            "2",
            "--lr",
            "2e-3",
            "--lora-dropout",
            "0.1",
        ]);
    c
}

#[test]
fn a_killed_training_run_resumes_to_the_same_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());

    let full = tmp.path().join("full");
    let out = train_cmd(&data, &full).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let killed = tmp.path().join("killed");
    let mut child = train_cmd(&data, &killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let marker = killed.join("checkpoints/step-000002/state.json");
    while !marker.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(!killed.join("adapter_model.safetensors").exists());

    let err = train_cmd(&data, &killed).output().unwrap();
    assert!(
        !err.status.success(),
        "a second run without --resume is refused"
    );
    assert!(String::from_utf8_lossy(&err.stderr).contains("--resume"));

    let out = train_cmd(&data, &killed).arg("--resume").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = std::fs::read(full.join("adapter_model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("adapter_model.safetensors")).unwrap();
    assert!(a == b, "resumed adapter differs from the uninterrupted one");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("train_report.json")).unwrap())
            .unwrap();
    assert!(report["resumed_from"].as_u64().unwrap() >= 2);
}

#[test]
fn bad_training_data_is_reported_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"question\": \"q\", \"answer\": \"a\"}\n{not json\n",
    )
    .unwrap();
    let out = train_cmd(&data, &tmp.path().join("o")).output().unwrap();
    assert!(!out.status.success());
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("bad.jsonl:2"), "{msg}");
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let out = train_cmd(&empty, &tmp.path().join("o2")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least one"));
}
