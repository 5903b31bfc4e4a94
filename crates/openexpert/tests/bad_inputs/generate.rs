//! The binary inputs of the bad-input corpus, written from code so each one says how it was made.
//!
//! - [`committed`]: the small files (< 10 KiB) that live in the corpus folders; the corpus test
//!   checks the committed bytes still equal what these functions write
//!   (`OPENEXPERT_BLESS_CORPUS=1` rewrites them).
//! - [`Fixtures`]: valid tiny models (a Llama GGUF, an HF Llama directory, a BERT directory), a
//!   bank of two tiny adapters and a mixture built from them, written once per run.
//! - [`generate`]: the larger inputs, made at test time from the fixtures by the generator a case
//!   names (`generate = "..."` in `cases.toml`); the case's committed files are copied on top.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use lm_core::io::gguf::{GgmlType, GgufValue};
use lm_core::testing::{GgufWriter, tiny_gguf, tiny_vocab, write_tiny_bert_dir, write_tiny_hf_dir};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};

/// Width of the tiny models (`DecoderConfig::tiny`): q/o are `[32, 32]`, k/v `[16, 32]`.
const D: usize = 32;
/// Output width of k_proj / v_proj in the tiny models (2 KV heads of 8).
const D_KV: usize = 16;

/// A small valid GGUF (metadata and two F32 tensors) that the corrupt GGUF cases break.
fn small_gguf() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama")
        .add_u32("llama.block_count", 1)
        .add_str_array("tokenizer.ggml.tokens", &["a", "b"]);
    w.add_tensor_f32("first.weight", &[2, 4], &[1.0; 8])
        .unwrap();
    w.add_tensor_f32("second.weight", &[4], &[2.0; 4]).unwrap();
    w
}

/// Offset of the first byte after `needle` in `bytes`.
fn after(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
        + needle.len()
}

/// Offset just after the length-prefixed GGUF string `s`.
fn after_gguf_str(bytes: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(s.as_bytes());
    after(bytes, &needle)
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The corrupt GGUF files (each a few hundred bytes).
fn gguf_cases() -> Vec<(String, Vec<u8>)> {
    let valid = small_gguf().to_bytes();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = valid.clone();
        f(&mut b);
        b
    };
    // Tensor record of `first.weight`: name, n_dims u32, dims u64 x n, type u32, offset u64.
    let a_record = after_gguf_str(&valid, "first.weight");
    let mut out = vec![
        ("gguf/empty/model.gguf", Vec::new()),
        (
            "gguf/wrong-magic/model.gguf",
            with(&|b| b[..4].copy_from_slice(b"GGML")),
        ),
        ("gguf/truncated-header/model.gguf", valid[..13].to_vec()),
        (
            "gguf/truncated-metadata/model.gguf",
            valid[..after_gguf_str(&valid, "general.architecture") + 2].to_vec(),
        ),
        ("gguf/bad-version/model.gguf", with(&|b| put_u32(b, 4, 99))),
        ("gguf/version-1/model.gguf", with(&|b| put_u32(b, 4, 1))),
        (
            "gguf/tensor-count-huge/model.gguf",
            with(&|b| put_u64(b, 8, u64::MAX / 2)),
        ),
        (
            "gguf/metadata-count-huge/model.gguf",
            with(&|b| put_u64(b, 16, 1 << 40)),
        ),
        (
            "gguf/key-length-huge/model.gguf",
            with(&|b| put_u64(b, 24, 1 << 50)),
        ),
        (
            "gguf/bad-value-type/model.gguf",
            with(&|b| {
                let at = after_gguf_str(b, "general.architecture");
                put_u32(b, at, 99);
            }),
        ),
        (
            "gguf/array-length-huge/model.gguf",
            with(&|b| {
                // type (u32 = array), item type (u32), then the length (u64).
                let at = after_gguf_str(b, "tokenizer.ggml.tokens") + 8;
                put_u64(b, at, u64::MAX - 3);
            }),
        ),
        (
            "gguf/string-not-utf8/model.gguf",
            with(&|b| {
                let at = after_gguf_str(b, "general.architecture") + 4 + 8;
                b[at] = 0xff; // the value "llama" starts with an invalid byte
            }),
        ),
        (
            "gguf/tensor-dims-too-many/model.gguf",
            with(&|b| put_u32(b, a_record, 9)),
        ),
        (
            "gguf/tensor-dims-overflow/model.gguf",
            with(&|b| {
                put_u64(b, a_record + 4, u64::MAX / 3);
                put_u64(b, a_record + 12, u64::MAX / 3);
            }),
        ),
        (
            "gguf/tensor-unknown-type/model.gguf",
            with(&|b| put_u32(b, a_record + 4 + 16, 200)),
        ),
        (
            "gguf/tensor-offset-out-of-range/model.gguf",
            with(&|b| put_u64(b, a_record + 4 + 16 + 4, 1 << 20)),
        ),
        (
            "gguf/tensor-offset-misaligned/model.gguf",
            with(&|b| put_u64(b, a_record + 4 + 16 + 4, 3)),
        ),
    ];
    let mut w = small_gguf();
    w.add("general.alignment", GgufValue::U32(0));
    out.push(("gguf/alignment-zero/model.gguf", w.to_bytes()));
    let mut w = small_gguf();
    w.remove("general.architecture");
    out.push(("gguf/no-architecture/model.gguf", w.to_bytes()));
    let mut w = small_gguf();
    w.add_str("general.architecture", "gpt2");
    out.push(("gguf/unsupported-architecture/model.gguf", w.to_bytes()));
    out.into_iter().map(|(p, b)| (p.to_string(), b)).collect()
}

/// Serialises f32 tensors (name, shape, values) as safetensors bytes.
fn safetensors_f32(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()
}

/// A safetensors file from a raw JSON header and data bytes (for headers the crate won't write).
fn safetensors_raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|j| (((seed * 31 + j) as f32) * 0.37).sin() * 0.1)
        .collect()
}

/// The PEFT key of a factor of the tiny models.
fn key(layer: usize, proj: &str, factor: &str) -> String {
    format!("base_model.model.model.layers.{layer}.self_attn.{proj}.{factor}.weight")
}

/// LoRA factors of rank `r` for q_proj and v_proj of both layers of the tiny models.
fn tiny_factors(r: usize, seed: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for layer in 0..2 {
        for (k, (proj, d_out)) in [("q_proj", D), ("v_proj", D_KV)].into_iter().enumerate() {
            let s = seed * 7 + layer * 2 + k;
            out.push((key(layer, proj, "lora_A"), vec![r, D], values(r * D, s)));
            out.push((
                key(layer, proj, "lora_B"),
                vec![d_out, r],
                values(d_out * r, s + 1),
            ));
        }
    }
    out
}

/// A valid PEFT config for [`tiny_factors`].
pub fn tiny_adapter_config(r: usize) -> Value {
    json!({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r,
           "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0, "bias": "none",
           "init_lora_weights": true, "base_model_name_or_path": "tiny"})
}

/// The corrupt adapter weight files (`adapter_model.safetensors`, next to a committed valid
/// config).
fn safetensors_cases() -> Vec<(String, Vec<u8>)> {
    let valid = safetensors_f32(&tiny_factors(2, 0));
    let a0 = key(0, "q_proj", "lora_A");
    let b0 = key(0, "q_proj", "lora_B");
    let mut huge = valid.clone();
    put_u64(&mut huge, 0, 1 << 40);
    let header_len = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let p = |case: &str| format!("safetensors/{case}/adapter_model.safetensors");
    let mut out = vec![
        (p("empty-file"), Vec::new()),
        (p("shorter-than-length"), vec![1, 0, 0]),
        (p("header-length-huge"), huge),
        (p("truncated-data"), valid[..valid.len() - 10].to_vec()),
        (p("header-cut"), valid[..8 + header_len / 2].to_vec()),
        (
            p("header-not-json"),
            safetensors_raw("{this is not json}", &[]),
        ),
        (p("header-not-object"), safetensors_raw("[1, 2, 3]", &[])),
        (
            p("unknown-dtype"),
            safetensors_raw(
                &format!(r#"{{"{a0}":{{"dtype":"F99","shape":[2,{D}],"data_offsets":[0,256]}}}}"#),
                &[0; 256],
            ),
        ),
        (
            p("offsets-out-of-range"),
            safetensors_raw(
                &format!(r#"{{"{a0}":{{"dtype":"F32","shape":[2,{D}],"data_offsets":[0,4096]}}}}"#),
                &[0; 256],
            ),
        ),
        (
            p("shape-bytes-mismatch"),
            safetensors_raw(
                &format!(r#"{{"{a0}":{{"dtype":"F32","shape":[2,{D}],"data_offsets":[0,100]}}}}"#),
                &[0; 100],
            ),
        ),
        (
            p("dtype-int"),
            safetensors_raw(
                &format!(
                    r#"{{"{a0}":{{"dtype":"I32","shape":[2,{D}],"data_offsets":[0,256]}},"{b0}":{{"dtype":"I32","shape":[{D},2],"data_offsets":[256,512]}}}}"#
                ),
                &[0; 512],
            ),
        ),
    ];
    // Factors that disagree with each other or with the config.
    let mut rank_mismatch = tiny_factors(2, 0);
    rank_mismatch[1] = (b0.clone(), vec![D, 3], values(D * 3, 5));
    out.push((p("rank-mismatch"), safetensors_f32(&rank_mismatch)));
    let mut missing_b = tiny_factors(2, 0);
    missing_b.remove(1);
    out.push((p("missing-lora-b"), safetensors_f32(&missing_b)));
    let mut wrong_width = tiny_factors(2, 0);
    wrong_width[0] = (a0.clone(), vec![2, 2 * D], values(4 * D, 5));
    out.push((p("width-not-the-models"), safetensors_f32(&wrong_width)));
    let mut three_d = tiny_factors(2, 0);
    three_d[0] = (a0.clone(), vec![2, D, 1], values(2 * D, 5));
    out.push((p("factor-3d"), safetensors_f32(&three_d)));
    let mut nan = tiny_factors(2, 0);
    nan[0].2[3] = f32::NAN;
    out.push((p("nan-factor"), safetensors_f32(&nan)));
    out.push((
        p("rank-not-the-configs"),
        safetensors_f32(&tiny_factors(4, 0)),
    ));
    out.push((
        p("no-lora-tensors"),
        safetensors_f32(&[("other".into(), vec![2], vec![1.0, 2.0])]),
    ));
    out
}

/// Invalid UTF-8 text inputs.
fn text_cases() -> Vec<(String, Vec<u8>)> {
    let mut bad = b"{\"text\": \"caf".to_vec();
    bad.extend_from_slice(&[0xc3, 0x28, 0xff]);
    bad.extend_from_slice(b"\"}\n");
    let mut kshot = b"{\"question\": \"2+2?\", \"answer\": \"4\"}\n{\"question\": \"".to_vec();
    kshot.extend_from_slice(&[0xfe, 0xfe]);
    kshot.extend_from_slice(b"\", \"answer\": \"1\"}\n");
    [
        ("jsonl/score-invalid-utf8/input.jsonl", bad.clone()),
        ("jsonl/pool-invalid-utf8/pool.jsonl", bad.clone()),
        ("jsonl/train-invalid-utf8/data.jsonl", bad),
        ("kshot/invalid-utf8/task.jsonl", kshot),
    ]
    .into_iter()
    .map(|(p, b)| (p.to_string(), b))
    .collect()
}

/// Every committed binary file of the corpus, by path under the corpus folder.
pub fn committed() -> Vec<(String, Vec<u8>)> {
    let mut out = gguf_cases();
    out.extend(safetensors_cases());
    out.extend(text_cases());
    out
}

/// The valid inputs every run builds once, in a temporary folder.
pub struct Fixtures {
    /// A tiny Llama GGUF (`lm_core::testing::tiny_gguf`).
    pub gguf: PathBuf,
    /// The HF directory of a tiny Llama.
    pub hf: PathBuf,
    /// The HF directory of a tiny BERT encoder.
    pub bert: PathBuf,
    /// A bank of two tiny adapters, `a` and `b`.
    pub bank: PathBuf,
    /// A mixture of `a` and `b` built by `openexpert moe build`.
    pub moe: PathBuf,
}

/// Writes a PEFT adapter directory.
pub fn write_adapter(dir: &Path, config: &Value, factors: &[(String, Vec<usize>, Vec<f32>)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), config.to_string()).unwrap();
    std::fs::write(
        dir.join("adapter_model.safetensors"),
        safetensors_f32(factors),
    )
    .unwrap();
}

impl Fixtures {
    /// Builds the fixtures under `root` with the CLI binary `bin`.
    pub fn build(root: &Path, bin: &Path) -> Self {
        std::fs::create_dir_all(root).unwrap();
        let gguf = root.join("tiny.gguf");
        tiny_gguf(11).write(&gguf).unwrap();
        let hf = root.join("tiny-hf");
        write_tiny_hf_dir(&hf, 11).unwrap();
        let bert = root.join("tiny-bert");
        write_tiny_bert_dir(&bert, 11).unwrap();
        let bank = root.join("bank");
        for (name, seed) in [("a", 1), ("b", 2)] {
            write_adapter(
                &bank.join(name),
                &tiny_adapter_config(2),
                &tiny_factors(2, seed),
            );
        }
        let moe = root.join("moe");
        let out = Command::new(bin)
            .args(["moe", "build", "--model"])
            .arg(&gguf)
            .arg("--bank")
            .arg(&bank)
            .args(["--experts", "a,b", "--output"])
            .arg(&moe)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the fixture mixture failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            gguf,
            hf,
            bert,
            bank,
            moe,
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// A tiny GGUF changed by `f`, written as `dir/model.gguf`.
fn gguf_with(dir: &Path, f: impl FnOnce(&mut GgufWriter)) {
    let mut w = tiny_gguf(11);
    f(&mut w);
    w.write(dir.join("model.gguf")).unwrap();
}

/// Writes the generated files of case generator `name` into `dir`.
///
/// # Panics
/// On an unknown generator name (a typo in `cases.toml`).
pub fn generate(name: &str, dir: &Path, fx: &Fixtures) {
    std::fs::create_dir_all(dir).unwrap();
    match name {
        // Models whose tokenizer produces an id past the embedding table (fault 3).
        "gguf_extra_token" => gguf_with(dir, |w| {
            let mut tokens = tiny_vocab();
            tokens.push("<|extra_ctl|>".into());
            let mut types = vec![1i32; tokens.len()];
            types[..3].fill(3);
            types[tokens.len() - 1] = 3;
            w.add_str_array("tokenizer.ggml.tokens", &tokens)
                .add_i32_array("tokenizer.ggml.token_type", &types);
        }),
        "gguf_bos_out_of_range" => gguf_with(dir, |w| {
            w.add_bool("tokenizer.ggml.add_bos_token", true)
                .add_u32("tokenizer.ggml.bos_token_id", 60000);
        }),
        "gguf_missing_tensor" => gguf_with(dir, |w| {
            w.remove_tensor("blk.1.ffn_down.weight");
        }),
        "gguf_shape_mismatch" => gguf_with(dir, |w| {
            w.add_u32("llama.embedding_length", 48);
        }),
        "gguf_head_count_zero" => gguf_with(dir, |w| {
            w.add_u32("llama.attention.head_count", 0);
        }),
        "gguf_heads_not_dividing" => gguf_with(dir, |w| {
            w.add_u32("llama.attention.head_count_kv", 3);
        }),
        "gguf_block_count_huge" => gguf_with(dir, |w| {
            w.add_u32("llama.block_count", u32::MAX);
        }),
        "gguf_vocab_size_huge" => gguf_with(dir, |w| {
            w.add_u32("llama.vocab_size", u32::MAX);
        }),
        "gguf_head_dim_huge" => gguf_with(dir, |w| {
            w.add_u32("llama.attention.key_length", u32::MAX - 1);
        }),
        "gguf_context_length_zero" => gguf_with(dir, |w| {
            w.add_u32("llama.context_length", 0);
        }),
        "gguf_unsupported_dtype" => gguf_with(dir, |w| {
            w.remove_tensor("output_norm.weight");
            w.add_tensor_raw("output_norm.weight", &[D], GgmlType::I32, vec![0; 4 * D])
                .unwrap();
        }),
        "gguf_tokenizer_t5" => gguf_with(dir, |w| {
            w.add_str("tokenizer.ggml.model", "t5");
        }),
        "gguf_sentencepiece_no_scores" => gguf_with(dir, |w| {
            w.add_str("tokenizer.ggml.model", "llama")
                .remove("tokenizer.ggml.merges");
        }),
        "gguf_bad_merge" => gguf_with(dir, |w| {
            w.add_str_array("tokenizer.ggml.merges", &["a b c"]);
        }),
        "gguf_token_type_length" => gguf_with(dir, |w| {
            w.add_i32_array("tokenizer.ggml.token_type", &[3, 3, 3]);
        }),
        "gguf_no_tokens" => gguf_with(dir, |w| {
            w.remove("tokenizer.ggml.tokens");
        }),
        "gguf_template_syntax_error" => gguf_with(dir, |w| {
            w.add_str(
                "tokenizer.chat_template",
                "{% for message in messages %}{{ message",
            );
        }),
        "gguf_template_raises" => gguf_with(dir, |w| {
            w.add_str(
                "tokenizer.chat_template",
                "{{ raise_exception('Conversation roles must alternate user/assistant') }}",
            );
        }),
        "gguf_no_template" => gguf_with(dir, |w| {
            w.remove("tokenizer.chat_template");
        }),
        // HF directories (committed files are copied on top).
        "hf" => copy_dir(&fx.hf, dir),
        "hf_added_token_beyond" => {
            copy_dir(&fx.hf, dir);
            let mut tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
            tok.add_special_tokens([tokenizers::AddedToken::from("<|extra|>", true)])
                .unwrap();
            tok.save(dir.join("tokenizer.json"), false).unwrap();
        }
        "hf_pad_beyond" => {
            copy_dir(&fx.hf, dir);
            edit_json(&dir.join("config.json"), |v| {
                v["pad_token_id"] = 4000.into()
            });
        }
        "hf_eos_huge" => {
            copy_dir(&fx.hf, dir);
            edit_json(&dir.join("config.json"), |v| {
                v["eos_token_id"] = json!([2, 4_294_967_296u64]);
            });
        }
        "hf_missing_vocab_size" => {
            copy_dir(&fx.hf, dir);
            edit_json(&dir.join("config.json"), |v| {
                v.as_object_mut().unwrap().remove("vocab_size");
            });
        }
        "hf_unknown_model_type" => {
            copy_dir(&fx.hf, dir);
            edit_json(&dir.join("config.json"), |v| {
                v["model_type"] = "gpt_neox".into()
            });
        }
        "hf_vocab_size_wrong" => {
            copy_dir(&fx.hf, dir);
            edit_json(&dir.join("config.json"), |v| v["vocab_size"] = 300.into());
        }
        "hf_layers_huge" => {
            copy_dir(&fx.hf, dir);
            edit_json(&dir.join("config.json"), |v| {
                v["num_hidden_layers"] = json!(1u64 << 40);
            });
        }
        "hf_no_weights" => {
            copy_dir(&fx.hf, dir);
            std::fs::remove_file(dir.join("model.safetensors")).unwrap();
        }
        "hf_truncated_weights" => {
            copy_dir(&fx.hf, dir);
            let p = dir.join("model.safetensors");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() / 2]).unwrap();
        }
        "hf_no_tokenizer" => {
            copy_dir(&fx.hf, dir);
            std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
        }
        "bert" => copy_dir(&fx.bert, dir),
        "bert_added_token_beyond" => {
            copy_dir(&fx.bert, dir);
            let mut tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
            tok.add_tokens([tokenizers::AddedToken::from("[NEW]", false)])
                .unwrap();
            tok.save(dir.join("tokenizer.json"), false).unwrap();
        }
        // Adapters: valid factors next to a committed (bad) config.
        "adapter_factors" => {
            std::fs::write(
                dir.join("adapter_model.safetensors"),
                safetensors_f32(&tiny_factors(2, 3)),
            )
            .unwrap();
        }
        "adapter_config_valid" => {
            std::fs::write(
                dir.join("adapter_config.json"),
                tiny_adapter_config(2).to_string(),
            )
            .unwrap();
        }
        // Mixtures: the fixture mixture, then broken.
        "moe" => copy_dir(&fx.moe, dir),
        "moe_no_router" => {
            copy_dir(&fx.moe, dir);
            std::fs::remove_file(dir.join("router.safetensors")).unwrap();
        }
        "moe_no_config" => {
            copy_dir(&fx.moe, dir);
            std::fs::remove_file(dir.join("moe_config.json")).unwrap();
        }
        "moe_router_truncated" => {
            copy_dir(&fx.moe, dir);
            let p = dir.join("router.safetensors");
            let b = std::fs::read(&p).unwrap();
            std::fs::write(&p, &b[..b.len() - 16]).unwrap();
        }
        "moe_three_experts" => {
            copy_dir(&fx.moe, dir);
            copy_dir(&dir.join("experts/a"), &dir.join("experts/c"));
            edit_json(&dir.join("moe_config.json"), |v| {
                let experts = v["config"]["experts"].as_array_mut().unwrap();
                let mut c = experts[0].clone();
                c["name"] = "c".into();
                c["path"] = "experts/c".into();
                experts.push(c);
            });
        }
        "moe_one_expert" => {
            copy_dir(&fx.moe, dir);
            edit_json(&dir.join("moe_config.json"), |v| {
                v["config"]["experts"].as_array_mut().unwrap().truncate(1);
            });
        }
        "moe_missing_expert_dir" => {
            copy_dir(&fx.moe, dir);
            std::fs::remove_dir_all(dir.join("experts/b")).unwrap();
        }
        "moe_top_k_zero" => {
            copy_dir(&fx.moe, dir);
            edit_json(&dir.join("moe_config.json"), |v| {
                v["config"]["top_k"] = 0.into()
            });
        }
        "moe_router_wrong_width" => {
            copy_dir(&fx.moe, dir);
            let p = dir.join("router.safetensors");
            let bytes = std::fs::read(&p).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = st
                .tensors()
                .into_iter()
                .map(|(n, v)| {
                    let shape = v.shape().to_vec();
                    let wide = vec![shape[0], shape[1] + 1];
                    (n, wide.clone(), vec![0.1; wide[0] * wide[1]])
                })
                .collect();
            std::fs::write(&p, safetensors_f32(&tensors)).unwrap();
        }
        "bank" => copy_dir(&fx.bank, dir),
        other => panic!("cases.toml names an unknown generator `{other}`"),
    }
}
