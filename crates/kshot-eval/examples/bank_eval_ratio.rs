//! Cost of evaluating 16 adapters packed into shared batches, against one base evaluation.
//!
//! ```text
//! cargo run --release -p kshot-eval --example bank_eval_ratio -- [ITEMS=8] [MAX_NEW_TOKENS=64] [METRICS=both|em|rppl] [ROUNDS=3]
//! ```
//!
//! The 4 PEFT fixture adapters of lora-zoo (`crates/lora-zoo/tests/fixtures/adapters`, trained
//! for SmolLM2-135M-Instruct) replicated 4 times are 16 experts. The K-shot items are the first
//! GSM8K test items (rationales from their solutions). One evaluation = exact match by greedy
//! generation + reasoning perplexity, chat format. Timed: the base alone (all items in one
//! batch), one adapter alone (the naive way costs 16 of these), and the 16 adapters packed
//! (all rows in one batch of 16 x ITEMS), ROUNDS times back to back; medians are reported.
//!
//! The device is `OPENEXPERT_DEVICE` (default `cpu`); for a GPU build the example with
//! `--features lm-core/cuda` (or `lm-core/wgpu`) and set `OPENEXPERT_DEVICE=cuda`.

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
    let rounds: usize = args.get(4).map_or(Ok(3), |s| s.parse())?;
    let device = lm_core::device::device_from_env()?;
    let mut model = LanguageModel::load(lm_core::assets::DEFAULT_MODEL, &device)?;
    let items = KShotSet::gsm8k_test()?.take(k).items;
    let which = args.get(3).map_or("both", String::as_str);
    let metrics = Metrics {
        exact_match: which != "rppl",
        reasoning_ppl: which != "em",
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
    let packed_cfg = EvalConfig {
        max_new_tokens,
        batch_size: 16 * k,
        ..Default::default()
    };
    // Rounds of (base, one adapter, 16 packed) back to back; medians reported.
    let (mut base_t, mut one_t, mut packed_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut base = Vec::new();
    let mut bank = None;
    for round in 0..rounds {
        let t = Instant::now();
        base = evaluate(
            &model,
            Experts::Shared(&ExpertMix::Base),
            &["base".into()],
            &[],
            &items,
            metrics,
            &base_cfg,
        )?;
        base_t.push(t.elapsed().as_secs_f64());

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
        one_t.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        bank = Some(evaluate_adapters(
            &mut model,
            &names,
            &adapters,
            false,
            &[],
            &items,
            metrics,
            &packed_cfg,
        )?);
        packed_t.push(t.elapsed().as_secs_f64());
        eprintln!(
            "round {round}: base {:.1} s, one adapter {:.1} s, 16 packed {:.1} s",
            base_t[round], one_t[round], packed_t[round]
        );
    }
    let bank = bank.ok_or("expected at least one round")?;
    let (base_s, one_s, packed_s) = (median(&base_t), median(&one_t), median(&packed_t));

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
        "metrics": which,
        "max_new_tokens": max_new_tokens,
        "base_seconds": base_s,
        "one_adapter_seconds": one_s,
        "naive_16_estimate_seconds": 16.0 * one_s,
        "packed_16_seconds": packed_s,
        "ratio_packed_over_base": packed_s / base_s,
        "ratio_naive_over_base": 16.0 * one_s / base_s,
        "base_accuracy": base[0].exact_match.as_ref().map(|r| r.accuracy),
        "rounds": rounds,
        "base_seconds_all": base_t,
        "one_adapter_seconds_all": one_t,
        "packed_16_seconds_all": packed_t,
        "threads": rayon_threads(),
        "device": std::env::var(lm_core::device::DEVICE_ENV).unwrap_or_else(|_| "cpu".into()),
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
