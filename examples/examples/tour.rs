//! The main job on the default model: fetch the default assets (idempotent), then generate a
//! chat answer and score a few texts with SmolLM2-135M-Instruct, and embed two sentences with
//! MiniLM.
//!
//! Run: `cargo run --release -p openexpert-examples --example tour`

use openexpert::lm_core::assets::{FetchOptions, fetch};
use openexpert::prelude::*;

fn main() -> anyhow::Result<()> {
    for report in fetch(&[], &FetchOptions::default())? {
        eprintln!("{report}");
    }
    let device = device_from_env()?;
    let model = LanguageModel::load(openexpert::lm_core::assets::DEFAULT_MODEL, &device)?;

    println!("== generate (chat, greedy)");
    let question = "What is the capital of France?";
    let prompt = model.render_chat(&[ChatMessage::user(question)], true)?;
    let out = generate(
        &model,
        &[model.encode(&prompt)?],
        &GenerationConfig {
            max_new_tokens: 32,
            ..Default::default()
        },
        &ExpertMix::Base,
    )?;
    println!("Q: {question}\nA: {}", out[0].text.trim());

    println!("\n== score (log-prob of an answer given the question)");
    for answer in [
        "The capital of France is Paris.",
        "The capital of France is Berlin.",
    ] {
        let request = ScoreRequest {
            prompt: model.encode(&prompt)?,
            target: model.encode_continuation(answer)?,
        };
        let s = &score(
            &model,
            &[request],
            &ScoreOptions::default(),
            &ExpertMix::Base,
        )?[0];
        println!(
            "{answer:40} logprob {:8.3}  ppl {:7.3}  ({} tokens)",
            s.logprob,
            s.ppl(),
            s.n_tokens
        );
    }

    println!("\n== embed (MiniLM sentence embeddings)");
    let encoder = SentenceEncoder::load(openexpert::lm_core::assets::DEFAULT_ENCODER, &device)?;
    let texts = [
        "A man is eating food.".to_string(),
        "A man is eating a piece of bread.".to_string(),
    ];
    let e = encoder.embed(&texts, 8)?;
    let cos: f32 = e[0].iter().zip(&e[1]).map(|(a, b)| a * b).sum();
    println!("cos({:?}, {:?}) = {cos:.4}", texts[0], texts[1]);
    Ok(())
}
