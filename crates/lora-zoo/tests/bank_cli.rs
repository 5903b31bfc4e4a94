//! `LoraBank` and the `lora` subcommands on the PEFT fixtures.

use std::path::{Path, PathBuf};

use lora_zoo::cli::{LoraCommand, run_to};
use lora_zoo::combine::{CombineMethod, MajoritySign};
use lora_zoo::similarity::{SimilarityMode, SimilarityReport, delta_similarity, rocket_similarity};
use lora_zoo::{BaseModelSpec, LoraAdapter, LoraBank, LoraError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/adapters")
        .join(name)
}

const NAMES: [&str; 4] = ["a_qv_r4", "b_mlp_rslora", "c_rank_pattern", "d_qv_r4"];

/// A bank directory with the four fixtures, a card for one, and a broken entry.
fn make_bank() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for n in NAMES {
        let d = dir.path().join(n);
        std::fs::create_dir(&d).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(fixture(n).join(f), d.join(f)).unwrap();
        }
    }
    std::fs::write(
        dir.path().join("a_qv_r4/card.json"),
        r#"{"dataset": "random", "task": "none"}"#,
    )
    .unwrap();
    let broken = dir.path().join("zz_broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("adapter_config.json"), "{oops").unwrap();
    std::fs::create_dir(dir.path().join("not_an_adapter")).unwrap();
    dir
}

#[test]
fn bank_indexes_lazily_and_checks_compatibility() {
    let dir = make_bank();
    let bank = LoraBank::scan(dir.path()).unwrap();
    assert_eq!(bank.names(), NAMES);
    assert_eq!(bank.skipped().len(), 1);
    let a = &bank.entries()[0];
    assert_eq!(a.rank, 4);
    assert_eq!(a.targets.len(), 2);
    assert_eq!(
        a.base_model.as_deref(),
        Some("HuggingFaceTB/SmolLM2-135M-Instruct")
    );
    assert_eq!(a.card.as_ref().unwrap()["dataset"], "random");
    assert!(a.size_bytes > 10_000);
    assert!(!bank.is_loaded("a_qv_r4"));
    let x = bank.load("a_qv_r4").unwrap();
    assert!(bank.is_loaded("a_qv_r4") && !bank.is_loaded("d_qv_r4"));
    assert!(std::sync::Arc::ptr_eq(&x, &bank.load("a_qv_r4").unwrap()));
    assert!(matches!(
        bank.load("nope"),
        Err(LoraError::UnknownAdapter { .. })
    ));
    let ok = bank.check_compatibility(&BaseModelSpec::smollm2_135m());
    assert!(ok.iter().all(|c| c.result.is_ok()));
    let wrong = bank.check_compatibility(&BaseModelSpec::llama(
        "llama-ish",
        2,
        4096,
        11008,
        32,
        32,
        128,
    ));
    assert!(wrong.iter().all(|c| c.result.is_err()));
}

#[test]
fn cli_inspect_combine_similarity() {
    let bank_dir = make_bank();
    let out_dir = tempfile::tempdir().unwrap();
    let mut buf = Vec::new();
    run_to(
        LoraCommand::Inspect {
            dir: fixture("c_rank_pattern"),
            json: false,
        },
        &mut buf,
    )
    .unwrap();
    let text = String::from_utf8(buf).unwrap();
    assert!(
        text.contains("model.layers.0.self_attn.v_proj") && text.contains("r=6"),
        "{text}"
    );

    let combined = out_dir.path().join("ties");
    let mut buf = Vec::new();
    run_to(
        LoraCommand::Combine {
            method: CombineMethod::Ties,
            adapters: vec![fixture("a_qv_r4"), fixture("d_qv_r4")],
            weights: Some(vec![0.5, -0.5]),
            rank: Some(3),
            output: combined.clone(),
            density: 0.5,
            seed: 0,
            majority_sign: MajoritySign::Total,
            lambda: 1.0,
        },
        &mut buf,
    )
    .unwrap();
    let c = LoraAdapter::load(&combined).unwrap();
    assert_eq!(c.modules.len(), 4);
    assert!(c.modules.values().all(|m| m.rank() == 3));
    assert!(combined.join("card.json").is_file());

    let sim = out_dir.path().join("sim.json");
    // the broken entry is skipped; the combined adapter is not in the bank
    run_to(
        LoraCommand::Similarity {
            bank: bank_dir.path().to_path_buf(),
            mode: SimilarityMode::Delta,
            output: sim.clone(),
        },
        &mut Vec::new(),
    )
    .unwrap();
    let rep: SimilarityReport =
        serde_json::from_str(&std::fs::read_to_string(&sim).unwrap()).unwrap();
    assert_eq!(rep.names, NAMES);
    let a = LoraAdapter::load(&fixture("a_qv_r4")).unwrap();
    let d = LoraAdapter::load(&fixture("d_qv_r4")).unwrap();
    assert!((rep.matrix[0][3] - delta_similarity(&a, &d)).abs() < 1e-6);
    assert!((rep.matrix[0][0] - 4.0).abs() < 1e-6);
    run_to(
        LoraCommand::Similarity {
            bank: bank_dir.path().to_path_buf(),
            mode: SimilarityMode::Rocket,
            output: sim.clone(),
        },
        &mut Vec::new(),
    )
    .unwrap();
    let rep: SimilarityReport =
        serde_json::from_str(&std::fs::read_to_string(&sim).unwrap()).unwrap();
    assert!((rep.matrix[3][0] - rocket_similarity(&d, &a)).abs() < 1e-6);
    // a (r=4) and c (r=2 / 6) share no same-shape factor
    assert_eq!(rep.matrix[0][2], 0.0);
}

#[test]
fn cli_parses_the_issue_syntax() {
    use clap::Parser;
    #[derive(Parser)]
    struct Top {
        #[command(subcommand)]
        cmd: LoraCommand,
    }
    let t = Top::try_parse_from([
        "lora",
        "combine",
        "--method",
        "dare_ties",
        "--adapters",
        "A,B",
        "--weights",
        "0.7,-0.3",
        "--rank",
        "8",
        "--output",
        "OUT",
    ])
    .unwrap();
    match t.cmd {
        LoraCommand::Combine {
            method,
            adapters,
            weights,
            rank,
            ..
        } => {
            assert_eq!(method, CombineMethod::DareTies);
            assert_eq!(adapters.len(), 2);
            assert_eq!(weights, Some(vec![0.7, -0.3]));
            assert_eq!(rank, Some(8));
        }
        _ => panic!("wrong subcommand"),
    }
    assert!(
        Top::try_parse_from([
            "lora",
            "combine",
            "--method",
            "nope",
            "--adapters",
            "A",
            "--output",
            "O"
        ])
        .is_err()
    );
    let t = Top::try_parse_from([
        "lora",
        "similarity",
        "--bank",
        "B",
        "--mode",
        "delta",
        "--output",
        "S.json",
    ])
    .unwrap();
    assert!(matches!(
        t.cmd,
        LoraCommand::Similarity {
            mode: SimilarityMode::Delta,
            ..
        }
    ));
}
