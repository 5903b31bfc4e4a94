//! The four roles of TAPIR as traits over plain strings, so the algorithms run on anything: a
//! local model, an OpenAI-compatible endpoint ([`crate::prompted`] over a
//! [`ChatBackend`](crate::chat::ChatBackend)), or a hand-written fake in a test.
//!
//! - [`Teacher`]: answers instructions, writes new instructions from a seed, refines an answer;
//! - [`Judge`]: one pairwise judgement (raw text; [`crate::pairwise`] parses, re-asks and
//!   averages both orders);
//! - [`TaskClassifier`]: one category answer per instruction (raw text;
//!   [`crate::taxonomy::parse_category`] reads it);
//! - [`Student`]: answers instructions with its current weights, trains one round.
//!
//! Every batch method returns one reply per request, in order; a per-item failure is an `Err`
//! in its slot ([`Replies`]), a failure of the whole role is the method's `Err`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chat::{CallStats, Replies};
use crate::error::Result;
use crate::taxonomy::TaskCategory;

/// A request to write a new instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpandRequest {
    /// The seed instruction to draw inspiration from.
    pub seed: String,
    /// The category the new instruction should belong to.
    pub category: TaskCategory,
    /// Which draw this is (a sampling seed: two draws from one seed differ).
    pub draw: u64,
}

/// A request to improve a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefineRequest {
    /// The instruction.
    pub instruction: String,
    /// The response to improve.
    pub response: String,
    /// The instruction's category (chooses the refinement prompt).
    pub category: TaskCategory,
}

/// One pairwise judgement request: score both answers to `instruction`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeRequest {
    /// The instruction.
    pub instruction: String,
    /// The answer shown first ("Assistant 1").
    pub answer_1: String,
    /// The answer shown second ("Assistant 2").
    pub answer_2: String,
    /// 0 for the first ask; `k > 0` for the k-th re-ask after unparsable outputs (a prompted
    /// judge adds a reminder of the format and samples with seed `k`).
    pub attempt: usize,
}

/// The teacher (oracle) of the distillation.
pub trait Teacher {
    /// Answers each instruction.
    ///
    /// # Errors
    /// When the teacher cannot work at all (see the module docs).
    fn respond(&mut self, instructions: &[String]) -> Result<Replies>;

    /// Writes one new instruction per request (raw text; [`crate::expand`] extracts and
    /// filters it).
    ///
    /// # Errors
    /// When the teacher cannot work at all.
    fn expand(&mut self, requests: &[ExpandRequest]) -> Result<Replies>;

    /// Rewrites each response with the task-specific refinement prompt of its category.
    ///
    /// # Errors
    /// When the teacher cannot work at all.
    fn refine(&mut self, requests: &[RefineRequest]) -> Result<Replies>;

    /// Calls made so far (for the report); a fake may keep the default.
    fn stats(&self) -> CallStats {
        CallStats::default()
    }
}

/// The pairwise judge.
pub trait Judge {
    /// One raw judgement per request.
    ///
    /// # Errors
    /// When the judge cannot work at all.
    fn judge(&mut self, requests: &[JudgeRequest]) -> Result<Replies>;

    /// Calls made so far.
    fn stats(&self) -> CallStats {
        CallStats::default()
    }
}

/// The task classifier.
pub trait TaskClassifier {
    /// One raw classifier answer per instruction.
    ///
    /// # Errors
    /// When the classifier cannot work at all.
    fn classify(&mut self, instructions: &[String]) -> Result<Replies>;

    /// Calls made so far.
    fn stats(&self) -> CallStats {
        CallStats::default()
    }
}

/// An instruction and the response to learn, as the student trains on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainPair {
    /// The instruction (the user turn).
    pub instruction: String,
    /// The response (the assistant turn).
    pub response: String,
}

/// The student being distilled.
pub trait Student {
    /// Answers each instruction with the current weights (after the last
    /// [`train_round`](Self::train_round) or [`load_round`](Self::load_round); the base model
    /// before any). Deterministic: the same weights give the same answers.
    ///
    /// # Errors
    /// When the student's model fails.
    fn respond(&mut self, instructions: &[String]) -> Result<Vec<String>>;

    /// Trains round `round` on `data`, continuing from the current weights, and keeps its
    /// artifacts (adapter, checkpoints, report) in `dir`; returns a JSON summary for the
    /// report. A call after a crash in the same `dir` resumes from its checkpoints.
    ///
    /// # Errors
    /// When training fails.
    fn train_round(
        &mut self,
        round: usize,
        data: &[TrainPair],
        dir: &Path,
    ) -> Result<serde_json::Value>;

    /// Makes round `round`'s weights (trained earlier into `dir`) the current ones, on resume.
    ///
    /// # Errors
    /// When the artifacts cannot be read.
    fn load_round(&mut self, round: usize, dir: &Path) -> Result<()>;
}
