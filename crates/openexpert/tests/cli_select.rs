//! `openexpert select kcenter | retrieve | random | kmeans | vendi` end to end on small matrices
//! (no model: retrieval gets precomputed embeddings).

use std::path::Path;
use std::process::Command;

use data_select::npy::write_npy;
use ndarray::Array2;

fn select(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_openexpert"))
        .arg("select")
        .args(args)
        .output()
        .unwrap()
}

fn run_ok(args: &[&str]) -> String {
    let out = select(args);
    assert!(
        out.status.success(),
        "select {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn run_err(args: &[&str]) -> String {
    let out = select(args);
    assert!(!out.status.success(), "select {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn read_picks(p: &Path) -> Vec<usize> {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn kcenter_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let m = ndarray::array![[0.0f32], [1.0], [2.0], [10.0], [11.0]];
    write_npy(Path::new(&s("e.npy")), m.view()).unwrap();
    std::fs::write(s("l.json"), "[0]").unwrap();
    let args = [
        "kcenter",
        "--embeddings",
        &s("e.npy"),
        "--labeled",
        &s("l.json"),
        "--k",
        "2",
        "--output",
        &s("p.json"),
        "--report",
        &s("rep.json"),
    ];
    run_ok(&args);
    assert_eq!(read_picks(Path::new(&s("p.json"))), vec![4, 2]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s("rep.json")).unwrap()).unwrap();
    assert_eq!(report["picks"], serde_json::json!([4, 2]));
    // mask form of the labelled file, eager strategy and cosine metric parse
    std::fs::write(s("l.json"), "[true, false, false, false, false]").unwrap();
    let mut eager = args.to_vec();
    eager.extend(["--strategy", "eager"]);
    run_ok(&eager);
    assert_eq!(read_picks(Path::new(&s("p.json"))), vec![4, 2]);
    let mut cosine = args.to_vec();
    cosine.extend(["--metric", "cosine"]);
    run_ok(&cosine);
    // a mask of the wrong length, an index out of range, an unknown metric
    std::fs::write(s("l.json"), "[true, false]").unwrap();
    let err = run_err(&args);
    assert!(err.contains("mask") && err.contains("l.json"), "{err}");
    std::fs::write(s("l.json"), "[7]").unwrap();
    let err = run_err(&args);
    assert!(err.contains('7') && err.contains("l.json"), "{err}");
    std::fs::write(s("l.json"), "[0]").unwrap();
    let mut bad = args.to_vec();
    bad.extend(["--metric", "manhattan"]);
    let err = run_err(&bad);
    assert!(err.contains("euclidean") && err.contains("cosine"), "{err}");
}

#[test]
fn retrieve_end_to_end_with_precomputed_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pool = "{\"instruction\": \"a\", \"output\": \"1\"}\n{\"instruction\": \"b\", \"output\": \"2\"}\n{\"instruction\": \"c\", \"output\": \"3\"}\n";
    std::fs::write(d.join("pool.jsonl"), pool).unwrap();
    std::fs::write(
        d.join("k.jsonl"),
        "{\"instruction\": \"q\", \"output\": \"0\"}\n",
    )
    .unwrap();
    write_npy(
        &d.join("pe.npy"),
        ndarray::array![[0.0f32, 1.0], [1.0, 0.0], [0.99, 0.05]].view(),
    )
    .unwrap();
    write_npy(&d.join("ke.npy"), ndarray::array![[1.0f32, 0.0]].view()).unwrap();
    let s = |n: &str| d.join(n).to_str().unwrap().to_string();
    let args = [
        "retrieve",
        "--pool",
        &s("pool.jsonl"),
        "--kshot",
        &s("k.jsonl"),
        "--budget",
        "3",
        "--dedup",
        "0.9",
        "--dedup-mode",
        "greedy",
        "--pool-embeddings",
        &s("pe.npy"),
        "--kshot-embeddings",
        &s("ke.npy"),
        "--output",
        &s("out.jsonl"),
        "--indices-output",
        &s("idx.json"),
    ];
    run_ok(&args);
    assert_eq!(read_picks(Path::new(&s("idx.json"))), vec![1]);
    let out = std::fs::read_to_string(s("out.jsonl")).unwrap();
    assert_eq!(out.lines().count(), 2);
    assert!(out.lines().next().unwrap().contains("\"q\""));
    // with back-fill the far item comes in
    let mut a2 = args.to_vec();
    a2.push("--backfill");
    run_ok(&a2);
    assert_eq!(read_picks(Path::new(&s("idx.json"))), vec![1, 0]);
    // wrong row count
    write_npy(&d.join("pe.npy"), ndarray::array![[0.0f32, 1.0]].view()).unwrap();
    let err = run_err(&args);
    assert!(err.contains("pe.npy"), "{err}");
    // empty K-shot file
    std::fs::write(d.join("k.jsonl"), "\n").unwrap();
    let err = run_err(&args);
    assert!(err.contains("K-shot"), "{err}");
}

#[test]
fn random_kmeans_vendi() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |n: &str| d.join(n).to_str().unwrap().to_string();
    let m = Array2::from_shape_fn((40, 3), |(i, j)| {
        ((i * 7 + j * 3) % 11) as f32 + if j == i % 3 { 5.0 } else { 0.0 }
    });
    write_npy(&d.join("e.npy"), m.view()).unwrap();
    run_ok(&[
        "random",
        "--n",
        "40",
        "--k",
        "5",
        "--seed",
        "3",
        "--output",
        &s("r.json"),
    ]);
    let r = read_picks(&d.join("r.json"));
    assert_eq!(r.len(), 5);
    assert!(r.iter().all(|&i| i < 40));
    let err = run_err(&["random", "--k", "5", "--output", &s("r.json")]);
    assert!(
        err.contains("exactly one of --n, --embeddings, --pool"),
        "{err}"
    );
    run_ok(&[
        "kmeans",
        "--embeddings",
        &s("e.npy"),
        "--k",
        "6",
        "--clusters",
        "3",
        "--output",
        &s("km.json"),
    ]);
    let km = read_picks(&d.join("km.json"));
    assert_eq!(km.len(), 6);
    let stdout = run_ok(&[
        "vendi",
        "--embeddings",
        &s("e.npy"),
        "--indices",
        &s("km.json"),
        "--output",
        &s("v.json"),
    ]);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s("v.json")).unwrap()).unwrap();
    assert_eq!(v["rows"], 6);
    let score = v["vendi"].as_f64().unwrap();
    assert!((1.0..=3.0).contains(&score), "{score}");
    // the score is printed too
    let printed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(printed, v);
}
