//! Reading the two scores out of a pairwise judge's text.
//!
//! The judge prompt ([`crate::prompts::judge_prompt`]) asks for Lion's two final lines with the
//! scores in MT-Bench's double brackets:
//!
//! ```text
//! Score of the Assistant 1: [[8]]
//! Score of the Assistant 2: [[6.5]]
//! ```
//!
//! Three tagged forms are read, and the one that **ends last** in the text wins (judges often
//! quote the format or change their mind before the final lines):
//! - labelled tags: `[[x]]` on a line that names `Assistant 1` / `Assistant 2` before it (the
//!   last valid one of each label; the pair ends where the later of the two ends);
//! - MT-Bench's pair tag `[[a, b]]`;
//! - two unlabelled tags `[[a]] ... [[b]]` (the last two, in order).
//!
//! A tag counts only when it holds a plain decimal number inside the scale (1 to 10 by
//! default); anything else in brackets is ignored, and if nothing valid is left the output is
//! a [`ParseFailure`]. Never a bare integer anywhere in the text (easydistill's fallback reads
//! "step 1" as a score; PEERS.md E2.3), never a default number.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The score scale, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreScale {
    /// Lowest valid score (default 1).
    pub min: f64,
    /// Highest valid score (default 10).
    pub max: f64,
}

impl Default for ScoreScale {
    /// Lion's and MT-Bench's 1 to 10.
    fn default() -> Self {
        Self {
            min: 1.0,
            max: 10.0,
        }
    }
}

/// Why a judge output gave no pair of scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ParseFailure {
    /// The output is empty or blank.
    #[error("empty judge output")]
    Empty,
    /// No `[[...]]` tag at all.
    #[error("no [[score]] tag in the judge output")]
    NoTag,
    /// Tags were found, but none held a number inside the scale.
    #[error("no tag held a number in {min}..={max} (found: {found})")]
    OutOfRange {
        /// Scale minimum.
        min: f64,
        /// Scale maximum.
        max: f64,
        /// The rejected tag contents, comma-separated (at most a few).
        found: String,
    },
    /// Only one of the two scores was found.
    #[error("only one valid score in the judge output; two are needed")]
    Incomplete,
}

static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[\[([^\[\]\n]{0,40})\]\]").expect("valid regex"));
static LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)assistant\s*([12])\b").expect("valid regex"));
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(\d{1,3}(?:\.\d{1,4})?)\s*$").expect("valid regex"));

fn number(s: &str, scale: ScoreScale) -> Option<f64> {
    let m = NUMBER.captures(s)?;
    let v: f64 = m[1].parse().ok()?;
    (v >= scale.min && v <= scale.max).then_some(v)
}

/// The two scores `(assistant 1, assistant 2)` of a judge output (see the module docs).
///
/// # Errors
/// A [`ParseFailure`] saying why no pair was found. Never panics, whatever the text.
pub fn parse_scores(text: &str, scale: ScoreScale) -> Result<(f64, f64), ParseFailure> {
    if text.trim().is_empty() {
        return Err(ParseFailure::Empty);
    }
    // (end, value) of the last valid labelled tag of assistant 1 and 2.
    let mut labelled: [Option<(usize, f64)>; 2] = [None, None];
    let mut pair: Option<(usize, f64, f64)> = None;
    let mut singles: Vec<(usize, f64)> = Vec::new();
    let mut rejected: Vec<String> = Vec::new();
    let mut any = false;
    for m in TAG.captures_iter(text) {
        any = true;
        let whole = m.get(0).expect("group 0 exists");
        let inner = &m[1];
        let end = whole.end();
        if let Some((a, b)) = inner.split_once(',') {
            match (number(a, scale), number(b, scale)) {
                (Some(a), Some(b)) => pair = Some((end, a, b)),
                _ => rejected.push(inner.trim().to_string()),
            }
            continue;
        }
        let Some(v) = number(inner, scale) else {
            rejected.push(inner.trim().to_string());
            continue;
        };
        let line_start = text[..whole.start()].rfind('\n').map_or(0, |i| i + 1);
        let label = LABEL
            .captures_iter(&text[line_start..whole.start()])
            .last()
            .map(|c| if &c[1] == "1" { 0 } else { 1 });
        match label {
            Some(i) => labelled[i] = Some((end, v)),
            None => singles.push((end, v)),
        }
    }
    if !any {
        return Err(ParseFailure::NoTag);
    }
    let mut best: Option<(usize, f64, f64)> = None;
    let mut consider = |c: (usize, f64, f64)| {
        if best.is_none_or(|b| c.0 > b.0) {
            best = Some(c);
        }
    };
    if let [Some((e1, a)), Some((e2, b))] = labelled {
        consider((e1.max(e2), a, b));
    }
    if let Some(p) = pair {
        consider(p);
    }
    if singles.len() >= 2 {
        let (_, a) = singles[singles.len() - 2];
        let (e, b) = singles[singles.len() - 1];
        consider((e, a, b));
    }
    match best {
        Some((_, a, b)) => Ok((a, b)),
        None if labelled.iter().any(Option::is_some) || !singles.is_empty() => {
            Err(ParseFailure::Incomplete)
        }
        None => Err(ParseFailure::OutOfRange {
            min: scale.min,
            max: scale.max,
            found: rejected
                .iter()
                .take(4)
                .map(|s| s.chars().take(20).collect::<String>())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Result<(f64, f64), ParseFailure> {
        parse_scores(s, ScoreScale::default())
    }

    #[test]
    fn reads_the_requested_format() {
        let out = "Evaluation evidence: both fine.\nScore of the Assistant 1: [[8]]\nScore of the Assistant 2: [[6.5]]";
        assert_eq!(p(out), Ok((8.0, 6.5)));
        // labels in the other order on the page still map to their assistants
        let out = "Score of the Assistant 2: [[3]]\nScore of the Assistant 1: [[9]]";
        assert_eq!(p(out), Ok((9.0, 3.0)));
    }

    #[test]
    fn the_last_valid_form_wins() {
        // the format quoted first, then the real scores
        let out = "I will answer as [[1, 10]].\nAssistant 1: [[7]]\nAssistant 2: [[4]]";
        assert_eq!(p(out), Ok((7.0, 4.0)));
        // a change of mind: the final labelled pair wins over earlier ones
        let out = "Assistant 1: [[2]] Assistant 2: [[3]]\nOn reflection:\nAssistant 1: [[9]]\nAssistant 2: [[8]]";
        assert_eq!(p(out), Ok((9.0, 8.0)));
        // a pair tag after labelled tags wins
        let out = "Assistant 1: [[2]]\nAssistant 2: [[3]]\nFinal: [[6, 5]]";
        assert_eq!(p(out), Ok((6.0, 5.0)));
        // unlabelled singles, the last two
        assert_eq!(p("[[1]] then [[4]] and [[5]]"), Ok((4.0, 5.0)));
    }

    #[test]
    fn out_of_range_and_non_numeric_tags_are_ignored() {
        let out = "Assistant 1: [[7]]\nAssistant 2: [[11]]";
        assert_eq!(p(out), Err(ParseFailure::Incomplete));
        let out = "Assistant 1: [[0]]\nAssistant 2: [[12]]";
        assert!(matches!(p(out), Err(ParseFailure::OutOfRange { .. })));
        let out = "Assistant 1: [[8]]\nAssistant 2: [[6]]\nAssistant 2: [[eleven]]";
        assert_eq!(p(out), Ok((8.0, 6.0)));
        assert_eq!(
            p("[[A]]"),
            Err(ParseFailure::OutOfRange {
                min: 1.0,
                max: 10.0,
                found: "A".into()
            })
        );
    }

    #[test]
    fn untagged_numbers_are_never_scores() {
        assert_eq!(
            p("Score of the Assistant 1: 8\nScore of the Assistant 2: 6"),
            Err(ParseFailure::NoTag)
        );
        assert_eq!(p("Step 1: think. Step 2: done."), Err(ParseFailure::NoTag));
        assert_eq!(p("   \n"), Err(ParseFailure::Empty));
        assert_eq!(p("Assistant 1: [[8]]"), Err(ParseFailure::Incomplete));
    }

    #[test]
    fn a_custom_scale_is_honoured() {
        let s = ScoreScale { min: 0.0, max: 9.0 };
        assert_eq!(parse_scores("[[0]] [[9]]", s), Ok((0.0, 9.0)));
        assert!(parse_scores("[[0]] [[10]]", s).is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = p(&s);
        }

        #[test]
        fn never_panics_on_bracket_soup(s in "[\\[\\]0-9., a-zA-Z\n]{0,200}") {
            if let Ok((a, b)) = p(&s) {
                prop_assert!((1.0..=10.0).contains(&a) && (1.0..=10.0).contains(&b));
            }
        }

        /// Whatever comes before, the final labelled lines decide.
        #[test]
        fn the_last_valid_tags_win(prefix in "[\\[\\]0-9., a-zA-Z\n:]{0,200}", a in 1u32..=10, b in 1u32..=10, tenths in 0u32..10) {
            let a = a as f64;
            let b = if b == 10 { 10.0 } else { b as f64 + tenths as f64 / 10.0 };
            let text = format!("{prefix}\nScore of the Assistant 1: [[{a}]]\nScore of the Assistant 2: [[{b}]]\n");
            prop_assert_eq!(p(&text), Ok((a, b)));
        }

        /// An out-of-range tag after valid ones never replaces them.
        #[test]
        fn invalid_trailing_tags_do_not_win(a in 1u32..=10, b in 1u32..=10, bad in 11u32..1000) {
            let text = format!("Assistant 1: [[{a}]]\nAssistant 2: [[{b}]]\nAssistant 1: [[{bad}]]");
            prop_assert_eq!(p(&text), Ok((a as f64, b as f64)));
        }
    }
}
