//! `select evolve` killed with SIGKILL at several points (inside round 0's training, then inside
//! round 1's training after a resume) and resumed each time: the final picks, the selected data
//! and every round's adapter equal an uninterrupted run's, and no half-written file is visible.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn datasets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/datasets")
}

/// The first `per_task` training items of five tasks.
fn pool(dir: &Path) -> PathBuf {
    let mut out = String::new();
    for task in ["chain_sum", "gcd", "lcm", "products", "syllogism"] {
        let t = std::fs::read_to_string(datasets().join(task).join("train.jsonl")).unwrap();
        for line in t.lines().take(4) {
            out.push_str(line);
            out.push('\n');
        }
    }
    let p = dir.join("pool.jsonl");
    std::fs::write(&p, out).unwrap();
    p
}

fn evolve(pool: &Path, run: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openexpert"));
    cmd.args(["select", "evolve", "--pool"])
        .arg(pool)
        .arg("--output")
        .arg(run)
        .args([
            "--init",
            "4",
            "--per-round",
            "4",
            "--rounds",
            "1",
            "--max-steps",
            "4",
            "--batch-size",
            "2",
            "--lr",
            "1e-3",
            "--max-len",
            "96",
            "--checkpoint-every",
            "1",
        ]);
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

/// Runs `cmd` and SIGKILLs it as soon as `ready` holds; returns false if it finished first.
fn kill_when(mut cmd: Command, ready: impl Fn() -> bool) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if ready() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether round `t`'s training has written a checkpoint.
fn checkpointed(run: &Path, t: usize) -> bool {
    std::fs::read_dir(run.join(format!("rd_{t}/checkpoints")))
        .is_ok_and(|mut it| it.next().is_some())
}

/// Every regular file of the run that defines its result, with its bytes.
fn results(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in ["rd_0_labeled.json", "rd_1_labeled.json"] {
        // The picks, not the timings recorded next to them.
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join(name)).unwrap()).unwrap();
        let picks = serde_json::to_vec(&(&v["picks"], &v["labeled"])).unwrap();
        out.push((name.to_string(), picks));
    }
    out.push((
        "selected.jsonl".into(),
        std::fs::read(run.join("selected.jsonl")).unwrap(),
    ));
    for t in 0..=1 {
        let p = run.join(format!("rd_{t}/adapter/adapter_model.safetensors"));
        out.push((
            p.display()
                .to_string()
                .replace(&run.display().to_string(), ""),
            std::fs::read(p).unwrap(),
        ));
    }
    out
}

fn no_partial_files(run: &Path) {
    let mut stack = vec![run.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !(name.ends_with(".tmp") && e.path().is_file()),
                "a half-written file is visible: {}",
                e.path().display()
            );
            if e.path().is_dir() && !name.starts_with('.') {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn evolve_killed_twice_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = pool(tmp.path());
    let full = tmp.path().join("full");
    let out = evolve(&pool, &full, false).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = tmp.path().join("killed");
    assert!(
        kill_when(evolve(&pool, &run, false), || checkpointed(&run, 0)),
        "the run finished before round 0 checkpointed"
    );
    assert!(!run.join("selected.jsonl").exists());
    no_partial_files(&run);
    assert!(
        kill_when(evolve(&pool, &run, true), || checkpointed(&run, 1)),
        "the resumed run finished before round 1 checkpointed"
    );
    no_partial_files(&run);
    let out = evolve(&pool, &run, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_partial_files(&run);
    let (a, b) = (results(&full), results(&run));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs after two kills and resumes");
    }
}
