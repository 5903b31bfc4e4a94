//! Decoding from quantised weights against f32 on a real model: logit deviation of the decode
//! steps (teacher-forced on the f32 greedy tokens, so every format sees the same inputs), whether
//! greedy text matches, and batch-1 greedy decoding speed.
//!
//! Run: `cargo run --release -p lm-core --example quant_decode -- [MODEL] [FORMATS] [ROUNDS]`
//! (defaults: the default model, `f32,q8_0,native`, 3). `OPENEXPERT_QUANT_KERNEL=scalar` times
//! the portable kernel.
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::{AttentionMask, Decoder, ExpertMix, KvCache, LanguageModel};
use lm_core::prompt::PromptFormat;
use lm_core::quant::{WeightFormat, decoding};

const PROMPTS: [&str; 4] = [
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about the sea.",
    "Explain in two sentences why the sky is blue.",
    "List three prime numbers and say why they are prime.",
];

/// Logits of every decode step for `tokens` after `prompt` (the step inside [`decoding`] when
/// `quantised`), `[steps][vocab]`.
fn step_logits(
    m: &LanguageModel,
    prompt: &[u32],
    tokens: &[u32],
    quantised: bool,
) -> Vec<Vec<f32>> {
    let dev = &m.device;
    let n = prompt.len();
    let mut cache = KvCache::with_capacity(m.decoder.layers.len(), n + tokens.len());
    let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
    m.decoder.forward_hidden(
        Tensor::from_data(TensorData::new(ids, [1, n]), dev),
        Decoder::default_positions(1, n, 0, dev),
        &AttentionMask::Causal,
        Some(&mut cache),
        &ExpertMix::Base,
    );
    let mut out = Vec::new();
    for (i, &t) in tokens.iter().enumerate() {
        let mut step = || {
            let h = m.decoder.forward_hidden(
                Tensor::from_data(TensorData::new(vec![t as i64], [1, 1]), dev),
                Decoder::default_positions(1, 1, n + i, dev),
                &AttentionMask::Causal,
                Some(&mut cache),
                &ExpertMix::Base,
            );
            m.decoder
                .logits(h)
                .into_data()
                .try_into_vec::<f32>()
                .unwrap()
        };
        out.push(if quantised { decoding(step) } else { step() });
    }
    out
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> lm_core::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let spec = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| lm_core::assets::DEFAULT_MODEL.into());
    let formats: Vec<WeightFormat> = args
        .get(2)
        .map_or("f32,q8_0,native", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<lm_core::Result<_>>()?;
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(3);
    let device = lm_core::device::device_from_name("cpu")?;
    let mut m = LanguageModel::load(&spec, &device)?;
    println!(
        "model {spec}, kernel {:?}, threads {}",
        lm_core::quant::Kernel::detect(),
        rayon::current_num_threads()
    );

    let format = if m.chat_template.is_some() {
        PromptFormat::Chat { system: None }
    } else {
        PromptFormat::raw()
    };
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| m.encode_question(&format, p))
        .collect::<lm_core::Result<_>>()?;
    let greedy = |m: &LanguageModel, p: &[u32], n: usize| -> lm_core::Result<Vec<u32>> {
        let config = GenerationConfig {
            max_new_tokens: n,
            stop_at_eos: false,
            ..Default::default()
        };
        Ok(generate(m, &[p.to_vec()], &config, &ExpertMix::Base)?
            .remove(0)
            .token_ids)
    };
    m.set_decode_weights(WeightFormat::F32)?;
    let reference: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| greedy(&m, p, 32))
        .collect::<lm_core::Result<_>>()?;
    let f32_logits: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .zip(&reference)
        .map(|(p, t)| step_logits(&m, p, t, false))
        .collect();

    // The decoding workload of `openexpert bench-runtime`: 32-token prompt, 64 new tokens.
    let bench_prompt: Vec<u32> = prompts[2].iter().copied().cycle().take(32).collect();
    for &f in &formats {
        let report = m.set_decode_weights(f)?;
        let (mut max_abs, mut scale, mut top1, mut steps) = (0f32, 0f32, 0usize, 0usize);
        let (mut sum_abs, mut count) = (0f64, 0usize);
        let mut same_text = 0;
        for ((p, t), want) in prompts.iter().zip(&reference).zip(&f32_logits) {
            let got = step_logits(&m, p, t, true);
            for (g, w) in got.iter().zip(want) {
                let d = g.iter().zip(w).fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                max_abs = max_abs.max(d);
                sum_abs += g
                    .iter()
                    .zip(w)
                    .map(|(x, y)| (x - y).abs() as f64)
                    .sum::<f64>();
                count += g.len();
                scale = scale.max(w.iter().fold(0f32, |a, x| a.max(x.abs())));
                top1 += usize::from(argmax(g) == argmax(w));
                steps += 1;
            }
            same_text += usize::from(greedy(&m, p, 32)? == *t);
        }
        greedy(&m, &bench_prompt, 8)?; // warm-up
        let mut speeds = Vec::new();
        for _ in 0..rounds {
            let t0 = Instant::now();
            let out = greedy(&m, &bench_prompt, 64)?;
            speeds.push(out.len() as f64 / t0.elapsed().as_secs_f64());
        }
        speeds.sort_by(f64::total_cmp);
        // Batched decoding (`QUANT_BATCHES=2,4,8`): new tokens of all rows per second.
        let batches = std::env::var("QUANT_BATCHES").unwrap_or_default();
        for b in batches.split(',').filter_map(|b| b.parse::<usize>().ok()) {
            let config = GenerationConfig {
                max_new_tokens: 32,
                stop_at_eos: false,
                ..Default::default()
            };
            let rows = vec![bench_prompt.clone(); b];
            let t0 = Instant::now();
            generate(&m, &rows, &config, &ExpertMix::Base)?;
            println!(
                "{f:>6}: batch {b}: {:.1} new tokens/s",
                (b * 32) as f64 / t0.elapsed().as_secs_f64()
            );
        }
        println!("{report}");
        println!(
            "{f:>6}: decode {:.1} tokens/s (median of {rounds}: {:?}), load {}; logits max |Δ| {max_abs:.4}, mean |Δ| {:.4} (max |logit| {scale:.1}), top-1 agrees {top1}/{steps} steps, greedy 32 tokens identical for {same_text}/{} prompts",
            speeds[speeds.len() / 2],
            speeds
                .iter()
                .map(|s| (s * 10.0).round() / 10.0)
                .collect::<Vec<_>>(),
            load_average(),
            sum_abs / count.max(1) as f64,
            prompts.len()
        );
    }
    Ok(())
}
