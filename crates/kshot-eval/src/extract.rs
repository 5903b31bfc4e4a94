//! Answer extraction from generated text, and exact-match comparison with the gold answer.
//!
//! An [`AnswerExtractor`] tries its [`Extractor`] steps in order and keeps the first that finds
//! something; when none does, the item counts as wrong and is reported as *unextracted* (never
//! an error). The project default for chat tasks is `[AnswerIs, Auto]`: the text after the last
//! `The answer is ` (up to a trailing `.`), else the final number when the gold answer is a
//! number, else the last non-empty line.
//!
//! Matching ([`answers_match`]) follows lm-eval's `exact_match` with `ignore_case` and its
//! GSM8K `regexes_to_ignore`: both sides are trimmed, `,` and `$` dropped, trailing `.` removed,
//! case ignored; two numbers match by value (`18.00` = `18`).

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{KshotError, Result};

/// The marker of the project's chat convention (`... The answer is X.`).
pub const ANSWER_MARKER: &str = "The answer is ";

/// One way to find the answer in a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Extractor {
    /// Text after the last `The answer is ` up to the end of its line, trailing `.` removed.
    AnswerIs,
    /// The last number in the text (`-1,234.5` style).
    FinalNumber,
    /// The last standalone option letter among the first `n_choices` (A, B, ...), as in
    /// `(B)`, `B.`, `answer: B`.
    OptionLetter {
        /// How many options the task has (letters beyond are ignored).
        n_choices: usize,
    },
    /// A regular expression; `group` 0 is the whole match; `last` picks the last match instead of
    /// the first (lm-eval's `group_select: -1`).
    Regex {
        /// The pattern (Rust `regex` syntax).
        pattern: String,
        /// Capture group to keep.
        group: usize,
        /// Keep the last match instead of the first.
        last: bool,
    },
    /// The last non-empty line, trimmed.
    LastLine,
    /// [`FinalNumber`](Self::FinalNumber) when the gold answer is a number, else
    /// [`LastLine`](Self::LastLine).
    Auto,
}

/// An ordered list of extractors (the first that finds something wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerExtractor {
    /// The steps, tried in order.
    pub steps: Vec<Extractor>,
}

impl Default for AnswerExtractor {
    /// `[AnswerIs, Auto]`, the project's chat convention with its fallback.
    fn default() -> Self {
        Self {
            steps: vec![Extractor::AnswerIs, Extractor::Auto],
        }
    }
}

/// What extraction found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extraction {
    /// The extracted answer, if any step found one.
    pub answer: Option<String>,
    /// Index of the step that found it.
    pub step: Option<usize>,
}

impl AnswerExtractor {
    /// An extractor with the given steps; fails on an empty list or an invalid regex.
    pub fn new(steps: Vec<Extractor>) -> Result<Self> {
        if steps.is_empty() {
            return Err(KshotError::InvalidConfig(
                "an answer extractor needs at least one step".into(),
            ));
        }
        for s in &steps {
            if let Extractor::Regex { pattern, group, .. } = s {
                let re = Regex::new(pattern).map_err(|e| {
                    KshotError::InvalidConfig(format!("invalid extractor regex {pattern:?}: {e}"))
                })?;
                if *group >= re.captures_len() {
                    return Err(KshotError::InvalidConfig(format!(
                        "extractor regex {pattern:?} has {} groups, asked for group {group}",
                        re.captures_len() - 1
                    )));
                }
            }
        }
        Ok(Self { steps })
    }

    /// Parses a comma-separated spec: `answer-is,final-number,last-line,auto,letter:4,regex:PATTERN`
    /// (a regex step takes the rest of the spec, group 1 if it has one, last match).
    pub fn parse(spec: &str) -> Result<Self> {
        let mut steps = Vec::new();
        let mut rest = spec.trim();
        while !rest.is_empty() {
            if let Some(pattern) = rest.strip_prefix("regex:") {
                let group = usize::from(
                    Regex::new(pattern)
                        .map(|r| r.captures_len() > 1)
                        .unwrap_or(false),
                );
                steps.push(Extractor::Regex {
                    pattern: pattern.to_string(),
                    group,
                    last: true,
                });
                break;
            }
            let (head, tail) = rest.split_once(',').unwrap_or((rest, ""));
            rest = tail.trim();
            let head = head.trim();
            steps.push(match head {
                "answer-is" => Extractor::AnswerIs,
                "final-number" => Extractor::FinalNumber,
                "last-line" => Extractor::LastLine,
                "auto" => Extractor::Auto,
                h if h.starts_with("letter:") => Extractor::OptionLetter {
                    n_choices: h[7..].parse().map_err(|_| {
                        KshotError::InvalidConfig(format!(
                            "expected letter:N with N a number of choices, found {h:?}"
                        ))
                    })?,
                },
                other => {
                    return Err(KshotError::InvalidConfig(format!(
                        "unknown extractor {other:?}; expected answer-is, final-number, last-line, auto, letter:N or regex:PATTERN"
                    )));
                }
            });
        }
        Self::new(steps)
    }

    /// Extracts the answer from `text`; `gold` only steers [`Extractor::Auto`].
    pub fn extract(&self, text: &str, gold: &str) -> Extraction {
        for (i, step) in self.steps.iter().enumerate() {
            if let Some(a) = apply(step, text, gold) {
                return Extraction {
                    answer: Some(a),
                    step: Some(i),
                };
            }
        }
        Extraction {
            answer: None,
            step: None,
        }
    }
}

fn apply(step: &Extractor, text: &str, gold: &str) -> Option<String> {
    match step {
        Extractor::AnswerIs => answer_is(text),
        Extractor::FinalNumber => final_number(text),
        Extractor::LastLine => last_line(text),
        Extractor::OptionLetter { n_choices } => option_letter(text, *n_choices),
        Extractor::Auto => {
            if parse_number(gold).is_some() {
                final_number(text)
            } else {
                last_line(text)
            }
        }
        Extractor::Regex {
            pattern,
            group,
            last,
        } => {
            let re = Regex::new(pattern).ok()?;
            let mut caps = re.captures_iter(text);
            let c = if *last { caps.last() } else { caps.next() }?;
            c.get(*group)
                .map(|m| m.as_str().trim().to_string())
                .filter(|s| !s.is_empty())
        }
    }
}

/// Text after the last [`ANSWER_MARKER`] up to the end of its line, without a trailing `.`.
pub fn answer_is(text: &str) -> Option<String> {
    let pos = text.rfind(ANSWER_MARKER)?;
    let rest = &text[pos + ANSWER_MARKER.len()..];
    let line = rest.split('\n').next().unwrap_or("").trim();
    let line = line.strip_suffix('.').unwrap_or(line).trim();
    (!line.is_empty()).then(|| line.to_string())
}

fn number_regex() -> &'static Regex {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new(r"-?[0-9][0-9,]*(?:\.[0-9]+)?").expect("valid"))
}

/// The last number in `text` (digits with optional `,` groups, sign and decimals).
pub fn final_number(text: &str) -> Option<String> {
    number_regex()
        .find_iter(text)
        .last()
        .map(|m| m.as_str().to_string())
}

/// The last non-empty line, trimmed.
pub fn last_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(str::to_string)
}

/// The last standalone option letter `A..` among `n_choices` letters.
pub fn option_letter(text: &str, n_choices: usize) -> Option<String> {
    let n = n_choices.clamp(1, 26);
    let letters: String = (0..n).map(|i| (b'A' + i as u8) as char).collect();
    let re = Regex::new(&format!(r"\b([{letters}])\b")).ok()?;
    re.captures_iter(text).last().map(|c| c[1].to_string())
}

/// lm-eval-style normalisation: trim, drop `,` `$`, drop trailing `.`, lower-case.
pub fn normalise(answer: &str) -> String {
    let mut s: String = answer
        .trim()
        .chars()
        .filter(|c| *c != ',' && *c != '$')
        .collect();
    loop {
        let t = s.trim_end();
        match t.strip_suffix('.') {
            Some(stripped) => s = stripped.to_string(),
            None => {
                s = t.to_string();
                break;
            }
        }
    }
    s.trim().to_lowercase()
}

/// The value of a number written with optional `,` groups, `$` or a trailing `.`.
pub fn parse_number(s: &str) -> Option<f64> {
    let n = normalise(s);
    if n.is_empty() || !n.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    n.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Whether an extracted answer equals the gold answer (see the module docs).
pub fn answers_match(predicted: &str, gold: &str) -> bool {
    match (parse_number(predicted), parse_number(gold)) {
        (Some(p), Some(g)) => (p - g).abs() <= 1e-9 * g.abs().max(1.0),
        _ => normalise(predicted) == normalise(gold),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn answer_is_takes_the_last_marker_and_drops_the_period() {
        let t = "First guess. The answer is 3.\nActually 4 + 1 = 5.\nThe answer is 5.";
        assert_eq!(answer_is(t).as_deref(), Some("5"));
        assert_eq!(answer_is("The answer is 3.14.").as_deref(), Some("3.14"));
        assert_eq!(answer_is("The answer is \n").as_deref(), None);
        assert_eq!(answer_is("no marker"), None);
    }

    #[test]
    fn numbers_letters_lines() {
        assert_eq!(
            final_number("He pays $1,200 then 30.5 more, -7 left").as_deref(),
            Some("-7")
        );
        assert_eq!(final_number("no digits"), None);
        assert_eq!(
            option_letter("I think (B), no, C.", 4).as_deref(),
            Some("C")
        );
        assert_eq!(option_letter("Answer: E", 4), None);
        assert_eq!(last_line("a\nb \n\n").as_deref(), Some("b"));
    }

    #[test]
    fn default_chain_falls_back_by_answer_type() {
        let x = AnswerExtractor::default();
        let e = x.extract("3 + 4 = 7, so 7 apples", "7");
        assert_eq!((e.answer.as_deref(), e.step), (Some("7"), Some(1)));
        let e = x.extract("reasoning\ncba", "cba");
        assert_eq!(e.answer.as_deref(), Some("cba"));
        let e = x.extract("The answer is 12.", "12");
        assert_eq!(e.step, Some(0));
        let e = x.extract("", "12");
        assert_eq!(e.answer, None);
    }

    #[test]
    fn spec_parsing_and_bad_specs() {
        let x = AnswerExtractor::parse("answer-is, letter:4,regex:#### (-?[0-9.,]+)").unwrap();
        assert_eq!(x.steps.len(), 3);
        assert_eq!(
            x.extract("so #### 1,234", "1234").answer.as_deref(),
            Some("1,234")
        );
        assert!(AnswerExtractor::parse("nope").is_err());
        assert!(AnswerExtractor::parse("regex:(").is_err());
        assert!(AnswerExtractor::parse("").is_err());
        assert!(
            AnswerExtractor::new(vec![Extractor::Regex {
                pattern: "a".into(),
                group: 1,
                last: false
            }])
            .is_err()
        );
    }

    #[test]
    fn matching_rules() {
        assert!(answers_match("$1,006.", "1006"));
        assert!(answers_match("18.00", "18"));
        assert!(!answers_match("18.5", "18"));
        assert!(answers_match(" Paris. ", "paris"));
        assert!(!answers_match("Paris", "Lyon"));
        assert!(!answers_match("", "0"));
    }

    proptest! {
        #[test]
        fn formatted_numbers_match_their_value(v in -1_000_000i64..1_000_000) {
            let plain = v.to_string();
            let mut grouped = String::new();
            let digits = v.abs().to_string();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 { grouped.push(','); }
                grouped.push(c);
            }
            if v < 0 { grouped.insert(0, '-'); }
            let dotted = format!("{grouped}.");
            prop_assert!(answers_match(&dotted, &plain));
            let text = format!("So the total is {} dollars.", grouped);
            let extracted = final_number(&text).unwrap();
            prop_assert!(answers_match(&extracted, &plain));
            let marked = format!("x\nThe answer is {}.", grouped);
            prop_assert_eq!(answer_is(&marked), Some(grouped));
        }

        #[test]
        fn extraction_never_panics(text in "\\PC{0,60}", gold in "\\PC{0,6}") {
            let _ = AnswerExtractor::default().extract(&text, &gold);
            let _ = option_letter(&text, 5);
        }
    }
}
