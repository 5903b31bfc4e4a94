//! Fuzzing K-shot item parsing: any text as a K-shot JSONL file, and K-shot lines whose fields
//! hold any JSON value, never panic the reader, the GSM8K answer split, the gold-choice lookup,
//! the seeded split or the response builder; a parsed item always has a question and an answer.

use std::path::Path;

use kshot_eval::eval::gold_choice;
use kshot_eval::{KShotItem, KShotSet};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Any JSON value, nested a little, with strings that matter here (`####`, letters, numbers).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just("#### 4".to_string()),
            Just("so 2+2=4\n#### 4".to_string()),
            Just("####".to_string()),
            Just("B".to_string()),
            Just("1".to_string()),
            Just("  ".to_string()),
            "\\PC{0,16}",
            "[#é世 0-9A-D\n]{0,12}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A K-shot record: the known fields, each absent or any value.
fn record() -> impl Strategy<Value = Value> {
    let field = || proptest::option::weighted(0.8, json_value());
    (field(), field(), field(), field(), field()).prop_map(|(q, a, r, c, id)| {
        let mut o = serde_json::Map::new();
        for (k, v) in [
            ("question", q),
            ("answer", a),
            ("rationale", r),
            ("choices", c),
            ("id", id),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), v);
            }
        }
        Value::Object(o)
    })
}

/// Everything downstream of parsing, on a parsed set.
fn exercise(set: &KShotSet) {
    for (i, it) in set.items.iter().enumerate() {
        assert!(!it.question.trim().is_empty() && !it.answer.trim().is_empty());
        let _ = it.response();
        let _ = it.prompt_response();
        let _ = it.rationale_text();
        if it.choices.is_some() {
            let _ = gold_choice(it, &it.id_or(i));
        }
    }
    for k in [0, 1, set.len(), set.len() + 1] {
        let _ = set.split(k, 7);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_text_never_panics(text in "\\PC{0,200}") {
        if let Ok(set) = KShotSet::parse_jsonl(&text, Path::new("fuzz.jsonl"), "fuzz") {
            exercise(&set);
        }
    }

    #[test]
    fn records_with_any_field_values_never_panic(records in proptest::collection::vec(record(), 0..4), blank in any::<bool>()) {
        let mut text = String::new();
        for r in &records {
            text.push_str(&r.to_string());
            text.push('\n');
            if blank {
                text.push('\n');
            }
        }
        if let Ok(set) = KShotSet::parse_jsonl(&text, Path::new("fuzz.jsonl"), "fuzz") {
            exercise(&set);
        }
        for r in records {
            if let Ok(item) = KShotItem::from_value(r) {
                exercise(&KShotSet::new("one", vec![item]).unwrap());
            }
        }
    }
}
