//! `openexpert select evolve` end to end on SmolLM2-135M-Instruct: a small mixed-task pool from
//! assets/datasets, one k-center round after the random start, a couple of LoRA steps per round;
//! then a crash (round 1's completion removed) and `--resume`, which must keep round 0, read
//! round 1's picks back and reproduce the same selection.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn datasets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/datasets")
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The first `per_task` training items of every task, task by task.
fn mixed_pool(per_task: usize) -> String {
    let mut tasks: Vec<PathBuf> = std::fs::read_dir(datasets())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("train.jsonl")))
        .filter(|p| p.exists())
        .collect();
    tasks.sort();
    assert!(tasks.len() >= 5, "assets/datasets has the bank's tasks");
    let mut out = String::new();
    for t in tasks {
        for line in std::fs::read_to_string(t).unwrap().lines().take(per_task) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn evolve(pool: &Path, run: &Path, resume: bool) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openexpert"));
    cmd.args(["select", "evolve", "--pool"])
        .arg(pool)
        .arg("--output")
        .arg(run)
        .args([
            "--init",
            "6",
            "--per-round",
            "6",
            "--rounds",
            "1",
            "--max-steps",
            "1",
            "--batch-size",
            "6",
            "--lr",
            "1e-3",
            "--max-len",
            "96",
        ]);
    if resume {
        cmd.arg("--resume");
    }
    cmd.output().expect("the binary runs")
}

#[test]
fn evolve_runs_two_rounds_on_smollm2_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, mixed_pool(2)).unwrap();
    let n = std::fs::read_to_string(&pool).unwrap().lines().count();
    let run = dir.path().join("run");

    let out = evolve(&pool, &run, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let p0 = read_json(&run.join("rd_0_labeled.json"));
    let p1 = read_json(&run.join("rd_1_labeled.json"));
    assert_eq!(p0["strategy"], "random");
    assert_eq!(p1["strategy"], "kcenter");
    let picks1: Vec<u64> = p1["picks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let labeled: Vec<u64> = p1["labeled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(picks1.len(), 6);
    assert_eq!(labeled.len(), 12);
    let mut distinct = labeled.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 12, "picks are new items");
    assert!(labeled.iter().all(|&i| (i as usize) < n));
    // k-center distances are non-increasing and positive (the embeddings are real)
    let d: Vec<f64> = p1["pick_distances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(d.windows(2).all(|w| w[1] <= w[0] + 1e-6), "{d:?}");
    assert!(d[d.len() - 1] > 0.0);
    for t in 0..=1 {
        let rd = run.join(format!("rd_{t}"));
        assert!(rd.join("adapter/adapter_model.safetensors").exists());
        assert!(rd.join("adapter/adapter_config.json").exists());
        let record = read_json(&rd.join("round.json"));
        assert_eq!(record["train"]["steps"], 1);
        assert!(
            record["train"]["final_train_loss"]
                .as_f64()
                .unwrap()
                .is_finite()
        );
    }
    let selected = std::fs::read_to_string(run.join("selected.jsonl")).unwrap();
    assert_eq!(selected.lines().count(), 12);
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["finished"], true);

    // Without --resume the directory is refused.
    let again = evolve(&pool, &run, false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));

    // Crash at the end of round 1's training: its completion marker is gone, its picks and its
    // last training checkpoint are on disk, so the resumed round trains no step again.
    let picks_before = std::fs::read(run.join("rd_1_labeled.json")).unwrap();
    let round0_before = std::fs::read(run.join("rd_0/round.json")).unwrap();
    let adapter_before = std::fs::read(run.join("rd_1/adapter/adapter_model.safetensors")).unwrap();
    std::fs::remove_file(run.join("rd_1/round.json")).unwrap();
    let resumed = evolve(&pool, &run, true);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("round 0") && stderr.contains("(done earlier)"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(run.join("rd_0/round.json")).unwrap(),
        round0_before,
        "round 0 is not retrained"
    );
    assert_eq!(
        std::fs::read(run.join("rd_1_labeled.json")).unwrap(),
        picks_before
    );
    let record1 = read_json(&run.join("rd_1/round.json"));
    assert_eq!(record1["picks_resumed"], true);
    assert_eq!(record1["train"]["resumed_from_step"], 1);
    assert_eq!(
        std::fs::read(run.join("rd_1/adapter/adapter_model.safetensors")).unwrap(),
        adapter_before,
        "the resumed round ends with the same adapter"
    );
    assert_eq!(
        std::fs::read_to_string(run.join("selected.jsonl")).unwrap(),
        selected
    );
}
