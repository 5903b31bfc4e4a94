//! Mixed precision on tiny random models (no assets): a decoder cast to f16/bf16 stays close to
//! its f32 self, keeps its f32 islands (logits, hidden states, LoRA experts), decodes with its
//! KV cache as it recomputes, and trains LoRA adapters on its cast base; Gemma 3 runs in bf16
//! and is refused in f16.

use burn::tensor::{DType, Int, Tensor, TensorData};
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::expert_pack::{HostFactors, attach_expert_sets};
use lm_core::model::{ExpertMix, ExpertSet, LanguageModel, Precision};
use lm_core::testing::{max_abs_diff, test_device, test_device_name, tiny_language_model};
use lm_core::train::{LoraTrainConfig, LoraTrainer, PromptFormat, TrainConfig, evaluate_loss};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The cast precisions, with the largest logit deviation from f32 allowed on a tiny model
/// (logits of order 1; measured: see the printed `parity:` lines).
const CASES: [(Precision, f32); 2] = [(Precision::Bf16, 0.1), (Precision::F16, 0.02)];

fn ids(n: usize, seed: u64) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(1..256)).collect()
}

fn logits(m: &LanguageModel, tokens: &[i64], mix: &ExpertMix) -> (Vec<f32>, DType) {
    let rows = match mix {
        ExpertMix::PerRow(r) => r.len(),
        _ => 1,
    };
    let data: Vec<i64> = (0..rows).flat_map(|_| tokens.iter().copied()).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(data, [rows, tokens.len()]), &m.device);
    let out = m.decoder.forward(t, mix);
    let dtype = out.dtype();
    (
        out.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap(),
        dtype,
    )
}

/// Whether the test device computes in `precision` (wgpu has no bf16, and f16 only with the
/// adapter's `shader-f16`); says so when it does not, and the caller skips that precision.
fn on_device(precision: Precision) -> bool {
    let supported = precision.check_device(&test_device()).is_ok();
    if !supported {
        println!(
            "skip: device={} does not compute in {precision}",
            test_device_name()
        );
    }
    supported
}

fn cast(seed: u64, precision: Precision) -> LanguageModel {
    let mut m = tiny_language_model(seed, &test_device());
    m.set_precision(precision).unwrap();
    m
}

#[test]
fn a_cast_decoder_stays_close_to_f32_and_returns_f32_logits() {
    let tokens = ids(24, 3);
    let f32_model = tiny_language_model(5, &test_device());
    let (want, _) = logits(&f32_model, &tokens, &ExpertMix::Base);
    for (precision, tol) in CASES {
        if !on_device(precision) {
            continue;
        }
        let m = cast(5, precision);
        assert_eq!(m.decoder.precision(), precision);
        let weight = m.decoder.layers[0].self_attn.q_proj.base.weight.val();
        assert_eq!(
            weight.dtype(),
            precision.dtype(),
            "projection weights are cast"
        );
        let norm = m.decoder.layers[0].input_layernorm.gamma.val();
        assert_eq!(norm.dtype(), DType::F32, "norm weights stay f32");
        let (got, dtype) = logits(&m, &tokens, &ExpertMix::Base);
        assert_eq!(dtype, DType::F32, "logits leave the decoder in f32");
        let dev = max_abs_diff(&got, &want);
        println!(
            "parity: device={} precision={precision} op=tiny logits max_abs={dev:.3e} tol={tol}",
            test_device_name()
        );
        assert!(
            dev > 0.0 && dev < tol,
            "{precision}: logits deviate from f32 by {dev} (expected (0, {tol}))"
        );
    }
}

#[test]
fn kv_cache_decoding_in_a_cast_precision_equals_recomputation() {
    for (precision, _) in CASES {
        if !on_device(precision) {
            continue;
        }
        let m = cast(1, precision);
        let prompt: Vec<u32> = ids(7, 2).into_iter().map(|x| x as u32).collect();
        let config = GenerationConfig {
            max_new_tokens: 10,
            stop_at_eos: false,
            ..Default::default()
        };
        let out = generate(&m, std::slice::from_ref(&prompt), &config, &ExpertMix::Base).unwrap();
        let mut seq: Vec<i64> = prompt.iter().map(|&x| x as i64).collect();
        for (step, &token) in out[0].token_ids.iter().enumerate() {
            let (l, _) = logits(&m, &seq, &ExpertMix::Base);
            let v = m.config().vocab_size;
            let last = &l[l.len() - v..];
            let best = (0..v).fold(0, |b, i| if last[i] > last[b] { i } else { b });
            assert_eq!(
                token as usize, best,
                "{precision}: step {step} of cached decoding picked {token}, recomputation {best}"
            );
            seq.push(token as i64);
        }
    }
}

/// LoRA experts on every projection, one per row.
fn with_experts(mut m: LanguageModel) -> LanguageModel {
    let mut rng = StdRng::seed_from_u64(9);
    let mut factors =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.2..0.2)).collect() };
    let sets: Vec<(String, ExpertSet)> = m
        .decoder
        .adapted_linears()
        .into_iter()
        .map(|(name, lin)| {
            let (d_in, d_out, r) = (lin.d_in(), lin.d_out(), 4);
            let experts: Vec<HostFactors> = (0..2)
                .map(|_| HostFactors {
                    a: factors(d_in * r),
                    b: factors(r * d_out),
                    rank: r,
                    scale: 2.0,
                })
                .collect();
            let refs: Vec<Option<&HostFactors>> = experts.iter().map(Some).collect();
            let set = ExpertSet::from_host(&name, d_in, d_out, &refs, &m.device).unwrap();
            (name, set)
        })
        .collect();
    attach_expert_sets(&mut m.decoder, sets).unwrap();
    m
}

#[test]
fn lora_experts_stay_f32_under_a_cast_base() {
    let tokens = ids(16, 4);
    let mix = ExpertMix::PerRow(vec![Some(0), Some(1), None]);
    let reference = with_experts(tiny_language_model(6, &test_device()));
    let (want, _) = logits(&reference, &tokens, &mix);
    let (base, _) = logits(&reference, &tokens, &ExpertMix::PerRow(vec![None; 3]));
    for (precision, tol) in CASES {
        if !on_device(precision) {
            continue;
        }
        let mut m = tiny_language_model(6, &test_device());
        m.set_precision(precision).unwrap();
        let m = with_experts(m);
        let set = m.decoder.layers[0]
            .self_attn
            .q_proj
            .experts
            .as_ref()
            .unwrap();
        assert_eq!(set.a.val().dtype(), DType::F32, "expert factors stay f32");
        let (got, _) = logits(&m, &tokens, &mix);
        let dev = max_abs_diff(&got, &want);
        println!(
            "parity: device={} precision={precision} op=tiny experts per row max_abs={dev:.3e} tol={tol}",
            test_device_name()
        );
        assert!(dev < tol, "{precision}: expert logits deviate by {dev}");
        // The experts change the output far more than the rounding does.
        let effect = max_abs_diff(&want, &base);
        assert!(
            effect > 10.0 * dev,
            "experts' effect {effect} vs rounding {dev}"
        );
    }
}

#[test]
fn lora_training_on_a_bf16_base_lowers_the_loss() {
    if !on_device(Precision::Bf16) {
        return;
    }
    let data = lm_core::testing::animal_sounds(3);
    let m = cast(11, Precision::Bf16);
    let lora = LoraTrainConfig::new()
        .with_r(8)
        .with_alpha(16.0)
        .with_dropout(0.0)
        .with_target_modules(
            ["q_proj", "v_proj", "up_proj", "down_proj"]
                .map(String::from)
                .to_vec(),
        );
    let config = TrainConfig::new(lora)
        .with_max_steps(Some(40))
        .with_lr(1e-2)
        .with_batch_size(3);
    let format = PromptFormat::raw();
    let before = evaluate_loss(&m, None, &data, &config, &format).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config.with_checkpoint_every(20);
    let out = LoraTrainer::new(&m, config.clone())
        .with_format(format.clone())
        .with_checkpoints(dir.path(), false)
        .fit(&data, &data)
        .unwrap();
    assert_eq!(out.report.precision, Precision::Bf16);
    // Its checkpoints do not resume on an f32 base.
    let f32_model = tiny_language_model(11, &test_device());
    let err = LoraTrainer::new(&f32_model, config.clone())
        .with_format(format.clone())
        .with_checkpoints(dir.path(), true)
        .fit(&data, &data)
        .unwrap_err()
        .to_string();
    assert!(err.contains("precision (`--dtype`)"), "{err}");
    let after = evaluate_loss(&m, Some(&out.weights), &data, &config, &format).unwrap();
    println!("bf16 base: eval loss {before:.4} -> {after:.4}");
    assert!(
        after.is_finite() && after < 0.8 * before,
        "eval loss {before} -> {after}"
    );
    assert!(
        out.weights.values.iter().all(|v| v.is_finite()),
        "trained factors are finite"
    );
}

#[test]
fn quantised_decode_weights_and_a_cast_precision_are_refused_together() {
    if !on_device(Precision::Bf16) || !on_device(Precision::F16) {
        return;
    }
    let mut m = tiny_language_model(2, &test_device());
    m.set_decode_weights(lm_core::quant::WeightFormat::Q8_0)
        .unwrap();
    let err = m.set_precision(Precision::Bf16).unwrap_err().to_string();
    assert!(err.contains("--decode-weights f32"), "{err}");
    let mut m = cast(2, Precision::F16);
    let err = m
        .set_decode_weights(lm_core::quant::WeightFormat::Q8_0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("runs in f16"), "{err}");
}

#[test]
fn gemma3_runs_in_bf16_and_refuses_f16() {
    if !on_device(Precision::Bf16) {
        return;
    }
    let tokens = ids(24, 4);
    let f32_model = lm_core::testing::tiny_gemma3_language_model(6, &test_device());
    let (want, _) = logits(&f32_model, &tokens, &ExpertMix::Base);
    let mut m = lm_core::testing::tiny_gemma3_language_model(6, &test_device());
    m.set_precision(Precision::Bf16).unwrap();
    let (got, dtype) = logits(&m, &tokens, &ExpertMix::Base);
    assert_eq!(dtype, DType::F32);
    let dev = max_abs_diff(&got, &want);
    println!(
        "parity: device={} precision=bf16 op=tiny gemma3 logits max_abs={dev:.3e} tol=0.1",
        test_device_name()
    );
    assert!(
        dev > 0.0 && dev < 0.1,
        "gemma3 bf16 logits deviate by {dev}"
    );
    let mut m = lm_core::testing::tiny_gemma3_language_model(6, &test_device());
    let err = m.set_precision(Precision::F16).unwrap_err().to_string();
    assert!(err.contains("--dtype bf16"), "{err}");
    assert_eq!(
        m.decoder.precision(),
        Precision::F32,
        "a refused cast changes nothing"
    );
}

#[test]
fn an_f16_row_alone_computes_as_in_a_batch() {
    // flex's one-row f16 product accumulates in f16; the layer multiplies such a row as a pair.
    // (A GPU's kernels may sum one row and two in other orders: this is about flex.)
    if test_device() != lm_core::burn::tensor::Device::flex() {
        return;
    }
    let m = cast(8, Precision::F16);
    let token = ids(1, 5);
    let (alone, _) = logits(&m, &token, &ExpertMix::Base);
    let (pair, _) = logits(&m, &token, &ExpertMix::PerRow(vec![None, None]));
    let v = m.config().vocab_size;
    assert_eq!(
        alone[..v],
        pair[..v],
        "one f16 row and the same row in a batch of two must give the same logits"
    );
}
