//! The Gemma 3 decoder on tiny random models (no assets needed): the sliding window hides
//! exactly the keys it should, with and without the KV cache, padding and batching change
//! nothing, and the adapter seam has the same targets as Llama.

use burn::tensor::{Int, Tensor, TensorData};
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::layout::adaptable_linears;
use lm_core::model::{DecoderConfig, ExpertMix, LanguageModel};
use lm_core::score::{ScoreOptions, ScoreRequest, score};
use lm_core::testing::{
    max_abs_diff, test_device, tiny_gemma3_language_model, tiny_language_model_with,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn ids(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(1..256)).collect()
}

/// Logits of every position, no cache.
fn logits(m: &LanguageModel, seq: &[u32]) -> Vec<Vec<f32>> {
    let t: Vec<i64> = seq.iter().map(|&x| x as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(t, [1, seq.len()]), &m.device);
    let out = m.decoder.forward(tokens, &ExpertMix::Base);
    let [_, s, v] = out.dims();
    let flat: Vec<f32> = out.into_data().try_into_vec::<f32>().unwrap();
    (0..s).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

fn argmax(x: &[f32]) -> u32 {
    x.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0 as u32
}

#[test]
fn a_local_layer_sees_only_the_window() {
    // One layer, all local, window 4: the last position depends on the last 4 tokens only.
    let config = DecoderConfig {
        num_layers: 1,
        global_layer_every: None,
        ..DecoderConfig::tiny_gemma3(256)
    };
    let m = tiny_language_model_with(config.clone(), 5, &test_device());
    let a = ids(10, 1);
    let mut b = a.clone();
    b[5] = (b[5] % 200) + 7; // 4 positions before the last: outside the window of position 9
    let (la, lb) = (logits(&m, &a), logits(&m, &b));
    assert!(max_abs_diff(&la[9], &lb[9]) < 1e-6, "outside the window");
    assert!(
        max_abs_diff(&la[8], &lb[8]) > 1e-4,
        "inside the window of position 8"
    );
    // The same model with every layer global does see it.
    let global = tiny_language_model_with(
        DecoderConfig {
            sliding_window: None,
            ..config
        },
        5,
        &test_device(),
    );
    assert!(max_abs_diff(&logits(&global, &a)[9], &logits(&global, &b)[9]) > 1e-4);
}

#[test]
fn kv_cache_decoding_past_the_window_equals_recomputation() {
    let m = tiny_gemma3_language_model(1, &test_device());
    let prompt = ids(6, 2);
    let steps = 10; // the sequence grows to 16 > window 4
    let config = GenerationConfig {
        max_new_tokens: steps,
        stop_at_eos: false,
        ..Default::default()
    };
    let out = generate(&m, std::slice::from_ref(&prompt), &config, &ExpertMix::Base).unwrap();
    let mut seq = prompt.clone();
    for _ in 0..steps {
        let next = argmax(logits(&m, &seq).last().unwrap());
        seq.push(next);
    }
    assert_eq!(out[0].token_ids, seq[prompt.len()..]);
}

#[test]
fn left_padded_batches_and_scores_match_single_rows() {
    let m = tiny_gemma3_language_model(3, &test_device());
    let prompts = vec![ids(2, 10), ids(9, 11), ids(5, 12)];
    let config = GenerationConfig {
        max_new_tokens: 7,
        stop_at_eos: false,
        ..Default::default()
    };
    let batched = generate(&m, &prompts, &config, &ExpertMix::Base).unwrap();
    for (p, b) in prompts.iter().zip(&batched) {
        let single = generate(&m, std::slice::from_ref(p), &config, &ExpertMix::Base).unwrap();
        assert_eq!(b.token_ids, single[0].token_ids);
    }
    let requests: Vec<ScoreRequest> = (0..4)
        .map(|i| ScoreRequest::text(ids(3 + 3 * i, 40 + i as u64)))
        .collect();
    let run = |bs| {
        score(
            &m,
            &requests,
            &ScoreOptions {
                batch_size: bs,
                keep_last_logits: true,
                max_batch_tokens: usize::MAX,
            },
            &ExpertMix::Base,
        )
        .unwrap()
    };
    let (one, all) = (run(1), run(4));
    for (x, y) in one.iter().zip(&all) {
        assert!(max_abs_diff(&x.token_logprobs, &y.token_logprobs) < 1e-5);
        assert!(
            max_abs_diff(
                x.last_logits.as_ref().unwrap(),
                y.last_logits.as_ref().unwrap()
            ) < 1e-5
        );
    }
}

#[test]
fn final_logit_softcapping_bounds_the_logits() {
    let config = DecoderConfig {
        final_logit_softcapping: Some(0.5),
        attn_logit_softcapping: Some(1.0),
        ..DecoderConfig::tiny_gemma3(256)
    };
    let m = tiny_language_model_with(config, 9, &test_device());
    let l = logits(&m, &ids(6, 3));
    assert!(l.iter().flatten().all(|x| x.abs() <= 0.5 + 1e-6));
    assert!(l.iter().flatten().any(|x| x.abs() > 0.1));
}

#[test]
fn adapters_target_the_same_linears_as_llama() {
    let m = tiny_gemma3_language_model(1, &test_device());
    let names: Vec<String> = m
        .decoder
        .adapted_linears()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let plan: Vec<String> = adaptable_linears(m.config())
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, plan);
    assert!(names.contains(&"model.layers.1.mlp.down_proj".to_string()));
    assert_eq!(
        adaptable_linears(m.config()),
        adaptable_linears(&DecoderConfig::tiny(256))
    );
}
