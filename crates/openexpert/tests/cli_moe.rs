//! `openexpert moe` end to end on the default model and bank: the logit equalities of the
//! mixture through the command line (one expert at top-1 = `--adapter`; zero routers with
//! k = E = the equal-weight `--adapter-weight` mix), routing statistics and refusals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openexpert"))
}

fn bank() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/bank")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("binary runs")
}

fn ok(cmd: &mut Command) {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `logprob` of every row of a `score` output.
fn logprobs(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["logprob"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn score(dir: &Path, input: &Path, name: &str, extra: &[&str]) -> Vec<f64> {
    let out = dir.join(format!("{name}.jsonl"));
    ok(bin()
        .args(["score", "--input"])
        .arg(input)
        .arg("--output")
        .arg(&out)
        .args(extra));
    logprobs(&out)
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * x.abs().max(1.0), "{x} vs {y}");
    }
}

#[test]
fn mixtures_reduce_to_plain_adapters_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"What is the gcd of 12 and 18?\", \"target\": \" The answer is 6.\"}\n\
         {\"text\": \"All cats are animals. Some animals sleep.\"}\n",
    )
    .unwrap();
    let gcd = bank().join("gcd");
    let syl = bank().join("syllogism");

    // One expert, top-1: the adapter itself.
    let one = dir.path().join("one");
    ok(bin()
        .args(["moe", "build", "--experts"])
        .arg(&gcd)
        .args(["--top-k", "1", "--output"])
        .arg(&one));
    let via_moe = score(
        dir.path(),
        &input,
        "moe1",
        &["--moe", one.to_str().unwrap()],
    );
    let via_adapter = score(
        dir.path(),
        &input,
        "a1",
        &["--adapter", gcd.to_str().unwrap()],
    );
    let base = score(dir.path(), &input, "base", &[]);
    close(&via_moe, &via_adapter, 1e-5);
    assert!(
        (via_adapter[0] - base[0]).abs() > 1e-3,
        "the adapter changes the scores"
    );

    // Zero routers, k = E = 2: the equal-weight static mix.
    let two = dir.path().join("two");
    ok(bin()
        .args(["moe", "build", "--bank"])
        .arg(bank())
        .args([
            "--experts",
            "gcd,syllogism",
            "--top-k",
            "2",
            "--router-init",
            "zero",
        ])
        .arg("--output")
        .arg(&two));
    let via_moe = score(
        dir.path(),
        &input,
        "moe2",
        &["--moe", two.to_str().unwrap()],
    );
    let both = format!("{},{}", gcd.display(), syl.display());
    let via_mix = score(
        dir.path(),
        &input,
        "mix",
        &["--adapter", &both, "--adapter-weight", "0.5,0.5"],
    );
    close(&via_moe, &via_mix, 1e-5);

    // Routing statistics: shares sum to k per token, a heatmap is drawn.
    let stats = dir.path().join("routes.json");
    let svg = dir.path().join("routes.svg");
    ok(bin()
        .args(["moe", "routes", "--moe"])
        .arg(&two)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&stats)
        .arg("--svg")
        .arg(&svg));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let share: f64 = report["overall"]["load_share"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!((share - 1.0).abs() < 1e-6, "load shares sum to {share}");
    assert_eq!(report["layers"].as_array().unwrap().len(), 30);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));

    // Refusals: an expert listed twice, top-k above E, --moe with --adapter.
    let out = run(bin()
        .args(["moe", "build", "--bank"])
        .arg(bank())
        .args(["--experts", "gcd,gcd", "--output"])
        .arg(dir.path().join("bad")));
    assert!(!out.status.success() && out.status.code() != Some(101));
    let out = run(bin()
        .args(["moe", "build", "--bank"])
        .arg(bank())
        .args(["--experts", "gcd,syllogism", "--top-k", "3", "--output"])
        .arg(dir.path().join("bad")));
    assert!(!out.status.success() && out.status.code() != Some(101));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("top_k") || err.contains("top-k"), "{err}");
    let out = run(bin()
        .args(["score", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("x.jsonl"))
        .arg("--moe")
        .arg(&two)
        .arg("--adapter")
        .arg(&gcd));
    assert_eq!(out.status.code(), Some(2));
}

/// A failing command: not a panic, not a usage error, and its message.
fn refused(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success() && out.status.code() != Some(101),
        "expected a clean refusal, got {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_banks_experts_and_outputs_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();

    // A bank that does not exist, an expert the bank lacks (the bank's adapters are listed).
    let err = refused(
        bin()
            .args(["moe", "build", "--bank"])
            .arg(dir.path().join("no-bank"))
            .args(["--experts", "gcd", "--output"])
            .arg(dir.path().join("m")),
    );
    assert!(
        err.contains("--bank") && err.contains("found nothing"),
        "{err}"
    );
    let err = refused(
        bin()
            .args(["moe", "build", "--bank"])
            .arg(bank())
            .args(["--experts", "gcd,nope", "--output"])
            .arg(dir.path().join("m")),
    );
    assert!(
        err.contains("\"nope\"") && err.contains("syllogism"),
        "{err}"
    );
    // A count, as rank-bank and rocket take it, is explained rather than looked up.
    let err = refused(
        bin()
            .args(["moe", "build", "--bank"])
            .arg(bank())
            .args(["--experts", "3", "--output"])
            .arg(dir.path().join("m")),
    );
    assert!(
        err.contains("found a number") && err.contains("selected"),
        "{err}"
    );
    let err = refused(
        bin()
            .args(["moe", "build", "--bank"])
            .arg(bank())
            .args(["--experts", "gcd,", "--output"])
            .arg(dir.path().join("m")),
    );
    assert!(err.contains("empty expert name"), "{err}");

    // An output directory that is an existing file, for build and train.
    let err = refused(
        bin()
            .args(["moe", "build", "--bank"])
            .arg(bank())
            .args(["--experts", "gcd,syllogism", "--output"])
            .arg(&file),
    );
    assert!(err.contains("found a file"), "{err}");
    let data = dir.path().join("train.jsonl");
    std::fs::write(&data, "{\"prompt\": \"1+1=\", \"response\": \"2\"}\n").unwrap();
    let err = refused(
        bin()
            .args(["moe", "train", "--moe"])
            .arg(dir.path())
            .arg("--data")
            .arg(&data)
            .arg("--output")
            .arg(&file),
    );
    assert!(err.contains("found a file"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");

    // Not a mixture: no such directory, a directory without moe_config.json.
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, "{\"text\": \"hello\"}\n").unwrap();
    for moe in [dir.path().join("no-moe"), dir.path().to_path_buf()] {
        let err = refused(
            bin()
                .args(["score", "--input"])
                .arg(&input)
                .arg("--output")
                .arg(dir.path().join("s.jsonl"))
                .arg("--moe")
                .arg(&moe),
        );
        assert!(err.contains("is not a mixture directory"), "{err}");
        assert!(err.contains("moe_config.json"), "{err}");
    }
    assert!(!dir.path().join("s.jsonl").exists());

    // moe routes with an --svg into a missing folder writes neither file.
    let stats = dir.path().join("routes.json");
    let err = refused(
        bin()
            .args(["moe", "routes", "--moe"])
            .arg(dir.path())
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&stats)
            .arg("--svg")
            .arg(dir.path().join("missing/routes.svg")),
    );
    assert!(err.contains("does not exist"), "{err}");
    assert!(!stats.exists());
}

#[test]
fn moe_train_help_shows_no_lora_shape_flags() {
    let out = run(bin().args(["moe", "train", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in ["--lora-r", "--lora-alpha", "--targets", "--rslora"] {
        assert!(
            !help.contains(flag),
            "{flag} shown but ignored by moe train"
        );
    }
    for flag in ["--lr", "--max-steps", "--checkpoint-every", "--resume"] {
        assert!(help.contains(flag), "{flag} missing");
    }
    let out = run(bin().args(["train", "--help"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--lora-r"));
}

#[test]
fn a_corrupt_router_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let moe = dir.path().join("moe");
    ok(bin()
        .args(["moe", "build", "--bank"])
        .arg(bank())
        .args(["--experts", "gcd,syllogism", "--output"])
        .arg(&moe));
    let router = moe.join("router.safetensors");
    let bytes = std::fs::read(&router).unwrap();
    std::fs::write(&router, &bytes[..200]).unwrap();
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, "{\"text\": \"hello\"}\n").unwrap();
    let err = refused(
        bin()
            .args(["score", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(dir.path().join("s.jsonl"))
            .arg("--moe")
            .arg(&moe),
    );
    assert!(
        err.contains("router.safetensors") && err.contains("moe build"),
        "{err}"
    );
    assert!(!dir.path().join("s.jsonl").exists());
}

#[test]
fn generate_takes_the_format_of_train_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let moe = dir.path().join("moe");
    ok(bin()
        .args(["moe", "build", "--bank"])
        .arg(bank())
        .args(["--experts", "gcd,syllogism", "--output"])
        .arg(&moe));
    let generated = |extra: &[&str]| -> String {
        let out = run(bin()
            .args(["generate", "--prompt", "What is the capital of France?"])
            .args(["--max-new-tokens", "8", "--moe"])
            .arg(&moe)
            .args(extra));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The default is the chat template, as in train and eval (an answer, not an empty line);
    // the old --chat means the same.
    let chat = generated(&[]);
    assert!(!chat.trim().is_empty(), "empty answer in chat format");
    assert_eq!(chat, generated(&["--format", "chat"]));
    assert_eq!(chat, generated(&["--chat"]));
    generated(&["--format", "raw"]);
    generated(&["--format", "plain"]);
    // Routing statistics count tokens once, not once per module.
    let input = dir.path().join("rows.jsonl");
    std::fs::write(&input, "{\"text\": \"hello\"}\n").unwrap();
    let stats = dir.path().join("routes.json");
    ok(bin()
        .args(["moe", "routes", "--moe"])
        .arg(&moe)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&stats));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(
        report["overall"]["tokens"], report["modules"][0]["tokens"],
        "{report}"
    );
}

#[test]
fn moe_arrow_help_shows_no_router_init_it_would_ignore() {
    let out = run(bin().args(["moe", "arrow", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!help.contains("--router-init"), "{help}");
    assert!(help.contains("--top-k") && help.contains("--experts"));
    let out = run(bin().args(["moe", "build", "--help"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--router-init"));
    let out = run(bin().args(["eval", "--help"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("raw (the prompt"));
}
