//! `openexpert select evolve --test` end to end on SmolLM2-135M-Instruct with a tiny slice of
//! real data (basic_arithmetic: 24 training items as the pool, its eval split as the test set):
//! every round of the k-center run and of the random baseline is evaluated, the baseline has the
//! same sizes per round and the same round 0, the report files are written, and `--resume`
//! re-evaluates nothing. Then the error paths (missing / empty test file) and the overlap
//! warning.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn task_file(split: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/datasets/basic_arithmetic")
        .join(format!("{split}.jsonl"))
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn labeled_len(run: &Path, round: usize) -> usize {
    read_json(&run.join(format!("rd_{round}_labeled.json")))["labeled"]
        .as_array()
        .unwrap()
        .len()
}

/// Runs `select evolve --test` with tiny sizes; a flag in `extra` replaces the default one.
fn evolve(pool: &Path, test: &Path, run: &Path, extra: &[&str]) -> Output {
    let defaults = [
        ("--init", "4"),
        ("--per-round", "4"),
        ("--rounds", "1"),
        ("--test-limit", "4"),
        ("--max-new-tokens", "8"),
        ("--epochs", "1"),
        ("--batch-size", "4"),
        ("--max-len", "96"),
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_openexpert"));
    cmd.args(["select", "evolve", "--pool"])
        .arg(pool)
        .arg("--output")
        .arg(run)
        .arg("--test")
        .arg(test);
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            cmd.args([flag, value]);
        }
    }
    cmd.args(extra).output().expect("the binary runs")
}

fn head(path: &Path, n: usize) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .take(n)
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn evolve_with_a_test_set_compares_kcenter_with_random_per_round() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, head(&task_file("train"), 24)).unwrap();
    let run = dir.path().join("run");
    let out = evolve(&pool, &task_file("eval"), &run, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("also appear in the pool"), "{stderr}");

    let random = run.join("random");
    for (r, strategy) in [(&run, "kcenter"), (&random, "random")] {
        for t in 0..=1 {
            let e = read_json(&r.join(format!("rd_{t}/test_eval.json")));
            assert_eq!(e["round"], t, "{strategy} round {t}");
            assert_eq!(e["items"], 4);
            assert_eq!(
                e["evaluation"]["exact_match"]["per_item"]
                    .as_array()
                    .unwrap()
                    .len(),
                4
            );
            let acc = e["accuracy"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&acc));
            assert!(e["stderr"].as_f64().unwrap() >= 0.0);
            // basic_arithmetic has rationales: reasoning perplexity too
            assert!(e["reasoning_ppl"].as_f64().unwrap().is_finite());
        }
        let p1 = read_json(&r.join("rd_1_labeled.json"));
        assert_eq!(p1["strategy"], strategy);
        assert!(r.join("selected.jsonl").exists());
    }
    // The random run: the same sizes per round, and the very same round 0.
    for t in 0..=1 {
        assert_eq!(labeled_len(&run, t), labeled_len(&random, t), "round {t}");
    }
    assert_eq!(labeled_len(&run, 1), 8);
    assert_eq!(
        read_json(&run.join("rd_0_labeled.json"))["labeled"],
        read_json(&random.join("rd_0_labeled.json"))["labeled"]
    );
    assert_eq!(
        std::fs::read(run.join("rd_0/adapter/adapter_model.safetensors")).unwrap(),
        std::fs::read(random.join("rd_0/adapter/adapter_model.safetensors")).unwrap()
    );

    let report = read_json(&run.join("report.json"));
    assert_eq!(report["run_strategy"], "kcenter");
    assert_eq!(report["baseline_strategy"], "random");
    assert_eq!(report["test"]["items"], 4);
    assert_eq!(report["test"]["file_items"], 100);
    assert_eq!(report["test"]["overlap_with_pool"], 0);
    assert!(report["base"]["accuracy"].as_f64().is_some());
    let rows = report["rounds"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!(row["run"]["labeled"], row["baseline"]["labeled"]);
        assert!(row["difference"].as_f64().is_some());
    }
    assert_eq!(rows[0]["difference"], 0.0, "round 0 is shared");
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    for needle in [
        "k-center acc",
        "random acc",
        "Δ (k-center − random)",
        "evolve_accuracy.svg",
    ] {
        assert!(md.contains(needle), "{needle:?} not in\n{md}");
    }
    let svg = std::fs::read_to_string(run.join("evolve_accuracy.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("k-center") && svg.contains("random"));

    // --resume: nothing trained or evaluated again, the report rewritten from the stored files.
    let stored = std::fs::read(run.join("rd_1/test_eval.json")).unwrap();
    let stored_base = std::fs::read(run.join("base_test_eval.json")).unwrap();
    std::fs::remove_file(run.join("report.md")).unwrap();
    let again = evolve(&pool, &task_file("eval"), &run, &["--resume"]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert_eq!(stderr.matches("(done earlier)").count(), 4, "{stderr}");
    assert_eq!(
        std::fs::read(run.join("rd_1/test_eval.json")).unwrap(),
        stored
    );
    assert_eq!(
        std::fs::read(run.join("base_test_eval.json")).unwrap(),
        stored_base
    );
    assert!(run.join("report.md").exists());
}

#[test]
fn bad_test_files_fail_early_and_overlap_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool.jsonl");
    std::fs::write(&pool, head(&task_file("train"), 12)).unwrap();

    let missing = dir.path().join("missing.jsonl");
    let out = evolve(&pool, &missing, &dir.path().join("a"), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing.jsonl") && stderr.contains("no such file"),
        "{stderr}"
    );
    assert!(!dir.path().join("a").exists(), "nothing written");

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let out = evolve(&pool, &empty, &dir.path().join("b"), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("empty.jsonl"), "{stderr}");

    // The pool as its own test set: every test item overlaps; warned and reported.
    let run = dir.path().join("c");
    let out = evolve(
        &pool,
        &pool,
        &run,
        &["--rounds", "0", "--no-baseline", "--test-limit", "3"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: 3 of the 3 --test items also appear in the pool"),
        "{stderr}"
    );
    let report = read_json(&run.join("report.json"));
    assert_eq!(report["test"]["overlap_with_pool"], 3);
    assert_eq!(report["baseline_strategy"], Value::Null);
    assert!(!run.join("random").exists());
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("also appear in the pool"), "{md}");
    assert!(!md.contains("random acc"), "{md}");
}
