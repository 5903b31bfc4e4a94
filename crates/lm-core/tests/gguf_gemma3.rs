//! Gemma 3 from GGUF without the real model: a tiny random Gemma written as llama.cpp would (its
//! tensor names, norm weights stored as `1 + w`, SentencePiece vocabulary) loads to the same
//! decoder as its HF-named weights; and GGUFs lm-core cannot run are refused clearly.

use lm_core::LmError;
use lm_core::io::gguf::{GgufFile, GgufWriter};
use lm_core::model::layout::{TensorKind, decoder_tensor_plan};
use lm_core::model::loader::{
    GEMMA3_QUERY_PRE_ATTN_SCALAR, GEMMA3_ROPE_LOCAL_THETA, GEMMA3_SLIDING_WINDOW_PATTERN,
    GgufWeights, build_decoder, decoder_config_from_gguf,
};
use lm_core::model::{DecoderArch, DecoderConfig, ExpertMix, LanguageModel};
use lm_core::testing::{TensorMap, max_abs_diff, test_device};
use std::path::Path;

/// The tiny Gemma config with the values a GGUF cannot carry set to transformers' defaults.
fn config() -> DecoderConfig {
    DecoderConfig {
        global_layer_every: Some(GEMMA3_SLIDING_WINDOW_PATTERN),
        rope_local_theta: Some(GEMMA3_ROPE_LOCAL_THETA),
        query_pre_attn_scalar: Some(GEMMA3_QUERY_PRE_ATTN_SCALAR),
        num_layers: 7, // layer 5 is global, the others local
        bos_token_id: Some(2),
        eos_token_ids: vec![1],
        ..DecoderConfig::tiny_gemma3(256)
    }
}

/// Random HF-named weights with norms away from their unit value.
fn weights(c: &DecoderConfig) -> TensorMap {
    let mut w = TensorMap::random_decoder(c, 11);
    for (i, t) in decoder_tensor_plan(c).iter().enumerate() {
        if t.kind == TensorKind::Norm {
            let (values, _) = w.tensors.get_mut(&t.name).unwrap();
            for (j, v) in values.iter_mut().enumerate() {
                *v = ((i * 7 + j * 3) % 11) as f32 / 10.0 - 0.5;
            }
        }
    }
    w
}

/// Gemma 3 metadata for `c` (architecture name and window overridable) and a SentencePiece
/// vocabulary of 256 tokens.
fn metadata(w: &mut GgufWriter, arch: &str, c: &DecoderConfig, window: usize) {
    let k = |s: &str| format!("{arch}.{s}");
    let mut tokens: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>"]
        .map(String::from)
        .to_vec();
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")).take(252));
    let mut types = vec![3, 3, 3, 2];
    types.extend(std::iter::repeat_n(6, 252));
    w.add_str("general.architecture", arch)
        .add_u32(&k("block_count"), c.num_layers as u32)
        .add_u32(&k("embedding_length"), c.hidden_size as u32)
        .add_u32(&k("feed_forward_length"), c.intermediate_size as u32)
        .add_u32(&k("attention.head_count"), c.num_heads as u32)
        .add_u32(&k("attention.head_count_kv"), c.num_kv_heads as u32)
        .add_u32(&k("attention.key_length"), c.head_dim as u32)
        .add_u32(&k("context_length"), c.max_position_embeddings as u32)
        .add_u32(&k("attention.sliding_window"), window as u32)
        .add_f32(&k("rope.freq_base"), c.rope_theta as f32)
        .add_f32(
            &k("attention.layer_norm_rms_epsilon"),
            c.rms_norm_eps as f32,
        )
        .add_str("tokenizer.ggml.model", "llama")
        .add_str_array("tokenizer.ggml.tokens", &tokens)
        .add_f32_array("tokenizer.ggml.scores", &vec![0.0; tokens.len()])
        .add_i32_array("tokenizer.ggml.token_type", &types)
        .add_u32("tokenizer.ggml.bos_token_id", 2)
        .add_u32("tokenizer.ggml.eos_token_id", 1)
        .add_bool("tokenizer.ggml.add_bos_token", true);
}

/// The weights under llama.cpp's names, norms stored as `1 + w`.
fn tensors(w: &mut GgufWriter, c: &DecoderConfig, weights: &TensorMap) {
    for t in decoder_tensor_plan(c) {
        let (values, shape) = &weights.tensors[&t.name];
        let name = GgufWeights::gguf_name_for(DecoderArch::Gemma3, &t.name).unwrap();
        let stored: Vec<f32> = if t.kind == TensorKind::Norm {
            values.iter().map(|v| v + 1.0).collect()
        } else {
            values.clone()
        };
        w.add_tensor_f32(&name, shape, &stored).unwrap();
    }
}

#[test]
fn a_gemma3_gguf_loads_like_its_hf_weights() {
    let c = config();
    let hf = weights(&c);
    let mut w = GgufWriter::new();
    metadata(&mut w, "gemma3", &c, 4);
    tensors(&mut w, &c, &hf);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-gemma3.gguf");
    std::fs::write(&path, w.to_bytes()).unwrap();

    let file = GgufFile::open(&path).unwrap();
    assert_eq!(decoder_config_from_gguf(&file, &path).unwrap(), c);
    let device = test_device();
    let m = LanguageModel::from_gguf(&path, &device).unwrap();
    assert_eq!(m.bos_to_add, Some(2), "SentencePiece adds BOS");
    let reference = build_decoder(&c, &hf, &device).unwrap();
    let tokens = burn::tensor::Tensor::<2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new((0..12).map(|i| (i * 37 % 256) as i64).collect(), [1, 12]),
        &device,
    );
    let a: Vec<f32> = m
        .decoder
        .forward(tokens.clone(), &ExpertMix::Base)
        .into_data()
        .try_into_vec()
        .unwrap();
    let b: Vec<f32> = reference
        .forward(tokens, &ExpertMix::Base)
        .into_data()
        .try_into_vec()
        .unwrap();
    assert!(max_abs_diff(&a, &b) < 1e-5, "{}", max_abs_diff(&a, &b));
}

#[test]
fn an_unsupported_architecture_lists_the_supported_ones() {
    let mut w = GgufWriter::new();
    metadata(&mut w, "phi3", &config(), 4);
    let f = GgufFile::from_bytes(w.to_bytes(), "phi.gguf").unwrap();
    let e = decoder_config_from_gguf(&f, Path::new("phi.gguf")).unwrap_err();
    assert!(matches!(e, LmError::UnsupportedArchitecture { .. }), "{e}");
    let msg = e.to_string();
    for want in ["`phi3`", "llama", "qwen2", "gemma3"] {
        assert!(msg.contains(want), "`{want}` not in: {msg}");
    }
}

#[test]
fn a_sliding_window_wider_than_the_context_is_refused() {
    let c = config();
    let mut w = GgufWriter::new();
    metadata(&mut w, "gemma3", &c, 4096);
    let f = GgufFile::from_bytes(w.to_bytes(), "wide.gguf").unwrap();
    let msg = decoder_config_from_gguf(&f, Path::new("wide.gguf"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("sliding_window (4096)") && msg.contains("context") && msg.contains("128"),
        "{msg}"
    );
    let mut w = GgufWriter::new();
    metadata(&mut w, "gemma3", &c, 0);
    let f = GgufFile::from_bytes(w.to_bytes(), "zero.gguf").unwrap();
    let msg = decoder_config_from_gguf(&f, Path::new("zero.gguf"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sliding_window of at least 1"), "{msg}");
}
