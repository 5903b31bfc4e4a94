//! Cost of evaluating 16 adapters packed into shared batches, against one base evaluation.
//!
//! ```text
//! cargo run --release -p kshot-eval --example bank_eval_ratio -- [ITEMS=8] [MAX_NEW_TOKENS=64]
//! ```
//!
//! The 4 PEFT fixture adapters of lora-zoo (`crates/lora-zoo/tests/fixtures/adapters`, trained
//! for SmolLM2-135M-Instruct) replicated 4 times are 16 experts. The K-shot items are the first
//! GSM8K test items (rationales from their solutions). One evaluation = exact match by greedy
//! generation + reasoning perplexity, chat format. Timed: the base alone (all items in one
//! batch), one adapter alone (the naive way costs 16 of these), and the 16 adapters packed
//! (all rows in one batch of 16 x ITEMS).

use std::path::Path;
use std::time::Instant;

use kshot_eval::eval::{EvalConfig, Experts, Metrics, evaluate};
use kshot_eval::{KShotSet, evaluate_adapters};
use lm_core::model::{ExpertMix, LanguageModel};
use lora_zoo::LoraAdapter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let k: usize = args.get(1).map_or(Ok(8), |s| s.parse())?;
    let max_new_tokens: usize = args.get(2).map_or(Ok(64), |s| s.parse())?;
    let device = lm_core::device::device_from_name("cpu")?;
    let mut model = LanguageModel::load("smollm2-135m-instruct", &device)?;
    let items = KShotSet::gsm8k_test()?.take(k).items;
    let metrics = Metrics {
        exact_match: true,
        reasoning_ppl: true,
        answer_ppl: false,
        multiple_choice: false,
    };
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../lora-zoo/tests/fixtures/adapters");
    let four = ["a_qv_r4", "b_mlp_rslora", "c_rank_pattern", "d_qv_r4"]
        .iter()
        .map(|n| LoraAdapter::load(&fixtures.join(n)))
        .collect::<Result<Vec<_>, _>>()?;
    let adapters: Vec<&LoraAdapter> = (0..16).map(|i| &four[i % 4]).collect();
    let names: Vec<String> = (0..16)
        .map(|i| format!("{}#{}", ["a", "b", "c", "d"][i % 4], i / 4))
        .collect();

    let base_cfg = EvalConfig {
        max_new_tokens,
        batch_size: k,
        ..Default::default()
    };
    // Warm-up (allocator, caches), not timed.
    evaluate(
        &model,
        Experts::Shared(&ExpertMix::Base),
        &["base".into()],
        &[],
        &items[..1],
        metrics,
        &base_cfg,
    )?;
    let t = Instant::now();
    let base = evaluate(
        &model,
        Experts::Shared(&ExpertMix::Base),
        &["base".into()],
        &[],
        &items,
        metrics,
        &base_cfg,
    )?;
    let base_s = t.elapsed().as_secs_f64();

    lora_zoo::apply::attach_adapters(&mut model.decoder, &[adapters[0]])?;
    let t = Instant::now();
    evaluate(
        &model,
        Experts::Shared(&ExpertMix::Static(vec![1.0])),
        &["one".into()],
        &[],
        &items,
        metrics,
        &base_cfg,
    )?;
    let one_s = t.elapsed().as_secs_f64();

    let packed_cfg = EvalConfig {
        max_new_tokens,
        batch_size: 16 * k,
        ..Default::default()
    };
    let t = Instant::now();
    let bank = evaluate_adapters(
        &mut model,
        &names,
        &adapters,
        false,
        &[],
        &items,
        metrics,
        &packed_cfg,
    )?;
    let packed_s = t.elapsed().as_secs_f64();

    // Replicas of the same adapter must agree exactly with each other.
    for i in 4..16 {
        let (x, y) = (&bank.evaluations[i], &bank.evaluations[i % 4]);
        let texts = |e: &kshot_eval::Evaluation| {
            e.exact_match.as_ref().map(|r| {
                r.per_item
                    .iter()
                    .map(|p| p.prediction.clone())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(texts(x), texts(y), "replica {i} differs");
    }
    let summary = serde_json::json!({
        "items": k,
        "max_new_tokens": max_new_tokens,
        "base_seconds": base_s,
        "one_adapter_seconds": one_s,
        "naive_16_estimate_seconds": 16.0 * one_s,
        "packed_16_seconds": packed_s,
        "ratio_packed_over_base": packed_s / base_s,
        "ratio_naive_over_base": 16.0 * one_s / base_s,
        "base_accuracy": base[0].exact_match.as_ref().map(|r| r.accuracy),
        "threads": rayon_threads(),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
