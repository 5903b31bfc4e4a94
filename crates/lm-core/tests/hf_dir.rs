//! HF model directories: the forms a chat template takes (a string, transformers' list of named
//! templates, `chat_template.jinja`), and settings of the wrong type refused instead of read as
//! their default.

use std::path::Path;

use lm_core::chat_template::ChatMessage;
use lm_core::model::LanguageModel;
use lm_core::testing::{TINY_CHAT_TEMPLATE, test_device, write_tiny_hf_dir};
use serde_json::{Value, json};

fn edit(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn load(dir: &Path) -> lm_core::Result<LanguageModel> {
    LanguageModel::from_hf_dir(dir, &test_device())
}

fn render(m: &LanguageModel) -> String {
    m.render_chat(&[ChatMessage::user("Hi")], true).unwrap()
}

#[test]
fn chat_templates_as_string_named_list_or_jinja_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("m");
    write_tiny_hf_dir(&d, 1).unwrap();
    let tc = d.join("tokenizer_config.json");
    let chatml = render(&load(&d).unwrap());
    assert_eq!(
        chatml,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );

    // transformers' list of named templates: `default` is the one used.
    edit(&tc, |v| {
        v["chat_template"] = json!([
            {"name": "tool_use", "template": "TOOLS"},
            {"name": "default", "template": TINY_CHAT_TEMPLATE},
        ]);
    });
    assert_eq!(render(&load(&d).unwrap()), chatml);
    // Without a default, the model loads without a template (as transformers, which only fails
    // when one is applied).
    edit(&tc, |v| {
        v["chat_template"] = json!([{"name": "tool_use", "template": "TOOLS"}]);
    });
    let m = load(&d).unwrap();
    assert!(m.chat_template.is_none());
    let e = m.render_chat(&[ChatMessage::user("Hi")], true).unwrap_err();
    assert!(e.to_string().contains("has no chat template"), "{e}");
    // A malformed entry or another type is refused.
    edit(&tc, |v| v["chat_template"] = json!([{"name": "default"}]));
    let e = load(&d).unwrap_err().to_string();
    assert!(e.contains("chat_template") && e.contains("\"name\""), "{e}");
    edit(&tc, |v| v["chat_template"] = json!(7));
    let e = load(&d).unwrap_err().to_string();
    assert!(e.contains("chat_template") && e.contains("found 7"), "{e}");

    // Newer exports keep the template in chat_template.jinja.
    edit(&tc, |v| {
        v.as_object_mut().unwrap().remove("chat_template");
    });
    assert!(load(&d).unwrap().chat_template.is_none());
    std::fs::write(d.join("chat_template.jinja"), TINY_CHAT_TEMPLATE).unwrap();
    assert_eq!(render(&load(&d).unwrap()), chatml);
}

#[test]
fn settings_of_the_wrong_type_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("m");
    write_tiny_hf_dir(&d, 1).unwrap();
    let tc = d.join("tokenizer_config.json");
    edit(&tc, |v| v["add_bos_token"] = json!("yes"));
    let e = load(&d).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_config.json")
            && e.contains("`add_bos_token`: expected true or false"),
        "{e}"
    );
    edit(&tc, |v| v["add_bos_token"] = json!(true));
    assert_eq!(load(&d).unwrap().bos_to_add, Some(0));

    // Token ids that do not fit u32 are not truncated (2^32 would have become 0).
    let config = d.join("config.json");
    edit(&config, |v| {
        v["eos_token_id"] = json!([2, 4_294_967_296u64])
    });
    let e = load(&d).unwrap_err().to_string();
    assert!(
        e.contains("`eos_token_id`") && e.contains("4294967296"),
        "{e}"
    );
    edit(&config, |v| {
        v["eos_token_id"] = json!(2);
        v["bos_token_id"] = json!(-1);
    });
    let e = load(&d).unwrap_err().to_string();
    assert!(e.contains("`bos_token_id`") && e.contains("-1"), "{e}");
    edit(&config, |v| {
        v["bos_token_id"] = Value::Null;
        v["max_position_embeddings"] = json!(0);
    });
    let e = load(&d).unwrap_err().to_string();
    assert!(e.contains("max_position_embeddings > 0"), "{e}");
}
