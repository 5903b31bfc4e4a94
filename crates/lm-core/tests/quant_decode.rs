//! Decoding from quantised weights on tiny random models (no assets needed): what `--decode-weights`
//! attaches, that decode-shaped calls use it within the activation-rounding error, that
//! everything else stays bit for bit f32, and LoRA experts on a quantised base.

use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::adapted_linear::ExpertSet;
use lm_core::model::loader::GgufWeights;
use lm_core::model::random::{TensorMap, tiny_file_config, tiny_gguf};
use lm_core::model::{AttentionMask, Decoder, ExpertMix, KvCache, LanguageModel};
use lm_core::quant::{MAX_DECODE_ROWS, WeightFormat, decoding};
use lm_core::testing::{max_abs_diff, test_device, tiny_language_model};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn logits(m: &LanguageModel, tokens: &[i64], rows: usize, mix: &ExpertMix) -> Vec<f32> {
    let seq = tokens.len() / rows;
    let t = Tensor::<2, Int>::from_data(TensorData::new(tokens.to_vec(), [rows, seq]), &m.device);
    m.decoder
        .forward(t, mix)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Logits of one decode step after a prefilled prompt (with the KV cache, so queries meet the
/// cached keys), the step inside [`decoding`] when `quantised`.
fn step_logits(m: &LanguageModel, prompt: &[i64], next: i64, quantised: bool) -> Vec<f32> {
    let dev = &m.device;
    let n = prompt.len();
    let mut cache = KvCache::with_capacity(m.decoder.layers.len(), n + 1);
    m.decoder.forward_hidden(
        Tensor::from_data(TensorData::new(prompt.to_vec(), [1, n]), dev),
        Decoder::default_positions(1, n, 0, dev),
        &AttentionMask::Causal,
        Some(&mut cache),
        &ExpertMix::Base,
    );
    let mut step = || {
        let h = m.decoder.forward_hidden(
            Tensor::from_data(TensorData::new(vec![next], [1, 1]), dev),
            Decoder::default_positions(1, 1, n, dev),
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
    if quantised { decoding(step) } else { step() }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |m, x| m.max(x.abs()))
}

/// The tiny Llama GGUF with every projection stored as Q8_0 (the embedding stays F32).
fn tiny_q8_0_model(dir: &tempfile::TempDir) -> LanguageModel {
    let config = tiny_file_config();
    let mut w = tiny_gguf(5);
    for (name, (values, shape)) in TensorMap::random_decoder(&config, 5).tensors {
        if name.ends_with("_proj.weight") {
            let g = GgufWeights::gguf_name(&name).unwrap();
            w.remove_tensor(&g);
            w.add_tensor_q8_0(&g, &shape, &values).unwrap();
        }
    }
    let path = dir.path().join("tiny-q8_0.gguf");
    w.write(&path).unwrap();
    LanguageModel::from_gguf(&path, &test_device()).unwrap()
}

#[test]
fn native_keeps_the_gguf_blocks_and_decodes_like_their_f32() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = tiny_q8_0_model(&dir);
    let prompt: Vec<i64> = vec![7, 42, 99, 3, 250];
    let before = step_logits(&m, &prompt, 61, false);
    let report = m.set_decode_weights(WeightFormat::Native).unwrap();
    assert_eq!(report.matrices.get("Q8_0"), Some(&14), "{report}");
    assert_eq!(
        report.matrices.get("f32"),
        Some(&1),
        "the F32 tied head: {report}"
    );
    assert_eq!(
        step_logits(&m, &prompt, 61, false),
        before,
        "outside decoding: f32"
    );
    let quant = step_logits(&m, &prompt, 61, true);
    // The loader dequantised the same blocks, so only the i8 activations differ: a wrong q/k
    // row order (Llama's GGUF permutation) would change the logits completely.
    let diff = max_abs_diff(&before, &quant);
    assert!(
        diff > 0.0 && diff < 0.02 * max_abs(&before),
        "max |Δ| {diff} against logits up to {}",
        max_abs(&before)
    );
}

#[test]
fn q8_0_changes_decode_steps_only() {
    let dev = test_device();
    let mut m = tiny_language_model(11, &dev);
    let step: Vec<i64> = vec![3, 17];
    let prompt: Vec<i64> = (1..9).collect();
    let f32_step = logits(&m, &step, 2, &ExpertMix::Base);
    let f32_prompt = logits(&m, &prompt, 1, &ExpertMix::Base);

    let report = m.set_decode_weights(WeightFormat::Q8_0).unwrap();
    assert_eq!(report.matrices.get("Q8_0"), Some(&15), "{report}");
    // Outside a decode step, and for calls of several tokens per row, nothing changes.
    assert_eq!(logits(&m, &step, 2, &ExpertMix::Base), f32_step);
    assert_eq!(
        decoding(|| logits(&m, &prompt, 1, &ExpertMix::Base)),
        f32_prompt
    );
    // More rows than the quantised path takes: f32.
    let many: Vec<i64> = (0..MAX_DECODE_ROWS as i64 + 1).collect();
    assert_eq!(
        decoding(|| logits(&m, &many, many.len(), &ExpertMix::Base)),
        logits(&m, &many, many.len(), &ExpertMix::Base)
    );
    let q = decoding(|| logits(&m, &step, 2, &ExpertMix::Base));
    let diff = max_abs_diff(&f32_step, &q);
    assert!(
        diff > 0.0 && diff < 0.02 * max_abs(&f32_step),
        "max |Δ| {diff}"
    );

    // Back to f32: the copies are gone.
    let report = m.set_decode_weights(WeightFormat::F32).unwrap();
    assert_eq!(report.matrices.get("f32"), Some(&15), "{report}");
    assert_eq!(
        decoding(|| logits(&m, &step, 2, &ExpertMix::Base)),
        f32_step
    );
}

#[test]
fn native_without_a_gguf_file_stays_f32() {
    let dev = test_device();
    let mut m = tiny_language_model(2, &dev);
    let step: Vec<i64> = vec![5];
    let before = logits(&m, &step, 1, &ExpertMix::Base);
    let report = m.set_decode_weights(WeightFormat::Native).unwrap();
    assert_eq!(report.matrices.get("f32"), Some(&15), "{report}");
    assert_eq!(decoding(|| logits(&m, &step, 1, &ExpertMix::Base)), before);
}

#[test]
fn lora_experts_add_their_f32_delta_to_the_quantised_base() {
    let dev = test_device();
    let mut m = tiny_language_model(4, &dev);
    let mut rng = StdRng::seed_from_u64(9);
    let r = 2;
    // Not q/k: with one token, attention ignores them.
    let name = "model.layers.0.mlp.down_proj";
    let layer = m.decoder.adapted_linear_mut(name).unwrap();
    let (d_in, d_out) = (layer.d_in(), layer.d_out());
    let mut random =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-0.5..0.5)).collect() };
    layer.experts = Some(ExpertSet {
        a: Param::from_tensor(Tensor::from_data(
            TensorData::new(random(d_in * r), [d_in, r]),
            &dev,
        )),
        b: Param::from_tensor(Tensor::from_data(
            TensorData::new(random(r * d_out), [r, d_out]),
            &dev,
        )),
        router: None,
        scales: vec![4.0],
        rank: r,
        dropout: None,
    });
    let mix = ExpertMix::Static(vec![1.0]);
    let step: Vec<i64> = vec![8];
    let base = logits(&m, &step, 1, &ExpertMix::Base);
    let adapted = logits(&m, &step, 1, &mix);
    m.set_decode_weights(WeightFormat::Q8_0).unwrap();
    let q_adapted = decoding(|| logits(&m, &step, 1, &mix));
    let effect = max_abs_diff(&base, &adapted);
    let diff = max_abs_diff(&adapted, &q_adapted);
    assert!(
        diff < 0.1 * effect,
        "quantised + LoRA is {diff} from f32 + LoRA; the adapter moves logits by {effect}"
    );
}

#[test]
fn greedy_generation_on_quantised_weights_matches_f32() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = tiny_q8_0_model(&dir);
    let prompts = vec![vec![5u32, 6, 7], vec![9u32]];
    let config = GenerationConfig {
        max_new_tokens: 6,
        stop_at_eos: false,
        ..Default::default()
    };
    let f32_out = generate(&m, &prompts, &config, &ExpertMix::Base).unwrap();
    m.set_decode_weights(WeightFormat::Native).unwrap();
    let q_out = generate(&m, &prompts, &config, &ExpertMix::Base).unwrap();
    // Seeded model and prompts: the greedy tokens agree (the i8 activations move the logits
    // by about 1%, less than the top-2 margins here; a broken kernel or row order would not).
    for (a, b) in f32_out.iter().zip(&q_out) {
        assert_eq!(a.token_ids.len(), 6);
        assert_eq!(a.token_ids, b.token_ids);
    }
}
