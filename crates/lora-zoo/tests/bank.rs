//! `LoraBank` on the PEFT fixtures (the `openexpert lora` commands: crates/openexpert/tests/cli_lora.rs).

use std::path::{Path, PathBuf};

use lora_zoo::{BaseModelSpec, LoraBank, LoraError};

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
