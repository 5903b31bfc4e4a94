//! `openexpert rocket` end to end on the default model and bank, at toy sizes: the run's files
//! and report, reuse of finished stages, `kill -9` inside training then `--resume` giving the
//! same result as an uninterrupted run, one changed option re-running only the stages it
//! touches, and the refusals of bad inputs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openexpert"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("binary runs")
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails_with(cmd: &mut Command, needle: &str) {
    let out = run(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure mentioning {needle:?}"
    );
    assert_ne!(out.status.code(), Some(101), "panicked: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// A small pool: the first rows of three tasks' train splits.
fn write_pool(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for task in ["lcm", "gcd", "products"] {
        let t = std::fs::read_to_string(root().join(format!("assets/datasets/{task}/train.jsonl")))
            .unwrap();
        for line in t.lines().take(30) {
            text.push_str(line);
            text.push('\n');
        }
    }
    let p = dir.join("pool.jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

fn write_config(dir: &Path, pool: &Path) -> PathBuf {
    let r = root();
    let text = format!(
        r#"
[inputs]
kshot = "{kshot}"
k = 4
test = "{test}"
test_limit = 4
bank = "{bank}"
pool = ["{pool}"]

[selection]
experts = 2
shortlist = 3
max_new_tokens = 8

[data]
budget = 12

[train]
lr = 1e-3
epochs = 2
batch_size = 4
grad_accum_steps = 1
checkpoint_every = 1
max_len = 256

[train.lora]
r = 4

[evaluation]
contenders = ["base", "lora", "moe"]
max_new_tokens = 8
bootstrap_resamples = 50
"#,
        kshot = r.join("assets/datasets/lcm/train.jsonl").display(),
        test = r.join("assets/datasets/lcm/eval.jsonl").display(),
        bank = r.join("assets/bank").display(),
        pool = pool.display(),
    );
    let p = dir.join("rocket.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn report(run: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(run.join("report.json")).unwrap()).unwrap()
}

fn comparison(r: &Value) -> Vec<(String, f64, f64)> {
    r["comparison"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["contender"].as_str().unwrap().to_string(),
                row["exact_match"].as_f64().unwrap(),
                row["reasoning_ppl"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn ran_stages(r: &Value) -> Vec<String> {
    r["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["ran"].as_bool().unwrap())
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}

/// The trained mixture's files (router weights and experts), by relative path.
fn trained_mixture(run: &Path) -> Vec<(String, Vec<u8>)> {
    let stages = run.join("stages");
    let dir = std::fs::read_dir(&stages)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("train-moe-")
        })
        .expect("a train-moe stage")
        .join("mixture");
    let mut out = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "safetensors") {
                out.push((
                    p.strip_prefix(&dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn rocket_runs_reuses_resumes_after_kill_and_reruns_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = write_pool(tmp.path());
    let config = write_config(tmp.path(), &pool);
    let a = tmp.path().join("a");

    // An uninterrupted run: every file of the report.
    ok(bin()
        .arg("rocket")
        .arg("--config")
        .arg(&config)
        .arg("--output")
        .arg(&a));
    for f in [
        "config.toml",
        "report.md",
        "report.json",
        "selection.json",
        "bank.svg",
        "comparison.svg",
        "training_loss.svg",
        "routing.svg",
    ] {
        assert!(a.join(f).is_file(), "missing {f}");
    }
    let ra = report(&a);
    let rows = comparison(&ra);
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["base", "lora", "moe"]
    );
    assert_eq!(
        ra["selection"][0]["name"], "base",
        "the selection table starts with the base"
    );
    assert_eq!(ra["chosen"].as_array().unwrap().len(), 2);
    let md = std::fs::read_to_string(a.join("report.md")).unwrap();
    assert!(md.contains("## Result on the held-out test set"), "{md}");
    assert!(md.contains("| base "), "{md}");

    // The same command again reuses every stage.
    ok(bin()
        .arg("rocket")
        .arg("--config")
        .arg(&config)
        .arg("--output")
        .arg(&a));
    assert!(
        ran_stages(&report(&a)).is_empty(),
        "{:?}",
        ran_stages(&report(&a))
    );

    // kill -9 inside the mixture's training, then --resume: the same final result.
    let b = tmp.path().join("b");
    let mut child = bin()
        .arg("rocket")
        .arg("--config")
        .arg(&config)
        .arg("--output")
        .arg(&b)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let work = b.join("stages/.work");
    let start = Instant::now();
    let killed_in_training = loop {
        let has_checkpoint = std::fs::read_dir(&work).ok().is_some_and(|it| {
            it.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("train-moe-")
                    && std::fs::read_dir(e.path().join("checkpoints"))
                        .is_ok_and(|mut c| c.next().is_some())
            })
        });
        if has_checkpoint {
            child.kill().unwrap();
            break true;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(600) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.wait();
    assert!(
        killed_in_training,
        "the run ended before a training checkpoint was seen"
    );
    assert!(!b.join("report.json").exists());
    ok(bin().arg("rocket").arg("--resume").arg("--output").arg(&b));
    let rb = report(&b);
    assert_eq!(
        comparison(&rb),
        rows,
        "resumed run differs from the uninterrupted one"
    );
    assert_eq!(
        trained_mixture(&b),
        trained_mixture(&a),
        "trained mixtures differ"
    );
    assert!(
        !ran_stages(&rb).contains(&"rank".to_string()),
        "rank was finished before the kill"
    );

    // One changed option: another config is refused without --force, and with it only the
    // stages that read the option run again.
    fails_with(
        bin()
            .arg("rocket")
            .arg("--config")
            .arg(&config)
            .args(["--set", "evaluation.max_new_tokens=9"])
            .arg("--output")
            .arg(&a),
        "another config",
    );
    ok(bin()
        .arg("rocket")
        .arg("--config")
        .arg(&config)
        .args(["--set", "evaluation.max_new_tokens=9", "--force"])
        .arg("--output")
        .arg(&a));
    let mut ran = ran_stages(&report(&a));
    ran.sort();
    assert_eq!(ran, ["eval-base", "eval-lora", "eval-moe"]);
}

#[test]
fn rocket_refuses_bad_inputs_before_any_model_work() {
    let tmp = tempfile::tempdir().unwrap();
    let pool = write_pool(tmp.path());
    let config = write_config(tmp.path(), &pool);
    let out = |n: &str| tmp.path().join(n);
    // K-shot items without rationales while reasoning perplexity ranks the bank.
    let bare = tmp.path().join("bare.jsonl");
    std::fs::write(
        &bare,
        "{\"question\": \"lcm of 4 and 6?\", \"answer\": \"12\"}\n",
    )
    .unwrap();
    fails_with(
        bin()
            .arg("rocket")
            .arg("--config")
            .arg(&config)
            .arg("--kshot")
            .arg(&bare)
            .arg("--output")
            .arg(out("r1")),
        "rationale",
    );
    // An empty pool.
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    fails_with(
        bin()
            .arg("rocket")
            .arg("--config")
            .arg(&config)
            .arg("--pool")
            .arg(&empty)
            .arg("--output")
            .arg(out("r2")),
        "found none",
    );
    // A missing input, a typo in the config, an unknown switch.
    fails_with(bin().args(["rocket", "--output"]).arg(out("r3")), "--kshot");
    let typo = tmp.path().join("typo.toml");
    std::fs::write(&typo, "[selection]\nexpert = 3\n").unwrap();
    fails_with(
        bin()
            .arg("rocket")
            .arg("--config")
            .arg(&typo)
            .arg("--output")
            .arg(out("r4")),
        "expert",
    );
    fails_with(
        bin()
            .arg("rocket")
            .arg("--config")
            .arg(&config)
            .args(["--signal", "best"])
            .arg("--output")
            .arg(out("r5")),
        "combined-diversity",
    );
    // --resume of a directory that holds no run.
    fails_with(
        bin()
            .arg("rocket")
            .arg("--resume")
            .arg("--output")
            .arg(out("r6")),
        "no Rocket run",
    );
    // A bank of another base model.
    let other = tmp.path().join("other-bank/x");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "base_model_name_or_path": "other"}"#,
    )
    .unwrap();
    let tensors = {
        let a = vec![0u8; 2 * 1024 * 4];
        let b = vec![0u8; 1024 * 2 * 4];
        let views = vec![
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 1024], &a)
                    .unwrap(),
            ),
            (
                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight".to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1024, 2], &b)
                    .unwrap(),
            ),
        ];
        safetensors::serialize(views, None).unwrap()
    };
    std::fs::write(other.join("adapter_model.safetensors"), tensors).unwrap();
    fails_with(
        bin()
            .arg("rocket")
            .arg("--config")
            .arg(&config)
            .arg("--bank")
            .arg(other.parent().unwrap())
            .args([
                "--set",
                "selection.experts=1",
                "--set",
                "selection.shortlist=1",
                "--set",
                "moe.top_k=1",
            ])
            .arg("--output")
            .arg(out("r7")),
        "another base model",
    );
}
