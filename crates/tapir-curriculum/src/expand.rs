//! Task-aware instruction expansion: the teacher writes new instructions from hard seeds of a
//! sampled category; bad and near-duplicate ones are dropped.
//!
//! Draws come from [`draw_expansion_seeds`] (category `c ~ π`, then a hard seed of `c`, see
//! [`crate::rebalance`]). Each reply is read as the text inside its first
//! `<answer>...</answer>` (easydistill's expansion format; a reply without tags is taken whole)
//! and filtered as Lion's `generate_hard_instruction.py` filters: empty, cut at the token limit,
//! three words or fewer, starting with punctuation, or quoting the prompt's markers
//! (`#Created Instruction#`, ...). Lion's "starts with a non-ASCII character" filter is left out
//! (it drops every non-English instruction). Survivors are checked against the pool and the
//! instructions accepted so far with a [`NearDuplicates`] measure (ROUGE-L above 0.7, Lion's
//! rule, by default). When fewer than [`ExpansionConfig::per_round`] survive, further draws are
//! asked, up to [`ExpansionConfig::max_draws`] in all.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TapirError};
use crate::rebalance::{DrawSource, draw_expansion_seeds};
use crate::roles::{ExpandRequest, Teacher};
use crate::similarity::NearDuplicates;
use crate::taxonomy::{TargetMix, TaskCategory};

/// How near-duplicates are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DedupMeasure {
    /// ROUGE-L F-measure (Lion, Self-Instruct).
    #[default]
    RougeL,
    /// Cosine similarity of sentence embeddings.
    Embedding,
}

named_enum::named_enum!(DedupMeasure, "dedup measure", { RougeL => "rouge-l", Embedding => "embedding" });

/// Expansion settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpansionConfig {
    /// New instructions wanted per round (default 8).
    pub per_round: usize,
    /// Most teacher requests per round, counting the re-draws for rejected ones (default
    /// `3 × per_round` when 0).
    pub max_draws: usize,
    /// How near-duplicates are measured (default ROUGE-L).
    pub dedup: DedupMeasure,
    /// A new instruction whose similarity to the pool is **above** this is dropped (Lion's 0.7
    /// for ROUGE-L; about 0.9 suits embedding cosine).
    pub threshold: f64,
    /// Instructions with at most this many words are dropped (Lion: 3).
    pub max_short_words: usize,
}

impl Default for ExpansionConfig {
    fn default() -> Self {
        Self {
            per_round: 8,
            max_draws: 0,
            dedup: DedupMeasure::RougeL,
            threshold: 0.7,
            max_short_words: 3,
        }
    }
}

impl ExpansionConfig {
    /// The draw budget (`max_draws`, or `3 × per_round` when 0).
    pub fn draw_budget(&self) -> usize {
        if self.max_draws == 0 {
            3 * self.per_round
        } else {
            self.max_draws.max(self.per_round)
        }
    }

    /// Checks the ranges.
    ///
    /// # Errors
    /// [`TapirError::Config`] naming the bad key.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(TapirError::config(
                "expansion.threshold",
                format!("expected a similarity in [0, 1], found {}", self.threshold),
            ));
        }
        Ok(())
    }
}

/// Why a new instruction was dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Rejection {
    /// The teacher's call failed.
    CallFailed {
        /// The failure.
        detail: String,
    },
    /// Nothing left after extraction.
    Empty,
    /// Cut at the token limit before the closing tag.
    Truncated,
    /// Too few words.
    TooShort {
        /// Words found.
        words: usize,
    },
    /// Starts with punctuation.
    StartsWithPunctuation,
    /// Quotes the prompt's markers.
    QuotesThePrompt,
    /// Too similar to a pool instruction or an accepted one.
    NearDuplicate {
        /// The highest similarity found.
        similarity: f64,
    },
}

impl Rejection {
    /// A short name for counts.
    pub fn name(&self) -> &'static str {
        match self {
            Rejection::CallFailed { .. } => "call-failed",
            Rejection::Empty => "empty",
            Rejection::Truncated => "truncated",
            Rejection::TooShort { .. } => "too-short",
            Rejection::StartsWithPunctuation => "starts-with-punctuation",
            Rejection::QuotesThePrompt => "quotes-the-prompt",
            Rejection::NearDuplicate { .. } => "near-duplicate",
        }
    }
}

/// One teacher request and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Index of the seed in the pool.
    pub seed: usize,
    /// The category asked for.
    pub category: TaskCategory,
    /// How the seed was drawn.
    pub source: DrawSource,
    /// The draw's sampling seed.
    pub draw: u64,
    /// The teacher's raw reply.
    pub raw: String,
    /// The extracted instruction.
    pub instruction: String,
    /// Highest similarity to the pool (when checked).
    pub similarity: Option<f64>,
    /// Why it was dropped; `None` when accepted.
    pub rejected: Option<Rejection>,
}

/// An accepted new instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInstruction {
    /// The instruction.
    pub text: String,
    /// Its category (the one asked for).
    pub category: TaskCategory,
    /// Index of its seed in the pool.
    pub seed: usize,
}

/// What an expansion produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Expansion {
    /// Accepted instructions, in draw order.
    pub accepted: Vec<NewInstruction>,
    /// Every request and its fate.
    pub candidates: Vec<Candidate>,
}

/// Counts of an [`Expansion`], for reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpansionSummary {
    /// Teacher requests.
    pub requested: usize,
    /// Accepted instructions.
    pub accepted: usize,
    /// Rejections by reason.
    pub rejected: BTreeMap<String, usize>,
    /// Draws by seed source.
    pub sources: BTreeMap<String, usize>,
    /// Accepted instructions by category.
    pub categories: BTreeMap<TaskCategory, usize>,
}

impl Expansion {
    /// Counts.
    pub fn summary(&self) -> ExpansionSummary {
        let mut s = ExpansionSummary {
            requested: self.candidates.len(),
            accepted: self.accepted.len(),
            ..ExpansionSummary::default()
        };
        for c in &self.candidates {
            if let Some(r) = &c.rejected {
                *s.rejected.entry(r.name().into()).or_insert(0) += 1;
            }
            let src = serde_json::to_value(c.source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            *s.sources.entry(src).or_insert(0) += 1;
        }
        for a in &self.accepted {
            *s.categories.entry(a.category).or_insert(0) += 1;
        }
        s
    }
}

static ANSWER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<answer>(.*?)</answer>").expect("valid regex"));
static MARKERS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)#\s*(given|created) instruction\s*#|\b(given|created) instruction\b")
        .expect("valid regex")
});
static LEADING_LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)^\s*(#?\s*created instruction\s*#?\s*:|new instruction\s*:|instruction\s*:)\s*",
    )
    .expect("valid regex")
});

/// The instruction in a teacher reply, and whether the closing tag was found (`<answer>` opened
/// but never closed means the reply was cut).
pub fn extract_instruction(raw: &str) -> (String, bool) {
    let (text, closed) = if let Some(m) = ANSWER.captures(raw) {
        (m[1].to_string(), true)
    } else if let Some(i) = raw.find("<answer>") {
        (raw[i + "<answer>".len()..].to_string(), false)
    } else {
        (raw.to_string(), true)
    };
    let text = LEADING_LABEL.replace(text.trim(), "");
    let text = text
        .trim()
        .trim_matches(|c| c == '"' || c == '“' || c == '”')
        .trim();
    (text.to_string(), closed)
}

fn check(text: &str, closed: bool, truncated: bool, config: &ExpansionConfig) -> Option<Rejection> {
    if text.is_empty() {
        return Some(Rejection::Empty);
    }
    if truncated && !closed {
        return Some(Rejection::Truncated);
    }
    let words = text.split_whitespace().count();
    if words <= config.max_short_words {
        return Some(Rejection::TooShort { words });
    }
    if text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_punctuation() && !matches!(c, '(' | '[' | '`' | '$' | '\''))
    {
        return Some(Rejection::StartsWithPunctuation);
    }
    if MARKERS.is_match(text) {
        return Some(Rejection::QuotesThePrompt);
    }
    None
}

/// Where the expansion seeds come from.
#[derive(Debug, Clone, Copy)]
pub struct SeedPool<'a> {
    /// The pool's instructions.
    pub texts: &'a [String],
    /// Their categories.
    pub categories: &'a [TaskCategory],
    /// Which may seed (the hard ones; all without the MFD filter).
    pub eligible: &'a [bool],
}

/// Expands the pool (see the module docs). `dedup` must already hold the pool's instructions;
/// accepted ones are added to it. `mix = None` draws seeds without rebalancing. `seed` fixes
/// the draws; `draw_base + i` is the sampling seed of the `i`-th request.
///
/// # Errors
/// The teacher's or the similarity measure's error when they cannot work at all.
pub fn expand(
    teacher: &mut dyn Teacher,
    pool: SeedPool<'_>,
    mix: Option<&TargetMix>,
    dedup: &mut dyn NearDuplicates,
    config: &ExpansionConfig,
    seed: u64,
    draw_base: u64,
) -> Result<Expansion> {
    config.validate()?;
    let mut out = Expansion::default();
    if config.per_round == 0 {
        return Ok(out);
    }
    let draws = draw_expansion_seeds(
        pool.categories,
        pool.eligible,
        mix,
        config.draw_budget(),
        seed,
    );
    let mut next = 0;
    while out.accepted.len() < config.per_round && next < draws.len() {
        let take = (config.per_round - out.accepted.len()).min(draws.len() - next);
        let batch = &draws[next..next + take];
        let requests: Vec<ExpandRequest> = batch
            .iter()
            .enumerate()
            .map(|(k, d)| ExpandRequest {
                seed: pool.texts[d.seed].clone(),
                category: d.category,
                draw: draw_base + (next + k) as u64,
            })
            .collect();
        let replies = teacher.expand(&requests)?;
        if replies.len() != requests.len() {
            return Err(TapirError::ReplyCount {
                role: "teacher".into(),
                expected: requests.len(),
                found: replies.len(),
            });
        }
        for ((d, req), reply) in batch.iter().zip(&requests).zip(replies) {
            let mut cand = Candidate {
                seed: d.seed,
                category: d.category,
                source: d.source,
                draw: req.draw,
                raw: String::new(),
                instruction: String::new(),
                similarity: None,
                rejected: None,
            };
            match reply {
                Err(f) => cand.rejected = Some(Rejection::CallFailed { detail: f.detail }),
                Ok(r) => {
                    let (text, closed) = extract_instruction(&r.text);
                    cand.raw = r.text;
                    cand.rejected = check(&text, closed, r.truncated, config);
                    if cand.rejected.is_none() {
                        let sim = dedup.max_similarity(&text)?;
                        cand.similarity = Some(sim);
                        if sim > config.threshold {
                            cand.rejected = Some(Rejection::NearDuplicate { similarity: sim });
                        } else {
                            dedup.add(std::slice::from_ref(&text))?;
                            out.accepted.push(NewInstruction {
                                text: text.clone(),
                                category: d.category,
                                seed: d.seed,
                            });
                        }
                    }
                    cand.instruction = text;
                }
            }
            out.candidates.push(cand);
        }
        next += take;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::chat::{CallFailure, Replies, Reply};
    use crate::roles::RefineRequest;
    use crate::similarity::RougeL;

    /// A teacher whose `expand` pops scripted replies.
    #[derive(Default)]
    struct Scripted {
        replies: VecDeque<std::result::Result<Reply, CallFailure>>,
        seen: Vec<ExpandRequest>,
    }

    impl Teacher for Scripted {
        fn respond(&mut self, i: &[String]) -> Result<Replies> {
            Ok(i.iter()
                .map(|x| Ok(Reply::new(format!("answer to {x}"))))
                .collect())
        }
        fn expand(&mut self, r: &[ExpandRequest]) -> Result<Replies> {
            self.seen.extend_from_slice(r);
            Ok(r.iter()
                .map(|_| {
                    self.replies
                        .pop_front()
                        .unwrap_or_else(|| Ok(Reply::new("")))
                })
                .collect())
        }
        fn refine(&mut self, r: &[RefineRequest]) -> Result<Replies> {
            Ok(r.iter()
                .map(|x| Ok(Reply::new(x.response.clone())))
                .collect())
        }
    }

    #[test]
    fn extraction_reads_the_tag_and_drops_labels() {
        assert_eq!(
            extract_instruction("Sure! <answer>Compute 3 + 4.</answer> Hope it helps").0,
            "Compute 3 + 4."
        );
        assert_eq!(
            extract_instruction("#Created Instruction#: \"Sort these words: b, a\"").0,
            "Sort these words: b, a"
        );
        assert_eq!(
            extract_instruction("<answer>Count the legs of 3 cats"),
            ("Count the legs of 3 cats".to_string(), false)
        );
    }

    #[test]
    fn filters_dedup_and_redraws() {
        let pool: Vec<String> = vec![
            "Compute the GCD of 12 and 18.".into(),
            "Write a poem about autumn leaves.".into(),
        ];
        let cats = vec![TaskCategory::Math, TaskCategory::Writing];
        let mut dedup = RougeL::default();
        dedup.add(&pool).unwrap();
        let mut t = Scripted::default();
        let long_cut = Reply {
            truncated: true,
            ..Reply::new("<answer>Compute the sum of all primes below one")
        };
        for r in [
            Ok(Reply::new("<answer>Compute the GCD of 12 and 16.</answer>")), // near-duplicate
            Ok(Reply::new("<answer>Add</answer>")),                           // too short
            Err(CallFailure {
                detail: "timeout".into(),
            }),
            Ok(long_cut),
            Ok(Reply::new("<answer>, then compute this thing now</answer>")),
            Ok(Reply::new(
                "<answer>Rewrite the #Given Instruction# as a haiku</answer>",
            )),
            Ok(Reply::new(
                "<answer>How many legs do 3 spiders and 2 ants have?</answer>",
            )),
            Ok(Reply::new(
                "<answer>How many legs do 3 spiders and 2 ants have in total?</answer>",
            )), // dup of accepted
            Ok(Reply::new(
                "<answer>List three prime numbers larger than 50.</answer>",
            )),
        ] {
            t.replies.push_back(r);
        }
        let cfg = ExpansionConfig {
            per_round: 2,
            max_draws: 9,
            ..ExpansionConfig::default()
        };
        let eligible = [true, false];
        let out = expand(
            &mut t,
            SeedPool {
                texts: &pool,
                categories: &cats,
                eligible: &eligible,
            },
            None,
            &mut dedup,
            &cfg,
            3,
            100,
        )
        .unwrap();
        let names: Vec<Option<&str>> = out
            .candidates
            .iter()
            .map(|c| c.rejected.as_ref().map(Rejection::name))
            .collect();
        assert_eq!(
            names,
            vec![
                Some("near-duplicate"),
                Some("too-short"),
                Some("call-failed"),
                Some("truncated"),
                Some("starts-with-punctuation"),
                Some("quotes-the-prompt"),
                None,
                Some("near-duplicate"),
                None
            ]
        );
        assert_eq!(out.accepted.len(), 2);
        assert_eq!(
            out.accepted[1].text,
            "List three prime numbers larger than 50."
        );
        // only the eligible (hard) seed was used, and every draw has its own sampling seed
        assert!(t.seen.iter().all(|r| r.seed == pool[0]));
        let draws: Vec<u64> = t.seen.iter().map(|r| r.draw).collect();
        assert_eq!(draws, (100..109).collect::<Vec<_>>());
        let s = out.summary();
        assert_eq!((s.requested, s.accepted), (9, 2));
        assert_eq!(s.rejected["near-duplicate"], 2);
    }

    #[test]
    fn the_draw_budget_bounds_requests_when_everything_is_rejected() {
        let pool = vec!["Compute the GCD of 12 and 18.".to_string()];
        let mut dedup = RougeL::default();
        dedup.add(&pool).unwrap();
        let mut t = Scripted::default(); // empty replies forever
        let cfg = ExpansionConfig {
            per_round: 4,
            ..ExpansionConfig::default()
        };
        let out = expand(
            &mut t,
            SeedPool {
                texts: &pool,
                categories: &[TaskCategory::Math],
                eligible: &[true],
            },
            Some(&TargetMix::default()),
            &mut dedup,
            &cfg,
            1,
            0,
        )
        .unwrap();
        assert!(out.accepted.is_empty());
        assert_eq!(t.seen.len(), 12);
        assert!(
            out.candidates
                .iter()
                .all(|c| c.rejected == Some(Rejection::Empty))
        );
    }
}
