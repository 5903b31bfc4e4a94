//! K-shot sets: the JSONL schema, loaders for the default tasks and GSM8K, and seeded splits.
//!
//! One item per line:
//!
//! ```json
//! {"id": "q1", "task": "chain_sum", "question": "What is 2 + 3?", "answer": "5",
//!  "rationale": "2 + 3 = 5.", "choices": ["4", "5"]}
//! ```
//!
//! `question` and `answer` are required; `id`, `task`, `rationale` and `choices` are optional
//! (unknown keys are ignored). A GSM8K line `{"question", "answer": "<solution>\n#### N"}` is read
//! as `rationale = <solution>` (calculator annotations `<<a*b=c>>` removed) and `answer = N`.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{KshotError, Result};

/// One labelled example of the target task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KShotItem {
    /// Stable identifier (defaults to the 0-based line index when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Task name, if the file mixes tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The question (the user turn).
    pub question: String,
    /// The gold answer: a number, a word, an option letter or a choice text (a JSON number is
    /// read as its text).
    #[serde(deserialize_with = "string_or_number")]
    pub answer: String,
    /// Step-by-step reasoning that leads to the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// Answer options for multiple-choice tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
}

impl KShotItem {
    /// A question/answer item without the optional fields.
    pub fn new(question: impl Into<String>, answer: impl Into<String>) -> Self {
        Self {
            id: None,
            task: None,
            question: question.into(),
            answer: answer.into(),
            rationale: None,
            choices: None,
        }
    }

    /// The same item with a rationale.
    pub fn with_rationale(mut self, rationale: impl Into<String>) -> Self {
        self.rationale = Some(rationale.into());
        self
    }

    /// The same item with choices.
    pub fn with_choices(mut self, choices: Vec<String>) -> Self {
        self.choices = Some(choices);
        self
    }

    /// The same item with an id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The item's id, or `#index` when it has none.
    pub fn id_or(&self, index: usize) -> String {
        self.id.clone().unwrap_or_else(|| format!("#{index}"))
    }

    /// The rationale, if present and not blank.
    pub fn rationale_text(&self) -> Option<&str> {
        self.rationale
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
    }

    /// One JSON record as an item, checked (non-empty question and answer, at least two choices
    /// when given), with a GSM8K `"…\n#### N"` answer split into rationale and answer.
    ///
    /// # Errors
    /// A sentence saying what is wrong, for the caller to place (file and line).
    pub fn from_value(value: serde_json::Value) -> std::result::Result<Self, String> {
        if !value.is_object() {
            return Err(format!("found {}", kind_of(&value)));
        }
        let mut item: KShotItem = serde_json::from_value(value).map_err(|e| e.to_string())?;
        if item.question.trim().is_empty() {
            return Err("\"question\" is empty".into());
        }
        split_gsm8k_answer(&mut item);
        if item.answer.trim().is_empty() {
            return Err("\"answer\" is empty".into());
        }
        if let Some(c) = &item.choices
            && c.len() < 2
        {
            return Err(format!(
                "\"choices\" has {} entries, expected at least 2 (or leave it out)",
                c.len()
            ));
        }
        Ok(item)
    }

    /// The item as a training pair `(user turn, assistant response)`: the question and
    /// [`response`](Self::response). Training (`openexpert train`, DiverseEvol, Rocket) learns
    /// exactly what chat-format evaluation scores and extracts from.
    pub fn prompt_response(&self) -> (String, String) {
        (self.question.clone(), self.response())
    }

    /// The default assistant response of the project's chat convention:
    /// `"{rationale}\nThe answer is {answer}."`, or `"The answer is {answer}."` without rationale.
    pub fn response(&self) -> String {
        match self.rationale_text() {
            Some(r) => format!("{r}\nThe answer is {}.", self.answer.trim()),
            None => format!("The answer is {}.", self.answer.trim()),
        }
    }
}

/// Reads a JSON string, or a JSON number as its decimal text (`5`, `2.5`).
fn string_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a string or number answer, found {other}"
        ))),
    }
}

/// A named list of K-shot items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KShotSet {
    /// A name for reports (the file stem by default).
    pub name: String,
    /// The items, in file order.
    pub items: Vec<KShotItem>,
}

/// A seeded split of a set into in-context shots and held-out test items.
#[derive(Debug, Clone, PartialEq)]
pub struct KShotSplit {
    /// The `k` in-context examples.
    pub shots: Vec<KShotItem>,
    /// Every other item, in file order.
    pub test: Vec<KShotItem>,
}

impl KShotSet {
    /// A set from items; fails when there are none.
    pub fn new(name: impl Into<String>, items: Vec<KShotItem>) -> Result<Self> {
        let name = name.into();
        if items.is_empty() {
            return Err(KshotError::EmptySet {
                what: format!("K-shot set {name:?}"),
            });
        }
        Ok(Self { name, items })
    }

    /// Reads a K-shot JSONL file (GSM8K-style `#### N` answers are split, see the module docs).
    pub fn from_jsonl(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| KshotError::io(path, e))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kshot".into());
        Self::parse_jsonl(&text, path, name)
    }

    /// Parses JSONL text; `origin` names the source in errors.
    pub fn parse_jsonl(text: &str, origin: &Path, name: impl Into<String>) -> Result<Self> {
        let mut items = Vec::new();
        for line in data_select::jsonl::jsonl_lines(text.as_bytes()) {
            let line = line.map_err(|e| KshotError::io(origin, e))?;
            let bad = |message: String| KshotError::InvalidItem {
                path: origin.to_path_buf(),
                line: line.number,
                message,
            };
            let value = line
                .parsed
                .map_err(|e| bad(format!("malformed JSON ({e})")))?;
            items.push(KShotItem::from_value(value).map_err(bad)?);
        }
        let name = name.into();
        if items.is_empty() {
            return Err(KshotError::EmptySet {
                what: format!("{} (K-shot set {name:?})", origin.display()),
            });
        }
        Ok(Self { name, items })
    }

    /// A default task's split: `<datasets>/<task>/<split>.jsonl` (the project's default tasks live
    /// in `assets/datasets/<task>/{train,eval}.jsonl`).
    pub fn default_task(datasets: &Path, task: &str, split: &str) -> Result<Self> {
        let path: PathBuf = datasets.join(task).join(format!("{split}.jsonl"));
        let mut set = Self::from_jsonl(&path)?;
        set.name = format!("{task}/{split}");
        Ok(set)
    }

    /// The GSM8K test split fetched by `openexpert fetch gsm8k-test`.
    pub fn gsm8k_test() -> Result<Self> {
        let path = lm_core::assets::openexpert_home().join("data/gsm8k-test/test.jsonl");
        if !path.is_file() {
            return Err(KshotError::InvalidConfig(format!(
                "expected the GSM8K test split at {}, found nothing; run `openexpert fetch gsm8k-test`",
                path.display()
            )));
        }
        let mut set = Self::from_jsonl(&path)?;
        set.name = "gsm8k-test".into();
        Ok(set)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the set has no items (never true for a set built by this crate's constructors).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first `n` items (all when `n` is larger).
    pub fn take(mut self, n: usize) -> Self {
        self.items.truncate(n);
        self
    }

    /// Draws `k` in-context shots with a seeded shuffle; the rest (file order) is the test set.
    /// `k = 0` keeps every item for testing.
    pub fn split(&self, k: usize, seed: u64) -> Result<KShotSplit> {
        if k >= self.items.len() && k > 0 {
            return Err(KshotError::TooManyShots {
                shots: k,
                available: self.items.len(),
            });
        }
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        order.shuffle(&mut StdRng::seed_from_u64(seed));
        let mut picked: Vec<usize> = order[..k].to_vec();
        picked.sort_unstable();
        let shots = picked.iter().map(|&i| self.items[i].clone()).collect();
        let test = (0..self.items.len())
            .filter(|i| picked.binary_search(i).is_err())
            .map(|i| self.items[i].clone())
            .collect();
        Ok(KShotSplit { shots, test })
    }
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// GSM8K answers are `<solution>\n#### N`: the number becomes the answer and the solution (without
/// calculator annotations) the rationale, unless the item already has one.
fn split_gsm8k_answer(item: &mut KShotItem) {
    let Some(pos) = item.answer.rfind("####") else {
        return;
    };
    let solution = item.answer[..pos].trim().to_string();
    let number = item.answer[pos + 4..].trim().to_string();
    if item.rationale.is_none() && !solution.is_empty() {
        item.rationale = Some(strip_calculator_annotations(&solution));
    }
    item.answer = number;
}

/// Removes GSM8K's `<<expression=value>>` calculator annotations.
pub fn strip_calculator_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<<") {
        match rest[start..].find(">>") {
            Some(end) => {
                out.push_str(&rest[..start]);
                rest = &rest[start + end + 2..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<KShotSet> {
        KShotSet::parse_jsonl(text, Path::new("t.jsonl"), "t")
    }

    #[test]
    fn reads_the_schema_and_ignores_unknown_keys() {
        let set = parse(
            "{\"id\":\"a\",\"question\":\"Q?\",\"answer\":\"B\",\"choices\":[\"x\",\"y\"],\"extra\":1}\n\n{\"question\":\"R\",\"answer\":\"4\",\"rationale\":\"2+2\"}\n",
        )
        .unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.items[0].choices.as_ref().unwrap().len(), 2);
        assert_eq!(set.items[1].rationale.as_deref(), Some("2+2"));
        assert_eq!(set.items[1].id_or(1), "#1");
        assert_eq!(set.items[1].response(), "2+2\nThe answer is 4.");
        assert_eq!(set.items[0].response(), "The answer is B.");
    }

    #[test]
    fn gsm8k_answers_become_rationale_and_number() {
        let set =
            parse(r#"{"question":"q","answer":"She has 3 * 2 = <<3*2=6>>6 eggs.\n#### 1,006"}"#)
                .unwrap();
        assert_eq!(set.items[0].answer, "1,006");
        assert_eq!(
            set.items[0].rationale.as_deref(),
            Some("She has 3 * 2 = 6 eggs.")
        );
    }

    #[test]
    fn bad_lines_are_numbered_and_empty_sets_refused() {
        let e = parse("{\"question\":\"q\",\"answer\":\"a\"}\n{\"question\":\"q\"}\n").unwrap_err();
        assert!(e.to_string().contains("t.jsonl:2"), "{e}");
        assert!(matches!(parse("\n  \n"), Err(KshotError::EmptySet { .. })));
        assert!(parse("[1]").unwrap_err().to_string().contains("an array"));
        let one_choice = parse(r#"{"question":"q","answer":"a","choices":["a"]}"#).unwrap_err();
        assert!(
            one_choice.to_string().contains("at least 2"),
            "{one_choice}"
        );
        assert!(matches!(
            KShotSet::new("x", vec![]),
            Err(KshotError::EmptySet { .. })
        ));
    }

    #[test]
    fn split_is_seeded_and_disjoint() {
        let items: Vec<KShotItem> = (0..10)
            .map(|i| KShotItem::new(format!("q{i}"), i.to_string()))
            .collect();
        let set = KShotSet::new("s", items).unwrap();
        let a = set.split(3, 7).unwrap();
        assert_eq!(a, set.split(3, 7).unwrap());
        assert_ne!(a.shots, set.split(3, 8).unwrap().shots);
        assert_eq!(a.shots.len(), 3);
        assert_eq!(a.test.len(), 7);
        for s in &a.shots {
            assert!(!a.test.contains(s));
        }
        assert_eq!(set.split(0, 1).unwrap().test.len(), 10);
        assert!(matches!(
            set.split(10, 1),
            Err(KshotError::TooManyShots { .. })
        ));
    }

    proptest! {
        #[test]
        fn annotations_are_removed_and_plain_text_kept(words in proptest::collection::vec("[a-z0-9 =*]{0,8}", 0..6)) {
            let plain = words.join(" ");
            prop_assert_eq!(strip_calculator_annotations(&plain), plain.clone());
            let annotated = words.iter().map(|w| format!("<<{w}>>{w}")).collect::<Vec<_>>().join(" ");
            prop_assert_eq!(strip_calculator_annotations(&annotated), plain);
        }
    }
}
