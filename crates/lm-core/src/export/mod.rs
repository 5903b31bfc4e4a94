//! Exporting a decoder as a Hugging Face checkpoint directory, streamed tensor by tensor.
//!
//! The directory holds what `transformers.AutoModelForCausalLM.from_pretrained(dir)` and
//! `AutoTokenizer.from_pretrained(dir)` read:
//!
//! - `model.safetensors`: HF tensor names (`model.layers.3.self_attn.q_proj.weight`), PyTorch
//!   `[out, in]` layout, q/k rows in HF's `rotate_half` order (GGUF's Llama permutation undone by
//!   [`GgufWeights`]), no `lm_head.weight` when the embeddings are tied; f32, f16 or bf16;
//! - `config.json` (`LlamaForCausalLM` / `Qwen2ForCausalLM`) and `generation_config.json`;
//! - `tokenizer.json` (the `tokenizers::Tokenizer` lm-core runs, serialised, so ids are the same)
//!   and `tokenizer_config.json` (chat template, bos / eos / pad / unk tokens);
//!
//! For an HF directory as the base, its own tokenizer files and `config.json` are copied (the
//! dtype field updated) instead of being regenerated.
//!
//! Memory: [`export_decoder`] never holds the model. The safetensors header is written first (every
//! offset follows from the shapes and the dtype), then a small window of tensors at a time is read
//! (de-quantised), passed to the caller's `update` hook (the LoRA merge adds ΔW there), converted
//! and written, and dropped. The window is processed in parallel (rayon) and written in order.
//! Output directories are staged next to the target and swapped into place ([`atomic_fs::StagedDir`]).
//!
//! [`GgufWeights`]: crate::model::loader::GgufWeights

mod base;
mod decoder;
mod export_base;
mod reader;
mod safetensors_out;
mod sidecar;

pub use base::*;
pub use decoder::*;
pub use export_base::*;
pub use reader::*;
pub use safetensors_out::*;
pub use sidecar::*;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::io::safetensors::SafetensorsWeights;
    use crate::model::config::{DecoderArch, DecoderConfig};
    use crate::model::hf_config::HfModelConfig;

    #[test]
    fn plan_follows_hf_names_and_tying() {
        let mut c = DecoderConfig::tiny(50);
        let plan = decoder_tensor_plan(&c);
        assert_eq!(plan.len(), 1 + 2 * 9 + 1);
        assert_eq!(plan[0].shape, vec![50, 32]);
        assert!(plan.iter().all(|t| t.name != "lm_head.weight"));
        let q = plan
            .iter()
            .find(|t| t.name == "model.layers.1.self_attn.k_proj.weight")
            .unwrap();
        assert_eq!(q.shape, vec![16, 32]);
        c.tie_word_embeddings = false;
        c.arch = DecoderArch::Qwen2;
        c.attention_bias = true;
        let plan = decoder_tensor_plan(&c);
        assert_eq!(plan.last().unwrap().name, "lm_head.weight");
        assert!(
            plan.iter()
                .any(|t| t.name == "model.layers.0.self_attn.v_proj.bias")
        );
    }

    #[test]
    fn streamed_file_reads_back_with_every_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let plan = vec![
            TensorEntry::new("a".into(), &[2, 3]),
            TensorEntry::new("b".into(), &[5]),
        ];
        let a: Vec<f32> = vec![1.0, -2.5, 3.25, 0.0, 1e-3, -7.0];
        let b: Vec<f32> = vec![0.5, 0.25, -0.125, 8.0, 100.0];
        for dtype in [ExportDtype::F32, ExportDtype::F16, ExportDtype::Bf16] {
            let path = dir.path().join(format!("{dtype:?}.safetensors"));
            let mut w = SafetensorsStreamWriter::create(&path, plan.clone(), dtype).unwrap();
            for (name, v) in [("a", &a), ("b", &b)] {
                let mut bytes = Vec::new();
                dtype.encode_into(v, &mut bytes);
                w.write_encoded(name, &bytes).unwrap();
            }
            w.finish().unwrap();
            let st = SafetensorsWeights::open_file(&path).unwrap();
            let (ga, sa) = st.tensor_f32("a").unwrap();
            assert_eq!(sa, vec![2, 3]);
            let (gb, _) = st.tensor_f32("b").unwrap();
            // values chosen to be exact in every dtype except 1e-3
            for (x, y) in ga.iter().chain(&gb).zip(a.iter().chain(&b)) {
                assert!(
                    (x - y).abs() <= 1e-3 * y.abs().max(1e-3),
                    "{dtype:?} {x} {y}"
                );
            }
        }
    }

    #[test]
    fn writer_refuses_out_of_order_and_missing_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let plan = vec![
            TensorEntry::new("a".into(), &[2]),
            TensorEntry::new("b".into(), &[2]),
        ];
        let path = dir.path().join("x.safetensors");
        let mut w = SafetensorsStreamWriter::create(&path, plan.clone(), ExportDtype::F32).unwrap();
        assert!(w.write_encoded("b", &[0; 8]).is_err());
        assert!(w.write_encoded("a", &[0; 4]).is_err());
        w.write_encoded("a", &[0; 8]).unwrap();
        assert!(w.finish().is_err());
    }

    #[test]
    fn config_json_reads_back_as_the_same_config() {
        let mut c = DecoderConfig::tiny(50);
        c.bos_token_id = Some(1);
        c.rms_norm_eps = 1e-5;
        for arch in [DecoderArch::Llama, DecoderArch::Qwen2, DecoderArch::Gemma3] {
            if arch == DecoderArch::Gemma3 {
                c = DecoderConfig {
                    bos_token_id: Some(1),
                    ..DecoderConfig::tiny_gemma3(50)
                };
            }
            c.arch = arch;
            c.attention_bias = arch == DecoderArch::Qwen2;
            let json = config_json(&c, ExportDtype::Bf16, Some(2));
            if arch == DecoderArch::Gemma3 {
                // transformers' strict Gemma3TextConfig refuses a float here.
                assert!(json["query_pre_attn_scalar"].is_u64(), "{json}");
                assert_eq!(json["architectures"][0], "Gemma3ForCausalLM");
            }
            let text = json.to_string();
            let HfModelConfig::Decoder(back) =
                crate::model::hf_config::parse_hf_config(&text, Path::new("config.json")).unwrap()
            else {
                panic!("expected a decoder")
            };
            assert_eq!(back, c);
        }
    }

    #[test]
    fn dtype_names_parse() {
        assert_eq!("BF16".parse::<ExportDtype>().unwrap(), ExportDtype::Bf16);
        assert_eq!("float16".parse::<ExportDtype>().unwrap(), ExportDtype::F16);
        assert!("int8".parse::<ExportDtype>().is_err());
    }
}
