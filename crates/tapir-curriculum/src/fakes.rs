//! Deterministic stand-ins for the four roles, for tests of the algorithms and of code built on
//! them (no model, no network).
//!
//! - [`FakeTeacher`]: answers `T: answer to {instruction}` (empty for instructions containing
//!   `[empty]`), writes new instructions of eight words drawn from a fixed vocabulary by the
//!   draw's seed, refines as `Refined ({group}): {response}`.
//! - [`FakeJudge`]: scores answers by a fixed rule: teacher and refined answers 8; the answer of
//!   student round `k` 8 on instructions containing `easy`, else `min(8, 5 + 2k)`; anything else
//!   3. It can answer unparsable text always ([`FakeJudge::never_parse`]).
//! - [`FakeClassifier`]: `Writing` for instructions with `poem`, `Math` for those with a digit,
//!   the unknown category `Geography` for those with `unknown`, else `Reasoning`.
//! - [`FakeStudent`]: answers `S{k}: {instruction}` after round `k`; training writes
//!   `weights.json` in the round's directory and can fail once at a chosen round (a crash).

use std::path::Path;

use crate::chat::{CallStats, Replies, Reply};
use crate::error::{Result, TapirError};
use crate::roles::{
    ExpandRequest, Judge, JudgeRequest, RefineRequest, Student, TaskClassifier, Teacher, TrainPair,
};

const VOCAB: [&str; 64] = [
    "apple", "river", "stone", "cloud", "pencil", "garden", "ladder", "window", "copper", "violin",
    "desert", "harbor", "lantern", "meadow", "pocket", "rocket", "saddle", "tunnel", "valley",
    "wagon", "anchor", "basket", "candle", "dragon", "engine", "falcon", "glacier", "hammer",
    "island", "jungle", "kettle", "lemon", "magnet", "needle", "orchard", "parrot", "quartz",
    "ribbon", "shovel", "tiger", "umbrella", "velvet", "walnut", "yogurt", "zipper", "bridge",
    "castle", "dolphin", "feather", "guitar", "helmet", "iceberg", "jacket", "kitten", "lobster",
    "mirror", "noodle", "oyster", "pepper", "quilt", "rabbit", "sponge", "teapot", "unicorn",
];

/// The fake teacher (see the module docs).
#[derive(Debug, Default)]
pub struct FakeTeacher {
    /// Calls made, by kind.
    pub stats: CallStats,
    /// Every expansion request seen.
    pub expansions: Vec<ExpandRequest>,
    /// Refinement requests seen.
    pub refinements: usize,
}

impl Teacher for FakeTeacher {
    fn respond(&mut self, instructions: &[String]) -> Result<Replies> {
        let r: Replies = instructions
            .iter()
            .map(|i| {
                Ok(Reply::new(if i.contains("[empty]") {
                    String::new()
                } else {
                    format!("T: answer to {i}")
                }))
            })
            .collect();
        self.stats.count(&r);
        Ok(r)
    }

    fn expand(&mut self, requests: &[ExpandRequest]) -> Result<Replies> {
        self.expansions.extend_from_slice(requests);
        let r: Replies = requests
            .iter()
            .map(|q| {
                let mut x = q.draw.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
                let words: Vec<&str> = (0..8)
                    .map(|_| {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        VOCAB[(x >> 58) as usize]
                    })
                    .collect();
                Ok(Reply::new(format!(
                    "<answer>Describe {}.</answer>",
                    words.join(" ")
                )))
            })
            .collect();
        self.stats.count(&r);
        Ok(r)
    }

    fn refine(&mut self, requests: &[RefineRequest]) -> Result<Replies> {
        self.refinements += requests.len();
        let r: Replies = requests
            .iter()
            .map(|q| {
                Ok(Reply::new(format!(
                    "Refined ({}): {}",
                    q.category.group(),
                    q.response
                )))
            })
            .collect();
        self.stats.count(&r);
        Ok(r)
    }

    fn stats(&self) -> CallStats {
        self.stats
    }
}

/// The fake judge (see the module docs).
#[derive(Debug, Default)]
pub struct FakeJudge {
    /// Answer only text without scores.
    pub never_parse: bool,
    /// Requests seen.
    pub requests: Vec<JudgeRequest>,
    /// Calls made.
    pub stats: CallStats,
}

/// The fake judge's score of `answer` to `instruction`.
pub fn fake_quality(instruction: &str, answer: &str) -> u32 {
    if answer.starts_with("T:") || answer.starts_with("Refined") {
        return 8;
    }
    if let Some(rest) = answer.strip_prefix('S')
        && let Some((k, _)) = rest.split_once(':')
        && let Ok(k) = k.parse::<u32>()
    {
        return if instruction.contains("easy") {
            8
        } else {
            (5 + 2 * k).min(8)
        };
    }
    3
}

impl Judge for FakeJudge {
    fn judge(&mut self, requests: &[JudgeRequest]) -> Result<Replies> {
        self.requests.extend_from_slice(requests);
        let r: Replies = requests
            .iter()
            .map(|q| {
                Ok(Reply::new(if self.never_parse {
                    "Both answers look reasonable to me.".to_string()
                } else {
                    format!(
                        "Evaluation evidence: fake.\nScore of the Assistant 1: [[{}]]\nScore of the Assistant 2: [[{}]]",
                        fake_quality(&q.instruction, &q.answer_1),
                        fake_quality(&q.instruction, &q.answer_2)
                    )
                }))
            })
            .collect();
        self.stats.count(&r);
        Ok(r)
    }

    fn stats(&self) -> CallStats {
        self.stats
    }
}

/// The fake classifier (see the module docs).
#[derive(Debug, Default)]
pub struct FakeClassifier {
    /// Calls made.
    pub stats: CallStats,
}

impl TaskClassifier for FakeClassifier {
    fn classify(&mut self, instructions: &[String]) -> Result<Replies> {
        let r: Replies = instructions
            .iter()
            .map(|i| {
                let c = if i.contains("poem") {
                    "Writing"
                } else if i.contains("unknown") {
                    "Geography"
                } else if i.chars().any(|c| c.is_ascii_digit()) {
                    "Math"
                } else {
                    "Reasoning"
                };
                Ok(Reply::new(format!("<answer>{c}</answer>")))
            })
            .collect();
        self.stats.count(&r);
        Ok(r)
    }

    fn stats(&self) -> CallStats {
        self.stats
    }
}

/// The fake student (see the module docs).
#[derive(Debug, Default)]
pub struct FakeStudent {
    /// The round whose weights are current (0 = base).
    pub round: usize,
    /// `(round trained, round it started from, examples)` of every finished training.
    pub trained: Vec<(usize, usize, usize)>,
    /// Fail the training of this round once (a simulated crash), then clear.
    pub fail_train_round: Option<usize>,
    /// Rounds loaded from disk.
    pub loaded: Vec<usize>,
}

impl Student for FakeStudent {
    fn respond(&mut self, instructions: &[String]) -> Result<Vec<String>> {
        Ok(instructions
            .iter()
            .map(|i| format!("S{}: {i}", self.round))
            .collect())
    }

    fn train_round(
        &mut self,
        round: usize,
        data: &[TrainPair],
        dir: &Path,
    ) -> Result<serde_json::Value> {
        if self.fail_train_round == Some(round) {
            self.fail_train_round = None;
            return Err(TapirError::Input {
                what: "fake student".into(),
                detail: format!("simulated crash while training round {round}"),
            });
        }
        atomic_fs::write_json(
            &dir.join("weights.json"),
            &serde_json::json!({"round": round, "examples": data.len()}),
        )?;
        self.trained.push((round, self.round, data.len()));
        self.round = round;
        Ok(
            serde_json::json!({"examples": data.len(), "started_from": self.trained.last().map(|t| t.1)}),
        )
    }

    fn load_round(&mut self, round: usize, dir: &Path) -> Result<()> {
        let v: serde_json::Value = crate::curriculum::read_json(&dir.join("weights.json"))?;
        if v["round"] != round {
            return Err(TapirError::Input {
                what: dir.display().to_string(),
                detail: format!(
                    "expected the weights of round {round}, found {}",
                    v["round"]
                ),
            });
        }
        self.round = round;
        self.loaded.push(round);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_follows_the_rule() {
        assert_eq!(fake_quality("x", "T: y"), 8);
        assert_eq!(fake_quality("hard", "S0: y"), 5);
        assert_eq!(fake_quality("hard", "S1: y"), 7);
        assert_eq!(fake_quality("hard", "S3: y"), 8);
        assert_eq!(fake_quality("easy one", "S0: y"), 8);
        assert_eq!(fake_quality("x", "whatever"), 3);
    }
}
