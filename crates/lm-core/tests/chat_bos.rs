//! Text rendered by a chat template is encoded without added special tokens, as transformers'
//! `apply_chat_template` does (lm-evaluation-harness#3333, DeepSeek-R1#151): a model that adds
//! BOS (`add_bos_token = true`) with a template that writes `{{ bos_token }}` (Llama 3's shape)
//! gets exactly one BOS on every path that tokenises a chat: prompts for generation and
//! evaluation ([`LanguageModel::encode_question`], [`LanguageModel::encode_prompt`]) and
//! training examples ([`tokenize_examples`]). kshot-eval's scoring pairs are checked in its own
//! tests.

use lm_core::chat_template::ChatMessage;
use lm_core::model::LanguageModel;
use lm_core::testing::{TINY_CHAT_TEMPLATE, test_device, tiny_gguf};
use lm_core::train::data::tokenize_examples;
use lm_core::train::{OverflowPolicy, PromptFormat, TrainExample};

const BOS: u32 = 0;

/// The tiny GGUF with `add_bos_token` and the given template.
fn model(add_bos: bool, template: &str) -> LanguageModel {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut w = tiny_gguf(3);
    w.add_bool("tokenizer.ggml.add_bos_token", add_bos)
        .add_str("tokenizer.chat_template", template);
    w.write(&path).unwrap();
    LanguageModel::from_gguf(&path, &test_device()).unwrap()
}

fn bos_template() -> String {
    format!("{{{{ bos_token }}}}{TINY_CHAT_TEMPLATE}")
}

fn count_bos(ids: &[u32]) -> usize {
    ids.iter().filter(|&&i| i == BOS).count()
}

#[test]
fn a_template_that_writes_bos_gives_exactly_one() {
    let m = model(true, &bos_template());
    assert_eq!(m.bos_to_add, Some(BOS));
    let chat = PromptFormat::default();
    let rendered = m.render_chat(&[ChatMessage::user("Hi")], true).unwrap();
    assert!(
        rendered.starts_with("<|endoftext|><|im_start|>user"),
        "{rendered}"
    );

    // Generation and evaluation prompts.
    let ids = m.encode_question(&chat, "Hi").unwrap();
    assert_eq!(&ids[..2], &[BOS, 1], "{ids:?}");
    assert_eq!(count_bos(&ids), 1, "{ids:?}");
    assert_eq!(m.encode_prompt(&chat, &rendered).unwrap(), ids);
    assert_eq!(m.encode_chat(&rendered).unwrap(), ids);
    // Plain `encode` of a text that already starts with BOS adds no second one either.
    assert_eq!(m.encode(&rendered).unwrap(), ids);

    // Training: prompt/response and multi-turn chats, with and without a system turn.
    let examples = [
        TrainExample::PromptResponse {
            prompt: "Hi".into(),
            response: "Yo".into(),
        },
        TrainExample::Chat {
            messages: vec![
                ChatMessage::user("a"),
                ChatMessage::assistant("b"),
                ChatMessage::user("c"),
                ChatMessage::assistant("d"),
            ],
        },
    ];
    for format in [
        chat.clone(),
        PromptFormat::Chat {
            system: Some("be brief".into()),
        },
    ] {
        let (tok, _) =
            tokenize_examples(&m, &examples, &format, 256, OverflowPolicy::Skip).unwrap();
        assert_eq!(tok.len(), 2);
        for t in &tok {
            assert_eq!(t.ids[0], BOS, "{:?}", t.ids);
            assert_eq!(count_bos(&t.ids), 1, "{:?}", t.ids);
        }
    }
}

#[test]
fn plain_text_gets_the_models_bos_once() {
    let m = model(true, &bos_template());
    let ids = m.encode("Hi").unwrap();
    assert_eq!(ids[0], BOS);
    assert_eq!(count_bos(&ids), 1);
    // A raw text that carries the BOS itself keeps exactly one.
    assert_eq!(m.encode("<|endoftext|>Hi").unwrap(), ids);
    // Plain and raw formats, for prompts and training.
    for format in [PromptFormat::plain(), PromptFormat::raw()] {
        let q = m.encode_question(&format, "Hi").unwrap();
        assert_eq!((q[0], count_bos(&q)), (BOS, 1), "{q:?}");
        let ex = TrainExample::PromptResponse {
            prompt: "Hi".into(),
            response: "Yo".into(),
        };
        let (tok, _) = tokenize_examples(&m, &[ex], &format, 64, OverflowPolicy::Skip).unwrap();
        assert_eq!((tok[0].ids[0], count_bos(&tok[0].ids)), (BOS, 1));
    }
}

#[test]
fn a_template_without_bos_adds_none_as_transformers_does() {
    let m = model(true, TINY_CHAT_TEMPLATE);
    let ids = m.encode_question(&PromptFormat::default(), "Hi").unwrap();
    assert_eq!(
        ids[0], 1,
        "the template's first token, no BOS added: {ids:?}"
    );
    assert_eq!(count_bos(&ids), 0);
    // A model that adds no BOS: chat and plain are unchanged.
    let m = model(false, &bos_template());
    let ids = m.encode_question(&PromptFormat::default(), "Hi").unwrap();
    assert_eq!(count_bos(&ids), 1);
    assert_eq!(count_bos(&m.encode("Hi").unwrap()), 0);
}
