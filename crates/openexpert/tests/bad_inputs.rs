//! A corpus of bad adapter inputs, each a kind of fault from public bug reports of PEFT and its
//! peers (`../shared/bad-inputs/`), run through the CLI: every one ends in a clear message and a
//! plain failure exit code (never a panic, never a silently wrong adapter).
//!
//! - untargeted tensors (mlx-lm#1725): factors outside `target_modules` / `layers_to_transform` are
//!   dropped with a warning (`--strict` refuses them), as PEFT ignores them;
//! - unconverted PiSSA / OLoRA / CorDA / LoftQ adapters (peft#2184): refused, saying how to convert;
//! - adapters and combinations that adapt nothing (vllm#55193, peft#3486): refused, nothing written;
//! - `rank_pattern` / `alpha_pattern` keys that match no module (peft#3582): warned about.
//!
//! And the corpus `tests/bad_inputs/` (`cases.toml`): malformed GGUF and safetensors files, PEFT
//! configs, tokenizers and chat templates, JSONL pools and K-shot sets, mixtures, each run
//! through the CLI, each refused with a clear error (see `bad_inputs/corpus.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};

#[path = "bad_inputs/corpus.rs"]
mod corpus;
#[path = "bad_inputs/generate.rs"]
mod generate;

#[test]
fn corpus_binaries_are_reproducible() {
    corpus::check_committed_binaries();
}

#[test]
fn every_corpus_input_is_refused_cleanly() {
    corpus::run_all(Path::new(env!("CARGO_BIN_EXE_openexpert")));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openexpert"))
}

const D: usize = 8;
const R: usize = 2;

fn q(layer: usize) -> String {
    format!("model.layers.{layer}.self_attn.q_proj")
}

fn v(layer: usize) -> String {
    format!("model.layers.{layer}.self_attn.v_proj")
}

/// Writes a PEFT adapter directory: `config` verbatim and `[R, D]` / `[D, R]` f32 factors for
/// `modules` (`ranks` overrides R per module).
fn write_adapter(dir: &Path, config: &Value, modules: &[String], ranks: &HashMap<String, usize>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        let r = ranks.get(m).copied().unwrap_or(R);
        for (factor, shape) in [("lora_A", [r, D]), ("lora_B", [D, r])] {
            let bytes = (0..r * D)
                .flat_map(|j| (((i * 31 + j) as f32 * 0.37).sin() * 0.1).to_le_bytes())
                .collect();
            buffers.push((
                format!("base_model.model.{m}.{factor}.weight"),
                shape.to_vec(),
                bytes,
            ));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None::<HashMap<String, String>>).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), bytes).unwrap();
}

fn config(targets: &[&str]) -> Value {
    json!({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": R, "lora_alpha": 4,
           "target_modules": targets, "init_lora_weights": true, "bias": "none"})
}

fn run_ok(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed: {err}");
    (String::from_utf8(out.stdout).unwrap(), err)
}

/// Runs a command that must fail cleanly: exit code 1 (not a panic's 101), no panic message, and
/// an error line containing every one of `needles`.
fn run_refused(cmd: &mut Command, needles: &[&str]) -> String {
    let out: Output = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{cmd:?} succeeded: {err}");
    assert_ne!(out.status.code(), Some(101), "{cmd:?} panicked: {err}");
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
    assert!(!err.contains("panicked at"), "{cmd:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{cmd:?}: expected {n:?} in: {err}");
    }
    err
}

fn inspect_json(dir: &Path) -> (Value, String) {
    let (out, err) = run_ok(bin().args(["lora", "inspect", "--json"]).arg(dir));
    (serde_json::from_str(&out).unwrap(), err)
}

fn module_names(v: &Value) -> Vec<String> {
    v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn tensors_outside_the_targets_are_dropped_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    // (a) a layer outside layers_to_transform (with a rank the config would refuse: PEFT never
    // reads it), (b) a module outside target_modules
    let mut cfg = config(&["q_proj"]);
    cfg["layers_to_transform"] = json!([0]);
    let extra = tmp.path().join("extra");
    let ranks = HashMap::from([(q(1), 3)]);
    write_adapter(&extra, &cfg, &[q(0), q(1), v(0)], &ranks);
    let (v_json, err) = inspect_json(&extra);
    assert_eq!(module_names(&v_json), vec![q(0)]);
    assert_eq!(v_json["untargeted_dropped"], 2);
    assert!(
        err.contains("does not target") && err.contains(&q(1)) && err.contains(&v(0)),
        "{err}"
    );
    run_refused(
        bin().args(["lora", "inspect", "--strict"]).arg(&extra),
        &["does not target", &q(1), &v(0)],
    );
    // every reader drops them: combining the adapter alone gives the targeted module only
    let out = tmp.path().join("combined");
    run_ok(
        bin()
            .args([
                "lora",
                "combine",
                "--method",
                "linear",
                "--weights",
                "2",
                "--adapters",
            ])
            .arg(&extra)
            .arg("--output")
            .arg(&out),
    );
    let (combined, _) = inspect_json(&out);
    assert_eq!(module_names(&combined), vec![q(0)]);

    // nothing targeted at all: refused, naming the file
    let none = tmp.path().join("none_targeted");
    write_adapter(&none, &config(&["k_proj"]), &[q(0), v(0)], &HashMap::new());
    run_refused(
        bin().args(["lora", "inspect"]).arg(&none),
        &[
            "adapts no module",
            "none_targeted",
            "outside target_modules",
        ],
    );
}

#[test]
fn residual_base_initialisations_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for init in ["pissa", "pissa_niter_4", "olora", "corda", "loftq"] {
        let mut cfg = config(&["q_proj"]);
        cfg["init_lora_weights"] = json!(init);
        let dir = tmp.path().join(init);
        write_adapter(&dir, &cfg, &[q(0)], &HashMap::new());
        run_refused(
            bin().args(["lora", "inspect"]).arg(&dir),
            &[init, "path_initial_model_for_weight_conversion"],
        );
        run_refused(
            bin()
                .args(["lora", "combine", "--method", "linear", "--adapters"])
                .arg(&dir)
                .arg("--output")
                .arg(tmp.path().join(format!("{init}_out"))),
            &[init, "residual base"],
        );
        assert!(!tmp.path().join(format!("{init}_out")).exists());
    }
    for init in [json!(true), json!(false), json!("gaussian"), json!("eva")] {
        let mut cfg = config(&["q_proj"]);
        cfg["init_lora_weights"] = init.clone();
        let dir = tmp
            .path()
            .join(format!("plain_{}", init.to_string().replace('"', "")));
        write_adapter(&dir, &cfg, &[q(0)], &HashMap::new());
        let (v_json, _) = inspect_json(&dir);
        assert_eq!(module_names(&v_json), vec![q(0)], "{init}");
    }
}

#[test]
fn adapters_and_combinations_that_adapt_nothing_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // an adapter file with no tensors at all
    let empty = tmp.path().join("empty");
    write_adapter(&empty, &config(&["q_proj"]), &[], &HashMap::new());
    run_refused(
        bin().args(["lora", "inspect"]).arg(&empty),
        &["adapts no module", "adapter_model.safetensors", "no lora_A"],
    );
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    write_adapter(
        &a,
        &config(&["q_proj", "v_proj"]),
        &[q(0), v(0)],
        &HashMap::new(),
    );
    write_adapter(&b, &config(&["q_proj"]), &[q(0), q(1)], &HashMap::new());
    let adapters = format!("{},{}", a.display(), b.display());
    let cases: [(&str, &[&str], &str); 6] = [
        (
            "ties_tiny",
            &[
                "--method",
                "ties",
                "--density=1e-30",
                "--weights",
                "0.6,0.4",
            ],
            "density",
        ),
        (
            "magnitude_tiny",
            &[
                "--method",
                "magnitude_prune",
                "--density=1e-30",
                "--weights",
                "0.6,0.4",
            ],
            "density",
        ),
        (
            "linear_zero",
            &["--method", "linear", "--weights", "0,0"],
            "every weight is 0",
        ),
        (
            "svd_zero",
            &["--method", "svd", "--weights", "0,0"],
            "every weight is 0",
        ),
        (
            "cat_zero",
            &["--method", "cat", "--weights", "0,0"],
            "every weight is 0",
        ),
        (
            "lambda_zero",
            &["--method", "linear", "--lambda", "0"],
            "lambda is 0",
        ),
    ];
    for (tag, args, why) in cases {
        let out = tmp.path().join(tag);
        run_refused(
            bin()
                .args(["lora", "combine"])
                .args(args)
                .args(["--adapters", &adapters, "--output"])
                .arg(&out),
            &["adapts no module", why],
        );
        assert!(!out.exists(), "{tag}: an output was written");
    }
    // DARE at density 0 stays a density refusal (never 0/0 NaN factors)
    run_refused(
        bin()
            .args([
                "lora",
                "combine",
                "--method",
                "dare",
                "--density=0",
                "--weights",
                "0.6,0.4",
            ])
            .args(["--adapters", &adapters, "--output"])
            .arg(tmp.path().join("dare0")),
        &["density"],
    );
}

#[test]
fn pattern_keys_that_match_no_module_are_warned_about() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&["q_proj", "v_proj"]);
    cfg["rank_pattern"] = json!({r"^model\.layers\.0\.self_attn\.q_proj": 2, "^v_proj": 4});
    cfg["alpha_pattern"] = json!({"^q_proj": 100, r"^model\.layers\.0\.self_attn\.v_proj": 8});
    let dir = tmp.path().join("anchored");
    write_adapter(&dir, &cfg, &[q(0), v(0)], &HashMap::new());
    let (v_json, err) = inspect_json(&dir);
    for key in ["^v_proj", "^q_proj"] {
        assert!(
            err.contains(key) && err.contains("does not match any module"),
            "{key}: {err}"
        );
    }
    assert_eq!(
        v_json["unmatched_pattern_keys"],
        json!([{"field": "rank_pattern", "key": "^v_proj"}, {"field": "alpha_pattern", "key": "^q_proj"}])
    );
    // the matching keys apply; the unmatched ones do not: q0 scale 4/2, v0 scale 8/2
    let scales: Vec<f64> = v_json["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["scale"].as_f64().unwrap())
        .collect();
    assert_eq!(scales, vec![2.0, 4.0]);
}
