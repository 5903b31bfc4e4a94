//! TAPIR's stages one at a time on JSONL (`openexpert tapir judge | classify | refine`): each
//! reads objects, adds fields, and keeps every input field.
//!
//! - [`judge_rows`]: rows with an instruction and two answers (`answer_a` / `answer_b`,
//!   `teacher` / `student`, or `a` / `b`) get `score_a`, `score_b`, `diff` (= a − b: the MFD
//!   when `a` is the teacher), `hard` (`diff ≥ δ`), `winner`, `consistency` and the judge's raw
//!   `outputs` (both orders); unscored rows get nulls, never a number.
//! - [`classify_rows`]: rows with an instruction get `category`, `route` (`tagged`,
//!   `mentioned`, `fallback`) and the classifier's `raw` answer.
//! - [`refine_rows`]: rows with an instruction and a response (`response`, `output` or
//!   `answer`), and optionally a `category` (classified first when absent), get `refined` (the
//!   response to train on) and `refined_used` (false when the refinement failed or was empty
//!   and the original was kept).

use serde_json::{Map, Value, json};
use tapir_curriculum::mfd::MfdConfig;
use tapir_curriculum::pairwise::{Pair, judge_pairs, summarise};
use tapir_curriculum::refine::refine_responses;
use tapir_curriculum::roles::{Judge, RefineRequest, TaskClassifier, Teacher};
use tapir_curriculum::taxonomy::{TaskCategory, classify};

use super::error::{Result, TapirRunError};
use super::inputs::instruction_of;

type Row = Map<String, Value>;

fn field<'a>(row: &'a Row, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| row.get(*k).and_then(Value::as_str))
}

fn need(row: &Row, i: usize, what: &str, keys: &[&str]) -> Result<String> {
    let v = if what == "instruction" {
        instruction_of(&Value::Object(row.clone()))
    } else {
        field(row, keys).map(str::to_string)
    };
    v.ok_or_else(|| TapirRunError::Input {
        path: format!("row {}", i + 1).into(),
        detail: format!(
            "expected {what} ({}), found keys {:?}",
            keys.join(" / "),
            row.keys().collect::<Vec<_>>()
        ),
    })
}

const INSTRUCTION: &[&str] = &[
    "instruction",
    "question",
    "prompt",
    "messages",
    "conversations",
];

const ANSWER_A: &[&str] = &["answer_a", "teacher", "a"];
const ANSWER_B: &[&str] = &["answer_b", "student", "b"];
const RESPONSE: &[&str] = &["response", "output", "answer"];

/// One of the single stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// [`judge_rows`].
    Judge,
    /// [`classify_rows`].
    Classify,
    /// [`refine_rows`].
    Refine,
}

/// Checks that every row holds what `stage` reads, so a bad row stops the command before any
/// model is loaded or called.
///
/// # Errors
/// The first row without a field the stage needs (or with an unknown `category`), by number.
pub fn check_rows(stage: Stage, rows: &[Row]) -> Result<()> {
    for (i, r) in rows.iter().enumerate() {
        need(r, i, "instruction", INSTRUCTION)?;
        match stage {
            Stage::Judge => {
                need(r, i, "answer a", ANSWER_A)?;
                need(r, i, "answer b", ANSWER_B)?;
            }
            Stage::Classify => {}
            Stage::Refine => {
                need(r, i, "a response", RESPONSE)?;
                category_of(r, i)?;
            }
        }
    }
    Ok(())
}

/// A row's `category`, when it names one.
fn category_of(row: &Row, i: usize) -> Result<Option<TaskCategory>> {
    row.get("category")
        .and_then(Value::as_str)
        .map(|c| {
            c.parse::<TaskCategory>().map_err(|e| TapirRunError::Input {
                path: format!("row {}", i + 1).into(),
                detail: e.to_string(),
            })
        })
        .transpose()
}

/// Judges every row (see the module docs); returns the rows and a one-line summary.
///
/// # Errors
/// A row without an instruction or its two answers; the judge failing as a whole.
pub fn judge_rows(
    judge: &mut dyn Judge,
    rows: Vec<Row>,
    config: &MfdConfig,
) -> Result<(Vec<Row>, String)> {
    config.validate()?;
    let mut pairs = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        pairs.push(Pair {
            instruction: need(r, i, "instruction", INSTRUCTION)?,
            a: need(r, i, "answer a", ANSWER_A)?,
            b: need(r, i, "answer b", ANSWER_B)?,
        });
    }
    let judged = judge_pairs(judge, &pairs, &config.pairwise)?;
    let s = summarise(&judged, config.pairwise.tie_delta);
    let out = rows
        .into_iter()
        .zip(&judged)
        .map(|(mut row, j)| {
            let diff = j.score_a.zip(j.score_b).map(|(a, b)| a - b);
            row.insert("score_a".into(), json!(j.score_a));
            row.insert("score_b".into(), json!(j.score_b));
            row.insert("diff".into(), json!(diff));
            row.insert("hard".into(), json!(diff.map(|d| d >= config.delta)));
            row.insert("winner".into(), json!(j.winner));
            row.insert("consistency".into(), json!(j.consistency));
            row.insert(
                "outputs".into(),
                json!({"a_first": j.a_first.outputs, "b_first": j.b_first.as_ref().map(|o| &o.outputs)}),
            );
            row
        })
        .collect();
    let line = format!(
        "{} pairs: {} scored, {} unscored; a wins {} / ties {} / loses {} (win rate {}); {} inconsistent, {} flipped between orders",
        s.pairs,
        s.scored,
        s.unscored,
        s.wins,
        s.ties,
        s.losses,
        s.win_rate
            .map_or("—".into(), |w| format!("{:.0}%", 100.0 * w)),
        s.inconsistent,
        s.flipped
    );
    Ok((out, line))
}

/// Classifies every row (see the module docs); returns the rows and a one-line summary.
///
/// # Errors
/// A row without an instruction; the classifier failing as a whole.
pub fn classify_rows(
    classifier: &mut dyn TaskClassifier,
    rows: Vec<Row>,
) -> Result<(Vec<Row>, String)> {
    let texts = rows
        .iter()
        .enumerate()
        .map(|(i, r)| need(r, i, "instruction", INSTRUCTION))
        .collect::<Result<Vec<_>>>()?;
    let recs = classify(classifier, &texts)?;
    let s = tapir_curriculum::taxonomy::summarise_classes(&recs);
    let out = rows
        .into_iter()
        .zip(recs)
        .map(|(mut row, c)| {
            row.insert("category".into(), json!(c.class.category));
            row.insert("route".into(), json!(c.class.route));
            row.insert("raw".into(), json!(c.raw));
            if let Some(f) = c.failed {
                row.insert("failed".into(), json!(f));
            }
            row
        })
        .collect();
    let cats: Vec<String> = s
        .categories
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    let fallback = s
        .routes
        .get(&tapir_curriculum::taxonomy::ParseRoute::Fallback)
        .copied()
        .unwrap_or(0);
    Ok((
        out,
        format!(
            "{} instructions: {}; {fallback} named no category (Others), {} calls failed",
            s.items,
            cats.join(", "),
            s.failed
        ),
    ))
}

/// Refines every row (see the module docs); returns the rows and a one-line summary.
///
/// # Errors
/// A row without an instruction or response, an unknown `category`; a role failing as a whole.
pub fn refine_rows(
    teacher: &mut dyn Teacher,
    classifier: &mut dyn TaskClassifier,
    rows: Vec<Row>,
) -> Result<(Vec<Row>, String)> {
    let mut requests = Vec::with_capacity(rows.len());
    let mut missing = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let category = category_of(r, i)?;
        let instruction = need(r, i, "instruction", INSTRUCTION)?;
        if category.is_none() {
            missing.push((i, instruction.clone()));
        }
        requests.push(RefineRequest {
            instruction,
            response: need(r, i, "a response", RESPONSE)?,
            category: category.unwrap_or(TaskCategory::Others),
        });
    }
    if !missing.is_empty() {
        let texts: Vec<String> = missing.iter().map(|(_, t)| t.clone()).collect();
        for ((i, _), c) in missing.iter().zip(classify(classifier, &texts)?) {
            requests[*i].category = c.class.category;
        }
    }
    let refined = refine_responses(teacher, &requests)?;
    let used = refined.iter().filter(|r| r.refined).count();
    let n = rows.len();
    let out = rows
        .into_iter()
        .zip(requests.iter().zip(refined))
        .map(|(mut row, (q, r))| {
            row.insert("category".into(), json!(q.category));
            row.insert("refined".into(), json!(r.response));
            row.insert("refined_used".into(), json!(r.refined));
            if let Some(k) = r.kept_because {
                row.insert("kept_because".into(), json!(k));
            }
            row
        })
        .collect();
    Ok((
        out,
        format!(
            "{n} responses: {used} refined, {} kept as they were; {} classified first",
            n - used,
            missing.len()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapir_curriculum::fakes::{FakeClassifier, FakeJudge, FakeTeacher};

    fn rows(v: Value) -> Vec<Row> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_object().unwrap().clone())
            .collect()
    }

    #[test]
    fn judge_adds_scores_and_unscored_rows_get_nulls() {
        let input = rows(json!([
            {"instruction": "hard one", "teacher": "T: x", "student": "S0: y"},
            {"question": "easy one", "answer_a": "T: x", "answer_b": "S0: y", "keep": 1},
        ]));
        let (out, line) = judge_rows(
            &mut FakeJudge::default(),
            input.clone(),
            &MfdConfig::default(),
        )
        .unwrap();
        assert_eq!(out[0]["diff"], json!(3.0));
        assert_eq!(out[0]["hard"], json!(true));
        assert_eq!(out[1]["diff"], json!(0.0));
        assert_eq!(out[1]["keep"], json!(1));
        assert!(line.contains("2 scored"), "{line}");
        let mut never = FakeJudge {
            never_parse: true,
            ..FakeJudge::default()
        };
        let (out, line) = judge_rows(&mut never, input, &MfdConfig::default()).unwrap();
        assert_eq!(out[0]["score_a"], Value::Null);
        assert_eq!(out[0]["hard"], Value::Null);
        assert_eq!(out[0]["consistency"], json!("unscored"));
        assert_eq!(out[0]["outputs"]["a_first"].as_array().unwrap().len(), 3);
        assert!(line.contains("2 unscored"), "{line}");
        let e = judge_rows(
            &mut FakeJudge::default(),
            rows(json!([{"instruction": "q", "a": "x"}])),
            &MfdConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("row 1") && e.contains("answer b"), "{e}");
    }

    #[test]
    fn rows_are_checked_before_any_call() {
        let r = rows(json!([
            {"instruction": "x", "teacher": "a", "student": "b", "response": "r"},
            {"question": "y", "teacher": "a"}
        ]));
        assert!(check_rows(Stage::Classify, &r).is_ok());
        let e = check_rows(Stage::Judge, &r).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("answer_b"), "{e}");
        let e = check_rows(Stage::Refine, &r).unwrap_err().to_string();
        assert!(e.contains("row 2") && e.contains("response"), "{e}");
        let bad = rows(json!([{"instruction": "x", "response": "r", "category": "Cooking"}]));
        let e = check_rows(Stage::Refine, &bad).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("Cooking"), "{e}");
        let none = rows(json!([{"text": "x"}]));
        assert!(check_rows(Stage::Classify, &none).is_err());
    }

    #[test]
    fn classify_and_refine_rows() {
        let (out, line) = classify_rows(
            &mut FakeClassifier::default(),
            rows(json!([{"instruction": "Write a poem"}, {"instruction": "An unknown task"}])),
        )
        .unwrap();
        assert_eq!(out[0]["category"], json!("Writing"));
        assert_eq!(out[1]["category"], json!("Others"));
        assert_eq!(out[1]["route"], json!("fallback"));
        assert!(line.contains("1 named no category"), "{line}");
        let (out, line) = refine_rows(
            &mut FakeTeacher::default(),
            &mut FakeClassifier::default(),
            rows(json!([{"instruction": "Add 2 and 3", "response": "5"}, {"instruction": "q", "output": "o", "category": "Code Debug"}])),
        )
        .unwrap();
        assert_eq!(out[0]["category"], json!("Math"));
        assert_eq!(out[0]["refined"], json!("Refined (math): 5"));
        assert_eq!(out[1]["refined"], json!("Refined (code-debug): o"));
        assert!(line.contains("1 classified first"), "{line}");
        let e = refine_rows(
            &mut FakeTeacher::default(),
            &mut FakeClassifier::default(),
            rows(json!([{"instruction": "q", "response": "r", "category": "Cooking"}])),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Cooking") && e.contains("expected one of"),
            "{e}"
        );
    }
}
