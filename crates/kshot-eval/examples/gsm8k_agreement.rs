//! GSM8K exact match of base SmolLM2-135M-Instruct with kshot-eval, compared item by item with
//! the transformers reference written by `scripts/gsm8k_transformers_reference.py`.
//!
//! ```text
//! cargo run --release -p kshot-eval --example gsm8k_agreement -- [N=200] [BATCH=16]
//! ```
//!
//! Protocol (the same as the script): 0-shot chat (the question as the only user turn, the
//! model's template with its generation prompt), greedy, the reference's `max_new_tokens`, stop at the end
//! of turn, extractor `[AnswerIs, Auto]` (= the last number for GSM8K's numeric answers).
//! Writes `crates/kshot-eval/tests/fixtures/gsm8k_smollm2_openexpert.json` and prints the
//! agreement.

use std::path::Path;
use std::time::Instant;

use kshot_eval::{EvalConfig, KShotSet, exact_match};
use lm_core::model::{ExpertMix, LanguageModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map_or(Ok(200), |s| s.parse())?;
    let batch: usize = args.get(2).map_or(Ok(16), |s| s.parse())?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        fixtures.join("gsm8k_smollm2_transformers.json"),
    )?)?;
    let device = lm_core::device::device_from_name("cpu")?;
    let model = LanguageModel::load(lm_core::assets::DEFAULT_MODEL, &device)?;
    let set = KShotSet::gsm8k_test()?.take(n);
    // The reference's own budget (the committed result predates this line and ran with 256).
    let max_new_tokens = reference["max_new_tokens"]
        .as_u64()
        .ok_or("reference has no max_new_tokens")? as usize;
    let config = EvalConfig {
        max_new_tokens,
        batch_size: batch,
        show_progress: true,
        ..Default::default()
    };
    let start = Instant::now();
    let report = exact_match(&model, &ExpertMix::Base, &[], &set.items, &config)?;
    let seconds = start.elapsed().as_secs_f64();
    let theirs = reference["items"]
        .as_array()
        .ok_or("reference has no items")?;
    let (mut same_text, mut same_extracted, mut same_verdict, mut compared) = (0, 0, 0, 0);
    let mut extends = 0;
    for (ours, t) in report.per_item.iter().zip(theirs) {
        compared += 1;
        same_text += usize::from(ours.prediction == t["text"].as_str().unwrap_or_default());
        extends += usize::from(
            ours.prediction
                .starts_with(t["text"].as_str().unwrap_or_default()),
        );
        same_extracted += usize::from(ours.extracted.as_deref() == t["extracted"].as_str());
        same_verdict += usize::from(ours.correct == t["correct"].as_bool().unwrap_or(false));
    }
    let theirs_correct = theirs
        .iter()
        .take(compared)
        .filter(|t| t["correct"].as_bool() == Some(true))
        .count();
    let summary = serde_json::json!({
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "runtime": "openexpert (burn flex, f32, CPU)",
        "n": report.total,
        "max_new_tokens": config.max_new_tokens,
        "correct": report.correct,
        "accuracy": report.accuracy,
        "stderr": report.stderr,
        "unextracted": report.unextracted,
        "seconds": seconds,
        "agreement": {
            "compared": compared,
            "transformers_correct": theirs_correct,
            "ours_correct": report.correct,
            "identical_text": same_text,
            "ours_starts_with_reference_text": extends,
            "identical_extracted": same_extracted,
            "identical_verdict": same_verdict,
        },
        "items": report.per_item,
    });
    let out = fixtures.join("gsm8k_smollm2_openexpert.json");
    atomic_fs::write_atomic(&out, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    println!(
        "ours {}/{} vs transformers {}/{}; identical text {same_text}, extracted {same_extracted}, verdict {same_verdict} of {compared}; {seconds:.0} s; wrote {}",
        report.correct,
        report.total,
        theirs_correct,
        compared,
        out.display()
    );
    Ok(())
}
