//! `openexpert tapir` end to end, in release, at toy sizes:
//! - against a served teacher, judge and classifier (a deterministic OpenAI-compatible server on
//!   loopback, real HTTP) with the real default student (SmolLM2-135M + LoRA): the run's files and
//!   report, `kill -9` mid-run then `--resume` ending with the same files as an uninterrupted
//!   run, a finished run resumed without a single call;
//! - entirely local on the default model (teacher = judge = classifier = student = SmolLM2);
//! - the single stages `tapir judge | classify | refine` on JSONL;
//! - bad inputs: an unreachable endpoint, a refused API key (401, not retried), a judge that
//!   never returns a parsable score, empty teacher answers, an unknown category from the
//!   classifier, a run directory of another config.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_openexpert"));
    c.current_dir(root());
    c
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("binary runs");
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails_with(cmd: &mut Command, needles: &[&str]) -> String {
    let out = cmd.output().expect("binary runs");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected a failure mentioning {needles:?}"
    );
    assert_ne!(out.status.code(), Some(101), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
    err
}

/// How the fake server misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    /// The judge answers without scores.
    JudgeNoScores,
    /// The teacher answers with an empty message.
    EmptyTeacher,
    /// The classifier answers a category outside the taxonomy.
    UnknownCategory,
    /// Every request: 401.
    Unauthorized,
}

/// A deterministic OpenAI-compatible chat server on loopback, answering each TAPIR prompt by
/// its kind.
struct FakeServer {
    base_url: String,
    /// Chat requests received.
    hits: Arc<AtomicUsize>,
    /// `GET /models` requests received (the preflight).
    model_lists: Arc<AtomicUsize>,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    text.split_once(start)
        .and_then(|(_, r)| r.split_once(end))
        .map_or("", |(m, _)| m.trim())
}

fn answer_to(body: &Value, mode: Mode) -> Result<String, u16> {
    if mode == Mode::Unauthorized {
        return Err(401);
    }
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    if last.contains("data annotation expert") {
        if mode == Mode::UnknownCategory {
            return Ok("<answer>Geography</answer>".into());
        }
        let instruction = last.rsplit("#Given Instruction#:\n").next().unwrap_or("");
        let c = if instruction.chars().any(|c| c.is_ascii_digit()) {
            "Math"
        } else {
            "Reasoning"
        };
        return Ok(format!("<answer>{c}</answer>"));
    }
    if last.contains("[The Start of Assistant 1's Answer]") {
        if mode == Mode::JudgeNoScores {
            return Ok("Both answers are fine.".into());
        }
        let instruction = between(last, "[Instruction]", "[The Start of Assistant 1's Answer]");
        // the teacher (and refined answers) 8; the student 8 on instructions of even length
        // (easy), 5 on the others (hard)
        let q = |a: &str| {
            let teacher = a.starts_with("T:") || a.starts_with("Refined:");
            if teacher || instruction.len().is_multiple_of(2) {
                8
            } else {
                5
            }
        };
        let a1 = between(
            last,
            "[The Start of Assistant 1's Answer]",
            "[The End of Assistant 1's Answer]",
        );
        let a2 = between(
            last,
            "[The Start of Assistant 2's Answer]",
            "[The End of Assistant 2's Answer]",
        );
        return Ok(format!(
            "Score of the Assistant 1: [[{}]]\nScore of the Assistant 2: [[{}]]",
            q(a1),
            q(a2)
        ));
    }
    if last.contains("Instruction Creator") {
        const W: [&str; 16] = [
            "apple", "river", "stone", "cloud", "pencil", "garden", "ladder", "window", "copper",
            "violin", "desert", "harbor", "lantern", "meadow", "pocket", "rocket",
        ];
        let mut h = fnv(&body.to_string());
        let words: Vec<&str> = (0..8)
            .map(|_| {
                h = h
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                W[(h >> 60) as usize]
            })
            .collect();
        return Ok(format!(
            "<answer>Count the letters in: {}.</answer>",
            words.join(" ")
        ));
    }
    if last.contains("Rewrite the response") {
        return Ok(format!(
            "Refined: {}",
            last.rsplit("#Response#:\n").next().unwrap_or("")
        ));
    }
    if mode == Mode::EmptyTeacher {
        return Ok(String::new());
    }
    Ok(format!(
        "T: answer to {}",
        last.chars().take(40).collect::<String>()
    ))
}

impl FakeServer {
    fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let model_lists = Arc::new(AtomicUsize::new(0));
        let (h, m) = (hits.clone(), model_lists.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (h, m) = (h.clone(), m.clone());
                std::thread::spawn(move || serve(stream, mode, &h, &m));
            }
        });
        Self {
            base_url,
            hits,
            model_lists,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve(stream: TcpStream, mode: Mode, hits: &AtomicUsize, model_lists: &AtomicUsize) {
    let mut reader = BufReader::new(&stream);
    let mut length = 0usize;
    let mut models = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
        if line.starts_with("GET ") && line.contains("/models") {
            models = true;
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    if models {
        model_lists.fetch_add(1, Ordering::SeqCst);
    } else {
        hits.fetch_add(1, Ordering::SeqCst);
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let answer = if models {
        if mode == Mode::Unauthorized {
            Err(401)
        } else {
            Ok(json!({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "test"}]}).to_string())
        }
    } else {
        answer_to(&request, mode).map(|t| {
            json!({"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}]})
            .to_string()
        })
    };
    let (status, text) = match answer {
        Ok(body) => (200, body),
        Err(s) => (
            s,
            json!({"error": {"message": "invalid api key", "type": "invalid_request_error"}})
                .to_string(),
        ),
    };
    let out = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let mut s = &stream;
    let _ = s.write_all(out.as_bytes());
}

/// A base URL where nothing listens.
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    format!("http://{a}/v1")
}

/// A tiny config: 4 seeds, 2 held-out, 2 rounds; the teacher `[teacher]` section given.
fn config(dir: &Path, teacher: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[data]
seeds = ["assets/datasets/gcd/train.jsonl", "assets/datasets/syllogism/train.jsonl"]
seeds_per_file = 2
heldout = ["assets/datasets/lcm/eval.jsonl", "assets/datasets/spell_backward/eval.jsonl"]
heldout_per_file = 1

[teacher]
{teacher}

[teacher.sampling]
max_new_tokens = 24
expand_max_new_tokens = 24

[judge.sampling]
max_new_tokens = 24
explain = false

[classifier.sampling]
max_new_tokens = 8

[student]
model = "smollm2-135m-instruct"
max_new_tokens = 12
batch_size = 8

[student.train]
lr = 1e-3
epochs = 1
batch_size = 2
max_len = 128
checkpoint_every = 1

[curriculum]
rounds = 2
alpha = [0.5, 0.75]
sizes = [3, 4]

[curriculum.mfd.pairwise]
max_attempts = 2

[curriculum.expansion]
per_round = 1
{extra}
"#
    );
    let p = dir.join("tapir.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn remote(url: &str) -> String {
    format!("model = \"fake\"\nurl = \"{url}\"")
}

/// The files that must be equal between two runs of one config (round.json and report.json hold
/// timings and call counts, so they are compared without them).
fn fingerprint(run: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in 0..=2 {
        let d = run.join(format!("rounds/r{r}"));
        for f in [
            "heldout.json",
            "heldout_judge.json",
            "student.json",
            "mfd.json",
            "expanded.json",
            "plan.json",
            "refined.json",
            "data.jsonl",
        ] {
            if let Ok(s) = std::fs::read_to_string(d.join(f)) {
                out.push((format!("r{r}/{f}"), s));
            }
        }
        if let Ok(b) = std::fs::read(d.join("train/adapter/adapter_model.safetensors")) {
            out.push((
                format!("r{r}/adapter"),
                format!("{:x}", fnv(&String::from_utf8_lossy(&b))),
            ));
        }
        if let Ok(s) = std::fs::read_to_string(d.join("round.json")) {
            let mut v: Value = serde_json::from_str(&s).unwrap();
            for k in ["seconds", "calls"] {
                v.as_object_mut().unwrap().remove(k);
            }
            // training time and throughput differ between processes
            if let Some(t) = v["train"].as_object_mut() {
                for k in [
                    "tokens_per_second",
                    "train_seconds",
                    "resumed_from_step",
                    "adapter",
                ] {
                    t.remove(k);
                }
            }
            out.push((format!("r{r}/round.json"), v.to_string()));
        }
    }
    out
}

/// The local judge of the real-model run (SmolLM2 never writes the score lines).
const JUDGE: &str = "qwen2.5-0.5b-instruct";

fn default_model_fetched() -> bool {
    lm_core::testing::default_model_if_fetched().is_some()
}

#[test]
fn tapir_against_served_roles_runs_then_a_killed_run_resumes_to_the_same_result() {
    if !default_model_fetched() {
        return;
    }
    let server = FakeServer::start(Mode::Good);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), &remote(&server.base_url), "");

    // An uninterrupted run.
    let clean = tmp.path().join("clean");
    let t0 = Instant::now();
    ok(bin()
        .args(["tapir", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&clean));
    eprintln!("clean run: {:.0} s", t0.elapsed().as_secs_f64());
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(clean.join("report.json")).unwrap()).unwrap();
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3);
    let md = std::fs::read_to_string(clean.join("report.md")).unwrap();
    for needle in [
        "# TAPIR run",
        "Held-out win rates",
        "| 0 (base)",
        "Difficulty (MFD)",
        "Task mix",
        "## Calls",
        "plots/winrate.svg",
    ] {
        assert!(md.contains(needle), "{needle} missing from report.md");
    }
    for f in [
        "plots/winrate.svg",
        "plots/mfd_r1.svg",
        "plots/mfd_r2.svg",
        "plots/task_mix.svg",
        "plots/calls.svg",
        "rounds/r2/train/adapter/adapter_model.safetensors",
    ] {
        assert!(clean.join(f).is_file(), "{f}");
    }
    // the judge's scores of the fake: the teacher 8, the student 5 or 8 -> MFD 3 or 0
    let r1 = &rounds[1];
    assert_eq!(r1["mfd"]["items"], 4);
    assert_eq!(r1["mfd"]["unscored"], 0);
    let values: Vec<f64> = r1["mfd_values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(values.iter().all(|v| *v == 3.0 || *v == 0.0), "{values:?}");
    // round 2 trained from round 1's adapter
    assert_eq!(rounds[2]["train"]["warm_start"], true);
    // every call of the first run was a network call
    assert!(report["calls"]["judge"]["made"].as_u64().unwrap() > 0);

    // The same config, killed (SIGKILL) once the first round's training has checkpointed, then
    // resumed: the same files.
    let killed = tmp.path().join("killed");
    let mut child = bin()
        .args(["tapir", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let killed_mid_run = loop {
        let ck = killed.join("rounds/r1/train/checkpoints");
        if ck.is_dir() && std::fs::read_dir(&ck).map(|d| d.count()).unwrap_or(0) > 0 {
            child.kill().unwrap();
            break true;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > Duration::from_secs(300) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.wait();
    assert!(killed_mid_run, "the run ended before round 1 checkpointed");
    assert!(!killed.join("rounds/r2/round.json").exists());
    let hits_before = server.hits();
    ok(bin()
        .args(["tapir", "--output"])
        .arg(&killed)
        .arg("--resume"));
    assert_eq!(fingerprint(&clean), fingerprint(&killed));
    let resumed: Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("report.json")).unwrap())
            .unwrap();
    assert!(
        resumed["calls"]["classifier"]["made"].as_u64().unwrap() == 0,
        "classification was finished before the kill"
    );

    // A finished run resumed again calls nothing.
    let hits = server.hits();
    assert!(hits > hits_before);
    ok(bin()
        .args(["tapir", "--output"])
        .arg(&killed)
        .arg("--resume"));
    assert_eq!(server.hits(), hits);
    assert_eq!(fingerprint(&clean), fingerprint(&killed));

    // Another config in the same directory: refused without --force, restarted with it (the
    // cache replays every unchanged call).
    let cfg2 = config(tmp.path(), &remote(&server.base_url), "threshold = 0.5");
    fails_with(
        bin()
            .args(["tapir", "--config"])
            .arg(&cfg2)
            .arg("--output")
            .arg(&killed),
        &[
            "another config",
            "curriculum.expansion.threshold",
            "--force",
        ],
    );
    let before = server.hits();
    ok(bin()
        .args(["tapir", "--force", "--config"])
        .arg(&cfg2)
        .arg("--output")
        .arg(&killed));
    let forced: Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("report.json")).unwrap())
            .unwrap();
    assert!(forced["calls"]["classifier"]["cached"].as_u64().unwrap() > 0);
    assert!(
        server.hits() - before < hits_before,
        "the cache must replay most calls"
    );
}

#[test]
fn tapir_runs_locally_with_a_real_judge_the_mfd_filter_and_a_warmup() {
    if !default_model_fetched() || lm_core::testing::model_if_fetched(JUDGE).is_none() {
        return;
    }
    // SmolLM2-135M as teacher, classifier and student; Qwen2.5-0.5B-Instruct as the judge
    // (SmolLM2 never writes the `[[score]]` lines, docs/tapir.md). The MFD filter is on: the
    // real judge scores the warm-up student against the teacher on the 4 pool items, and the
    // hard / easy split must follow its scores. One round, a 2-item warm-up.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        "model = \"smollm2-135m-instruct\"",
        &format!("[judge]\nmodel = \"{JUDGE}\"\n[curriculum.ablation]\nsingle_round = true\n"),
    );
    let run = tmp.path().join("run");
    let t0 = Instant::now();
    ok(bin()
        .args(["tapir", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&run)
        .args(["--set", "curriculum.warmup=2"]));
    eprintln!("local run: {:.0} s", t0.elapsed().as_secs_f64());
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.contains("Held-out win rates") && md.contains("Warm-up: before round 1"),
        "{md}"
    );
    assert!(!md.contains("The MFD filter is off"), "{md}");
    // the warm-up student: 2 seed answers, a PEFT adapter, round 1 continues from it
    assert!(
        run.join("warmup/train/adapter/adapter_config.json")
            .is_file()
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["warmup"]["items"].as_array().unwrap().len(), 2);
    assert_eq!(report["warmup"]["train"]["warm_start"], json!(false));
    assert_eq!(report["rounds"][1]["train"]["warm_start"], json!(true));
    assert!(
        run.join("rounds/r1/train/adapter/adapter_config.json")
            .is_file()
    );
    // the MFD of the pool by the real judge: every item scored or counted unscored, scores on
    // the 1-10 scale, hard exactly when MFD >= delta (1), and the plan follows the split
    let mfd = &report["rounds"][1]["mfd"];
    assert_eq!(mfd["items"], 4);
    let scored = mfd["scored"].as_u64().unwrap();
    assert!(scored >= 1, "the judge scored nothing: {mfd}");
    assert_eq!(scored + mfd["unscored"].as_u64().unwrap(), 4);
    let recs: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(run.join("rounds/r1/mfd.json")).unwrap())
            .unwrap();
    assert_eq!(recs.len(), 4);
    let mut hard = 0;
    for r in &recs {
        match r["mfd"].as_f64() {
            Some(m) => {
                assert!((-9.0..=9.0).contains(&m), "{r}");
                assert_eq!(r["hard"], json!(m >= 1.0), "{r}");
                hard += usize::from(m >= 1.0);
                let j = &r["judgement"];
                for k in ["score_a", "score_b"] {
                    let v = j[k].as_f64().unwrap();
                    assert!((1.0..=10.0).contains(&v), "{k} {v} in {r}");
                }
            }
            None => assert!(r["hard"].is_null(), "{r}"),
        }
    }
    assert_eq!(mfd["hard"], json!(hard));
    let plan = &report["rounds"][1]["plan"];
    // the hard part holds the hard pool items and the new instructions
    let new = report["rounds"][1]["expansion"]["accepted"]
        .as_u64()
        .unwrap() as usize;
    assert!(plan["hard_available"].as_u64().unwrap() as usize <= hard + new);
    assert_eq!(
        plan["easy_available"].as_u64().unwrap() as usize,
        scored as usize - hard
    );
    // the held-out judgements: scored or unscored, never a number for an unscored pair
    let last = &report["rounds"][1]["heldout"]["vs_teacher"];
    assert_eq!(last["pairs"], 2);
    assert_eq!(
        last["scored"].as_u64().unwrap() + last["unscored"].as_u64().unwrap(),
        2
    );
    if last["scored"] == 0 {
        assert!(last["win_rate"].is_null());
    }
    // the real model's classifier answers were parsed and kept
    let classes: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("prepare/classes.json")).unwrap())
            .unwrap();
    assert_eq!(classes.as_array().unwrap().len(), 4);
    assert!(classes[0]["raw"].is_string());
    // the training data: one round of 3 + 4 items
    let data = std::fs::read_to_string(run.join("rounds/r1/data.jsonl")).unwrap();
    assert_eq!(data.lines().count(), 7);
}

#[test]
fn single_stages_work_on_jsonl() {
    let server = FakeServer::start(Mode::Good);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        "{\"instruction\": \"Add 2 and 33.\", \"teacher\": \"T: 35\", \"student\": \"thirty-five\"}\n{\"question\": \"Is it odd?\", \"answer_a\": \"T: no\", \"answer_b\": \"no\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("judged.jsonl");
    ok(bin()
        .args([
            "tapir",
            "judge",
            "--model",
            "fake",
            "--url",
            &server.base_url,
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(&out));
    let rows: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["score_a"], json!(8.0));
    assert_eq!(rows[0]["diff"], json!(3.0));
    assert_eq!(rows[0]["hard"], json!(true));
    assert_eq!(rows[1]["diff"], json!(0.0));
    assert_eq!(rows[0]["consistency"], json!("consistent"));

    let out = tmp.path().join("classes.jsonl");
    ok(bin()
        .args([
            "tapir",
            "classify",
            "--model",
            "fake",
            "--url",
            &server.base_url,
            "--input",
        ])
        .arg(&input)
        .arg("--output")
        .arg(&out));
    let rows: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["category"], json!("Math"));
    assert_eq!(rows[1]["category"], json!("Reasoning"));

    let input = tmp.path().join("responses.jsonl");
    std::fs::write(
        &input,
        "{\"instruction\": \"Add 2 and 3.\", \"response\": \"5\"}\n",
    )
    .unwrap();
    let out = tmp.path().join("refined.jsonl");
    let cache = tmp.path().join("cache");
    ok(bin()
        .args([
            "tapir",
            "refine",
            "--model",
            "fake",
            "--url",
            &server.base_url,
            "--cache",
        ])
        .arg(&cache)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out));
    let rows: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["category"], json!("Math"));
    assert!(
        rows[0]["refined"]
            .as_str()
            .unwrap()
            .starts_with("Refined: 5")
    );
    // the same again: every call from the cache
    let hits = server.hits();
    ok(bin()
        .args([
            "tapir",
            "refine",
            "--model",
            "fake",
            "--url",
            &server.base_url,
            "--cache",
        ])
        .arg(&cache)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&out));
    assert_eq!(server.hits(), hits);
}

#[test]
fn bad_roles_stop_the_run_with_a_clear_error() {
    if !default_model_fetched() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // Unreachable endpoint: the role and the URL are named.
    let dead = dead_url();
    let cfg = config(tmp.path(), &remote(&dead), "");
    fails_with(
        bin()
            .args(["tapir", "--config"])
            .arg(&cfg)
            .arg("--output")
            .arg(tmp.path().join("a")),
        &["teacher", &dead, "unreachable"],
    );

    // A refused key: 401 once, never retried.
    let server = FakeServer::start(Mode::Unauthorized);
    let cfg = config(
        tmp.path(),
        &format!(
            "{}\napi_key_env = \"TAPIR_TEST_KEY\"",
            remote(&server.base_url)
        ),
        "",
    );
    fails_with(
        bin()
            .env("TAPIR_TEST_KEY", "wrong")
            .args(["tapir", "--config"])
            .arg(&cfg)
            .arg("--output")
            .arg(tmp.path().join("b")),
        &["401", &server.base_url],
    );
    // the teacher's preflight (GET /models) got the 401: one request, no retry, no chat call
    assert_eq!(
        server.model_lists.load(Ordering::SeqCst),
        1,
        "401 must not be retried"
    );
    assert_eq!(server.hits(), 0);
    // the key's variable unset
    fails_with(
        bin()
            .env_remove("TAPIR_TEST_KEY")
            .args(["tapir", "--config"])
            .arg(&cfg)
            .arg("--output")
            .arg(tmp.path().join("b2")),
        &["TAPIR_TEST_KEY", "not set"],
    );

    // A judge that never returns a parsable score.
    let server = FakeServer::start(Mode::JudgeNoScores);
    let cfg = config(tmp.path(), &remote(&server.base_url), "");
    let run = tmp.path().join("c");
    fails_with(
        bin()
            .args(["tapir", "--config"])
            .arg(&cfg)
            .arg("--output")
            .arg(&run),
        &["no parsable score", "mfd.json", "mfd_filter = false"],
    );
    assert!(run.join("rounds/r1/mfd.json").is_file());

    // Empty teacher answers.
    let server = FakeServer::start(Mode::EmptyTeacher);
    let cfg = config(tmp.path(), &remote(&server.base_url), "");
    fails_with(
        bin()
            .args(["tapir", "--config"])
            .arg(&cfg)
            .arg("--output")
            .arg(tmp.path().join("d")),
        &["all 4 seed instructions", "empty"],
    );
}

#[test]
fn an_unknown_category_is_counted_and_the_run_goes_on() {
    if !default_model_fetched() {
        return;
    }
    let server = FakeServer::start(Mode::UnknownCategory);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(
        tmp.path(),
        &remote(&server.base_url),
        "[curriculum.ablation]\nsingle_round = true\n",
    );
    let run = tmp.path().join("run");
    ok(bin()
        .args(["tapir", "--config"])
        .arg(&cfg)
        .arg("--output")
        .arg(&run));
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        md.contains("named no category of the taxonomy for 4 of 4 seeds"),
        "{md}"
    );
    assert!(md.contains("`Geography` ×4"), "{md}");
}
