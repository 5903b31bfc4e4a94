//! Behaviour of the runtime on tiny random models (no assets needed): KV cache vs full
//! recomputation, padding invariance of batched generation and scoring, the expert seam.

use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use lm_core::LmError;
use lm_core::generate::{GenerationConfig, generate, generate_and_score};
use lm_core::model::adapted_linear::{AdaptedLinear, ExpertSet, linear_from_torch};
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::score::{ScoreOptions, ScoreRequest, score};
use lm_core::testing::tiny_language_model;
use lm_core::testing::{max_abs_diff, test_device};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn ids(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(1..256)).collect()
}

/// Greedy decoding by recomputing the whole sequence at every step (no cache).
fn greedy_by_recompute(m: &LanguageModel, prompt: &[u32], steps: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..steps {
        let t: Vec<i64> = seq.iter().map(|&x| x as i64).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(t, [1, seq.len()]), &m.device);
        let logits = m.decoder.forward(tokens, &ExpertMix::Base);
        let [_, s, v] = logits.dims();
        let last: Vec<f32> = logits
            .narrow(1, s - 1, 1)
            .reshape([v])
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let mut best = 0;
        for (i, &x) in last.iter().enumerate() {
            if x > last[best] {
                best = i;
            }
        }
        out.push(best as u32);
        seq.push(best as u32);
    }
    out
}

#[test]
fn kv_cache_decoding_equals_full_recomputation() {
    let m = tiny_language_model(1, &test_device());
    let prompt = ids(7, 2);
    let config = GenerationConfig {
        max_new_tokens: 12,
        stop_at_eos: false,
        ..Default::default()
    };
    let out = generate(&m, std::slice::from_ref(&prompt), &config, &ExpertMix::Base).unwrap();
    assert_eq!(out[0].token_ids, greedy_by_recompute(&m, &prompt, 12));
}

#[test]
fn left_padded_batch_generates_like_single_rows() {
    let m = tiny_language_model(3, &test_device());
    let prompts = vec![ids(3, 10), ids(9, 11), ids(5, 12)];
    let config = GenerationConfig {
        max_new_tokens: 8,
        stop_at_eos: false,
        ..Default::default()
    };
    let batched = generate(&m, &prompts, &config, &ExpertMix::Base).unwrap();
    // Prefilled one row per pass, then decoded as one batch.
    let passes = GenerationConfig {
        max_prefill_tokens: 1,
        ..config.clone()
    };
    let multi_pass = generate(&m, &prompts, &passes, &ExpertMix::Base).unwrap();
    assert_eq!(multi_pass, batched);
    for (p, b) in prompts.iter().zip(&batched) {
        let single = generate(&m, std::slice::from_ref(p), &config, &ExpertMix::Base).unwrap();
        assert_eq!(b.token_ids, single[0].token_ids);
    }
}

#[test]
fn rows_that_stop_early_leave_the_batch_without_changing_the_others() {
    let m = tiny_language_model(3, &test_device());
    let prompts: Vec<Vec<u32>> = (0..8).map(|i| ids(3 + i % 4, 20 + i as u64)).collect();
    let free = GenerationConfig {
        max_new_tokens: 16,
        stop_at_eos: false,
        ..Default::default()
    };
    let texts: Vec<String> = generate(&m, &prompts, &free, &ExpertMix::Base)
        .unwrap()
        .into_iter()
        .map(|g| g.text)
        .collect();
    // Stop strings taken from early in two rows' own output: those rows (and any other that
    // happens to produce them) finish early, so the batch shrinks while the rest go on.
    let stop: Vec<String> = [0, 5]
        .iter()
        .map(|&r| texts[r].chars().skip(2).take(3).collect())
        .collect();
    let config = GenerationConfig { stop, ..free };
    let batched = generate(&m, &prompts, &config, &ExpertMix::Base).unwrap();
    let reasons: Vec<_> = batched.iter().map(|g| g.finish_reason).collect();
    assert!(
        reasons.contains(&lm_core::generate::FinishReason::Stop),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&lm_core::generate::FinishReason::Length),
        "{reasons:?}"
    );
    for (p, b) in prompts.iter().zip(&batched) {
        let single = generate(&m, std::slice::from_ref(p), &config, &ExpertMix::Base).unwrap();
        assert_eq!(b, &single[0]);
    }
}

#[test]
fn generate_and_score_equals_generate_plus_score() {
    let m = tiny_language_model(3, &test_device());
    let prompts: Vec<Vec<u32>> = (0..5).map(|i| ids(2 + 3 * i, 40 + i as u64)).collect();
    let continuations: Vec<Vec<u32>> = (0..5)
        .map(|i| ids(1 + (i * 2) % 7, 60 + i as u64))
        .collect();
    let requests: Vec<ScoreRequest> = prompts
        .iter()
        .zip(&continuations)
        .map(|(p, c)| ScoreRequest {
            prompt: p.clone(),
            target: c.clone(),
        })
        .collect();
    let scored = score(&m, &requests, &ScoreOptions::default(), &ExpertMix::Base).unwrap();
    let same_continuation: Vec<ScoreRequest> = prompts
        .iter()
        .map(|p| ScoreRequest {
            prompt: p.clone(),
            target: continuations[0].clone(),
        })
        .collect();
    let scored_same = score(
        &m,
        &same_continuation,
        &ScoreOptions::default(),
        &ExpertMix::Base,
    )
    .unwrap();
    for max_prefill_tokens in [1024, 1, 20] {
        let config = GenerationConfig {
            max_new_tokens: 6,
            stop_at_eos: false,
            max_prefill_tokens,
            ..Default::default()
        };
        let generated = generate(&m, &prompts, &config, &ExpertMix::Base).unwrap();
        let sets = vec![
            continuations.clone(),
            vec![continuations[0].clone(); prompts.len()],
        ];
        let (gens, scores) =
            generate_and_score(&m, &prompts, &sets, &config, &ExpertMix::Base).unwrap();
        assert_eq!(gens, generated, "passes of {max_prefill_tokens} tokens");
        assert_eq!(scores.len(), 2);
        for (a, b) in scores[0]
            .iter()
            .zip(&scored)
            .chain(scores[1].iter().zip(&scored_same))
        {
            assert_eq!(a.n_tokens, b.n_tokens);
            assert!(
                (a.logprob - b.logprob).abs() < 1e-4,
                "{} vs {}",
                a.logprob,
                b.logprob
            );
            for (x, y) in a.token_logprobs.iter().zip(&b.token_logprobs) {
                assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            }
        }
    }
    let err = generate_and_score(
        &m,
        &prompts,
        &[continuations[..2].to_vec()],
        &GenerationConfig::default(),
        &ExpertMix::Base,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("one continuation per prompt"),
        "{err}"
    );
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    let m = tiny_language_model(4, &test_device());
    let config = GenerationConfig {
        max_new_tokens: 10,
        temperature: 1.0,
        top_p: 0.9,
        stop_at_eos: false,
        seed: 42,
        ..Default::default()
    };
    let a = generate(&m, &[ids(4, 1)], &config, &ExpertMix::Base).unwrap();
    let b = generate(&m, &[ids(4, 1)], &config, &ExpertMix::Base).unwrap();
    assert_eq!(a, b);
}

#[test]
fn stop_strings_cut_the_text() {
    let m = tiny_language_model(5, &test_device());
    let config = GenerationConfig {
        max_new_tokens: 20,
        stop_at_eos: false,
        ..Default::default()
    };
    let free = generate(&m, &[ids(4, 3)], &config, &ExpertMix::Base).unwrap();
    let text = free[0].text.clone();
    let stop: String = text.chars().skip(3).take(2).collect();
    assert!(!stop.is_empty());
    let cut = generate(
        &m,
        &[ids(4, 3)],
        &GenerationConfig {
            stop: vec![stop.clone()],
            ..config
        },
        &ExpertMix::Base,
    )
    .unwrap();
    assert_eq!(cut[0].finish_reason, lm_core::generate::FinishReason::Stop);
    assert!(!cut[0].text.contains(&stop));
    assert!(text.starts_with(&cut[0].text));
}

#[test]
fn scores_do_not_depend_on_batching() {
    let m = tiny_language_model(6, &test_device());
    let requests: Vec<ScoreRequest> = (0..5)
        .map(|i| ScoreRequest {
            prompt: ids(2 + i, 20 + i as u64),
            target: ids(3 + 2 * i, 30 + i as u64),
        })
        .collect();
    let one = |bs| {
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
    let (a, b) = (one(1), one(5));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.n_tokens, y.n_tokens);
        assert!(max_abs_diff(&x.token_logprobs, &y.token_logprobs) < 1e-5);
        assert!(
            max_abs_diff(
                x.last_logits.as_ref().unwrap(),
                y.last_logits.as_ref().unwrap()
            ) < 1e-5
        );
    }
    // A text row scores every token with a predecessor.
    let t = score(
        &m,
        &[ScoreRequest::text(ids(6, 1))],
        &ScoreOptions::default(),
        &ExpertMix::Base,
    )
    .unwrap();
    assert_eq!(t[0].n_tokens, 5);
    assert!(t[0].token_logprobs.iter().all(|&x| x <= 0.0));
}

#[test]
fn too_long_inputs_are_clear_errors() {
    let m = tiny_language_model(7, &test_device());
    let max = m.max_context();
    let err = score(
        &m,
        &[ScoreRequest::text(ids(max + 1, 1))],
        &ScoreOptions::default(),
        &ExpertMix::Base,
    )
    .unwrap_err();
    assert!(matches!(err, LmError::ContextOverflow { .. }), "{err}");
    let config = GenerationConfig {
        max_new_tokens: 10,
        ..Default::default()
    };
    let err = generate(&m, &[ids(max - 5, 1)], &config, &ExpertMix::Base).unwrap_err();
    assert!(
        err.to_string().contains("exceeds the model's context"),
        "{err}"
    );
    let err = generate(&m, &[vec![]], &config, &ExpertMix::Base).unwrap_err();
    assert!(err.to_string().contains("no tokens"), "{err}");
    let err = generate(
        &m,
        &[ids(3, 1), ids(4, 2)],
        &config,
        &ExpertMix::PerRow(vec![None]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("one expert per prompt"), "{err}");
}

/// A layer with its base weight and per-expert factors, as plain values.
type AdaptedWithValues = (AdaptedLinear, Vec<f32>, Vec<Vec<f32>>, Vec<Vec<f32>>);

/// A base linear with two rank-2 experts of known values.
fn adapted(d_in: usize, d_out: usize, seed: u64) -> AdaptedWithValues {
    let device = test_device();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rand = |n: usize| {
        (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect::<Vec<_>>()
    };
    let w = rand(d_out * d_in); // torch layout [d_out, d_in]
    let (r, e) = (2, 2);
    let a: Vec<Vec<f32>> = (0..e).map(|_| rand(d_in * r)).collect(); // [d_in, r] each
    let b: Vec<Vec<f32>> = (0..e).map(|_| rand(r * d_out)).collect(); // [r, d_out] each
    let mut a_cat = vec![0f32; d_in * e * r];
    for (i, ai) in a.iter().enumerate() {
        for row in 0..d_in {
            for c in 0..r {
                a_cat[row * e * r + i * r + c] = ai[row * r + c];
            }
        }
    }
    let b_cat: Vec<f32> = b.concat();
    let mut lin = AdaptedLinear::new(linear_from_torch(&w, d_out, d_in, None, &device));
    lin.experts = Some(ExpertSet {
        a: Param::from_tensor(Tensor::from_data(
            TensorData::new(a_cat, [d_in, e * r]),
            &device,
        )),
        b: Param::from_tensor(Tensor::from_data(
            TensorData::new(b_cat, [e * r, d_out]),
            &device,
        )),
        router: None,
        scales: vec![0.5, 2.0],
        rank: r,
        dropout: None,
    });
    (lin, w, a, b)
}

/// Reference `x W^T + Σ c_e s_e x A_e B_e` computed with plain loops.
fn reference(
    x: &[f32],
    d_in: usize,
    d_out: usize,
    w: &[f32],
    a: &[Vec<f32>],
    b: &[Vec<f32>],
    coef: &[f32],
) -> Vec<f32> {
    let scales = [0.5f32, 2.0];
    let rows = x.len() / d_in;
    let mut out = vec![0f32; rows * d_out];
    for n in 0..rows {
        for o in 0..d_out {
            let mut acc = 0f32;
            for i in 0..d_in {
                acc += x[n * d_in + i] * w[o * d_in + i];
            }
            for e in 0..a.len() {
                let r = a[e].len() / d_in;
                let mut lora = 0f32;
                for k in 0..r {
                    let mut xa = 0f32;
                    for i in 0..d_in {
                        xa += x[n * d_in + i] * a[e][i * r + k];
                    }
                    lora += xa * b[e][k * d_out + o];
                }
                acc += coef[e] * scales[e] * lora;
            }
            out[n * d_out + o] = acc;
        }
    }
    out
}

#[test]
fn expert_mixes_match_the_formula() {
    let (d_in, d_out) = (6, 5);
    let (lin, w, a, b) = adapted(d_in, d_out, 9);
    let device = test_device();
    let x: Vec<f32> = (0..2 * 3 * d_in)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let xt = Tensor::<3>::from_data(TensorData::new(x.clone(), [2, 3, d_in]), &device);
    let run = |mix: &ExpertMix| -> Vec<f32> {
        lin.forward(xt.clone(), mix)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    assert!(
        max_abs_diff(
            &run(&ExpertMix::Base),
            &reference(&x, d_in, d_out, &w, &a, &b, &[0.0, 0.0])
        ) < 1e-5
    );
    let stat = run(&ExpertMix::Static(vec![0.3, -0.7]));
    assert!(max_abs_diff(&stat, &reference(&x, d_in, d_out, &w, &a, &b, &[0.3, -0.7])) < 1e-5);
    // Per-row: row 0 uses expert 1, row 1 uses the base.
    let per_row = run(&ExpertMix::PerRow(vec![Some(1), None]));
    let half = 3 * d_out;
    let row0 = reference(&x[..3 * d_in], d_in, d_out, &w, &a, &b, &[0.0, 1.0]);
    let row1 = reference(&x[3 * d_in..], d_in, d_out, &w, &a, &b, &[0.0, 0.0]);
    assert!(max_abs_diff(&per_row[..half], &row0) < 1e-5);
    assert!(max_abs_diff(&per_row[half..], &row1) < 1e-5);
}
