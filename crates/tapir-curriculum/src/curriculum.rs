//! The multi-round curriculum (TAPIR's MCP, ALGORITHMS.md section 3(a)-(b)), resumable.
//!
//! # Steps
//! **Prepare** (`prepare/`): the classifier labels every seed instruction with a task category
//! (`classes.json`); the teacher answers the seeds (`teacher.json`) and the held-out
//! instructions (`heldout_teacher.json`). Instructions whose teacher answer failed or is empty
//! are dropped (listed in the record). **Round 0** (`rounds/r0/`): the base student answers the
//! held-out instructions and is judged against the teacher (the baseline). **Warm-up**
//! (`warmup/`, only when [`CurriculumConfig::warmup`] > 0; ALGORITHMS.md 3(f)): the base
//! student trains on a seeded random slice of the seeds with the teacher's plain answers
//! (`data.jsonl`, `train/`, `train.json`, `warmup.json` last), and round 1 starts from it.
//!
//! **Round r = 1..R** (`rounds/r{r}/`), with the student `S_{r-1}` of the previous round:
//! 1. `student.json`, `mfd.json`: `S_{r-1}` answers every pool instruction; the judge scores it
//!    against the teacher's target (the refined answer when there is one) in both orders:
//!    `MFD = J(teacher) − J(student)`, `hard ⇔ MFD ≥ δ` ([`crate::mfd`]). Re-scored every
//!    round with the latest student, as TAPIR prescribes.
//! 2. `expansion.json`, `expanded.json`: the teacher writes new instructions from hard seeds of
//!    categories drawn from the target mix ([`crate::expand`]), de-duplicated against the pool
//!    **and the held-out instructions**, and answers them. New instructions join this round's
//!    hard set (they were written to be as hard as hard seeds) and the pool, and are scored
//!    like every pool item from the next round on.
//! 3. `plan.json`: the training set `D_r = Sample(Hard_r, α_r N_r) ∪ Sample(Easy_r,
//!    (1 − α_r) N_r)`, each part resampled to the target mix ([`crate::rebalance`]). A part
//!    with no item is filled from the other, and a part too small to fill without more than
//!    [`CurriculumConfig::max_repeats`] copies of an item hands its extra places to the other
//!    (both reported). Unscored items are in neither part.
//! 4. `refined.json`: the teacher refines the targets of the chosen items that have no
//!    refinement yet ([`crate::refine`]); `data.jsonl` is the round's training data.
//! 5. `train/`, `train.json`: the student trains on `D_r`, continuing from `S_{r-1}`'s adapter
//!    (θ_r initialised from θ_{r−1}).
//! 6. `heldout.json`, `heldout_judge.json`: `S_r` answers the held-out instructions and is
//!    judged against the teacher and against the base student.
//! 7. `round.json`: the [`RoundRecord`], written last; a round is complete exactly when it
//!    exists.
//!
//!
//! [`run_curriculum`] is this sequence; each step is one method of a private `RunState` (the
//! roles, the growing pool, the refined targets).
//!
//! # Resume
//! Every step's file is written atomically once the step is done, and read back instead of
//! recomputed when it exists. Together with a call cache under the roles (a killed step
//! replays its finished calls) and the student's training checkpoints, a run killed at any
//! point and started again ends with the same files. The random draws of each step are seeded
//! from `(seed, round, step)`, so they do not depend on what an earlier process did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chat::CallStats;
use crate::config::{CurriculumConfig, RoundSpec};
use crate::error::{Result, TapirError};
use crate::expand::{Expansion, ExpansionConfig, ExpansionSummary, SeedPool, expand};
use crate::mfd::{MfdItem, MfdRecord, MfdSummary, score_mfd, summarise_mfd};
use crate::pairwise::{Pair, PairJudgement, WinSummary, judge_pairs, summarise};
use crate::rebalance::{Rebalanced, rebalance_capped, uniform_sample};
use crate::refine::{Refined, refine_responses};
use crate::roles::{Judge, RefineRequest, Student, TaskClassifier, Teacher, TrainPair};
use crate::similarity::NearDuplicates;
use crate::taxonomy::{
    ClassRecord, ClassSummary, TargetMix, TaskCategory, classify, summarise_classes,
};

/// An input instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// A stable id (line-derived or the input's own).
    pub id: String,
    /// The instruction text.
    pub text: String,
}

/// Where a pool item came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Origin {
    /// A seed instruction.
    Seed,
    /// Written by the teacher in `round` from the seed `from`.
    Expanded {
        /// The round.
        round: usize,
        /// The seed's id.
        from: String,
    },
}

/// An instruction of the pool with its category and the teacher's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolItem {
    /// Stable id (seeds: the input id; new instructions: `x{round}-{k}`).
    pub id: String,
    /// The instruction.
    pub instruction: String,
    /// Its task category.
    pub category: TaskCategory,
    /// Where it came from.
    pub origin: Origin,
    /// The teacher's answer.
    pub teacher: String,
}

/// An instruction dropped before the rounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    /// Its id.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// What preparation found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrepareRecord {
    /// Seed instructions given.
    pub seeds: usize,
    /// Held-out instructions given.
    pub heldout: usize,
    /// The classifier's answers on the seeds.
    pub classes: ClassSummary,
    /// Instructions dropped because the teacher's answer failed or was empty.
    pub dropped: Vec<Dropped>,
    /// Seeds kept in the pool.
    pub pool: usize,
    /// Held-out instructions kept.
    pub heldout_kept: usize,
}

/// A round's training-set plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Ids of the training items, hard part first (repeats allowed).
    pub items: Vec<String>,
    /// How many of `items` are from the hard part.
    pub hard_part: usize,
    /// Hard items available (hard pool items plus this round's new instructions).
    pub hard_available: usize,
    /// Easy items available.
    pub easy_available: usize,
    /// Pool items the judge left unscored (in neither part).
    pub unscored: usize,
    /// The hard part's sampling (task mix before and after).
    pub hard: Rebalanced,
    /// The easy part's sampling.
    pub easy: Rebalanced,
    /// Notes (a part filled from the other, ...).
    pub notes: Vec<String>,
}

impl Plan {
    /// Task mix of the available items, both parts together.
    pub fn mix_before(&self) -> BTreeMap<TaskCategory, usize> {
        sum_maps(&self.hard.before, &self.easy.before)
    }

    /// Task mix of the training set.
    pub fn mix_after(&self) -> BTreeMap<TaskCategory, usize> {
        sum_maps(&self.hard.achieved, &self.easy.achieved)
    }
}

fn sum_maps(
    a: &BTreeMap<TaskCategory, usize>,
    b: &BTreeMap<TaskCategory, usize>,
) -> BTreeMap<TaskCategory, usize> {
    let mut out = a.clone();
    for (k, v) in b {
        *out.entry(*k).or_insert(0) += v;
    }
    out
}

/// Refinement counts of a round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RefineSummary {
    /// Items refined this round (others were refined in earlier rounds or refinement is off).
    pub asked: usize,
    /// Refinements used.
    pub refined: usize,
    /// Originals kept (failed or empty refinement).
    pub kept_original: usize,
}

/// The held-out judgements of a student.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldoutJudgements {
    /// Student (`a`) against the teacher (`b`).
    pub vs_teacher: Vec<PairJudgement>,
    /// Student (`a`) against the base student (`b`); empty for the base student itself.
    pub vs_base: Vec<PairJudgement>,
}

/// Held-out win rates of a student.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldoutSummary {
    /// Against the teacher.
    pub vs_teacher: WinSummary,
    /// Against the base student (`None` for the base student).
    pub vs_base: Option<WinSummary>,
}

/// Everything a finished round records (`rounds/r{r}/round.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 1-based round (0: the base student's held-out baseline).
    pub round: usize,
    /// Hard share used.
    pub alpha: f64,
    /// Training-set size.
    pub size: usize,
    /// Pool size when the round started.
    pub pool: usize,
    /// MFD of the pool under `S_{r-1}` (`None` without the MFD filter, and for round 0).
    pub mfd: Option<MfdSummary>,
    /// Every MFD value of the round (for histograms).
    pub mfd_values: Vec<f64>,
    /// Expansion counts.
    pub expansion: ExpansionSummary,
    /// The training-set plan (task mix before and after rebalancing).
    pub plan: Plan,
    /// Refinement counts.
    pub refine: RefineSummary,
    /// The student's training summary.
    pub train: serde_json::Value,
    /// Held-out win rates of `S_r`.
    pub heldout: HeldoutSummary,
    /// Calls each role made during this round (in the process that ran it).
    pub calls: BTreeMap<String, CallStats>,
    /// Wall-clock seconds of the round (in the process that finished it).
    pub seconds: f64,
}

/// What [`run_curriculum`] returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CurriculumOutcome {
    /// Preparation.
    pub prepare: PrepareRecord,
    /// The warm-up student (`None` unless `curriculum.warmup > 0`).
    pub warmup: Option<WarmupRecord>,
    /// Round 0 (the base student) then every round.
    pub rounds: Vec<RoundRecord>,
    /// Calls each role made in this process (cached ones included as `cached`).
    pub calls: BTreeMap<String, CallStats>,
    /// The final pool.
    pub pool: Vec<PoolItem>,
    /// The directory holding the last round's student artifacts.
    pub final_student: Option<PathBuf>,
}

/// The roles a run needs.
pub struct Roles<'a> {
    /// The teacher.
    pub teacher: &'a mut dyn Teacher,
    /// The judge.
    pub judge: &'a mut dyn Judge,
    /// The task classifier.
    pub classifier: &'a mut dyn TaskClassifier,
    /// The student.
    pub student: &'a mut dyn Student,
    /// The near-duplicate measure of the expansion (empty; the loop fills it).
    pub dedup: &'a mut dyn NearDuplicates,
}

fn delta(
    now: &BTreeMap<String, CallStats>,
    then: &BTreeMap<String, CallStats>,
) -> BTreeMap<String, CallStats> {
    now.iter()
        .map(|(k, n)| {
            let t = then.get(k).copied().unwrap_or_default();
            (
                k.clone(),
                CallStats {
                    made: n.made - t.made,
                    cached: n.cached - t.cached,
                    failed: n.failed - t.failed,
                },
            )
        })
        .collect()
}

/// A seed for the draws of `(round, step)`, independent of everything else the run did.
pub fn step_seed(seed: u64, round: usize, step: &str) -> u64 {
    let h = Sha256::digest(format!("{seed}/{round}/{step}").as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Reads `dir/name` when it exists, else computes, writes it atomically and returns it.
fn step<T: Serialize + DeserializeOwned>(
    dir: &Path,
    name: &str,
    compute: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let path = dir.join(name);
    if path.is_file() {
        return read_json(&path);
    }
    let value = compute()?;
    atomic_fs::write_json(&path, &value)?;
    Ok(value)
}

/// Reads a run file.
///
/// # Errors
/// [`TapirError::Io`] or [`TapirError::RunFile`].
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| TapirError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TapirError::RunFile {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// The directory of round `r` under the run directory.
pub fn round_dir(run: &Path, r: usize) -> PathBuf {
    run.join("rounds").join(format!("r{r}"))
}

/// Which weights a student has loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Weights {
    /// The base model.
    Base,
    /// The warm-up student (trained on a random slice of the seeds before round 1).
    Warmup,
    /// The student after round `r` (1-based).
    Round(usize),
}

struct StudentState<'s> {
    student: &'s mut dyn Student,
    at: Weights,
    run: PathBuf,
    /// Whether round 1 starts from the warm-up student.
    warmup: bool,
}

impl StudentState<'_> {
    /// The weights round `r` starts from: the previous round's, the warm-up student's for
    /// round 1 when there is one, else the base model.
    fn before(&self, r: usize) -> Weights {
        if r >= 2 {
            Weights::Round(r - 1)
        } else if self.warmup {
            Weights::Warmup
        } else {
            Weights::Base
        }
    }

    fn ensure(&mut self, w: Weights) -> Result<()> {
        if self.at == w {
            return Ok(());
        }
        match w {
            Weights::Base => Err(TapirError::Input {
                what: "student".into(),
                detail: "the base student's answers are needed after a round was loaded; delete rounds/r0 and resume".into(),
            }),
            Weights::Warmup => {
                self.student.load_round(0, &warmup_dir(&self.run).join("train"))?;
                self.at = w;
                Ok(())
            }
            Weights::Round(r) => {
                self.student
                    .load_round(r, &round_dir(&self.run, r).join("train"))?;
                self.at = w;
                Ok(())
            }
        }
    }
}

/// The directory of the warm-up student under the run directory.
pub fn warmup_dir(run: &Path) -> PathBuf {
    run.join("warmup")
}

fn teacher_answers(
    teacher: &mut dyn Teacher,
    items: &[Instruction],
) -> Result<Vec<std::result::Result<String, String>>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let texts: Vec<String> = items.iter().map(|i| i.text.clone()).collect();
    let replies = teacher.respond(&texts)?;
    if replies.len() != texts.len() {
        return Err(TapirError::ReplyCount {
            role: "teacher".into(),
            expected: texts.len(),
            found: replies.len(),
        });
    }
    Ok(replies
        .into_iter()
        .map(|r| match r {
            Ok(r) if r.text.trim().is_empty() => Err("the teacher's answer was empty".to_string()),
            Ok(r) => Ok(r.text.trim().to_string()),
            Err(f) => Err(format!("the teacher's call failed: {f}")),
        })
        .collect())
}

fn judge_heldout(
    judge: &mut dyn Judge,
    heldout: &[Instruction],
    teacher: &[String],
    student: &[String],
    base: Option<&[String]>,
    config: &CurriculumConfig,
) -> Result<HeldoutJudgements> {
    let pairs = |other: &[String]| -> Vec<Pair> {
        heldout
            .iter()
            .zip(student)
            .zip(other)
            .map(|((h, s), o)| Pair {
                instruction: h.text.clone(),
                a: s.clone(),
                b: o.clone(),
            })
            .collect()
    };
    let vs_teacher = judge_pairs(judge, &pairs(teacher), &config.mfd.pairwise)?;
    let vs_base = match base {
        Some(b) => judge_pairs(judge, &pairs(b), &config.mfd.pairwise)?,
        None => Vec::new(),
    };
    Ok(HeldoutJudgements {
        vs_teacher,
        vs_base,
    })
}

fn summarise_heldout(
    j: &HeldoutJudgements,
    config: &CurriculumConfig,
    with_base: bool,
) -> HeldoutSummary {
    let tie = config.mfd.pairwise.tie_delta;
    HeldoutSummary {
        vs_teacher: summarise(&j.vs_teacher, tie),
        vs_base: with_base.then(|| summarise(&j.vs_base, tie)),
    }
}

/// Writes `items` as JSON lines, atomically.
fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut out = String::new();
    for it in items {
        out.push_str(&serde_json::to_string(it).expect("serialisable"));
        out.push('\n');
    }
    atomic_fs::write_atomic(path, out.as_bytes())?;
    Ok(())
}

/// The warm-up student's record (`warmup/warmup.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WarmupRecord {
    /// Ids of the seed items it trained on (a seeded random slice of the pool).
    pub items: Vec<String>,
    /// The student's training summary.
    pub train: serde_json::Value,
}

/// Runs (or resumes) the curriculum into `run` (see the module docs). `notify` receives one
/// line per step started, for progress output.
///
/// # Errors
/// A bad config; a role that cannot work at all; a seed pool the teacher left empty; a round
/// where the judge scored nothing ([`TapirError::NothingScored`]); a run file that cannot be
/// read or written.
pub fn run_curriculum(
    run: &Path,
    seeds: &[Instruction],
    heldout: &[Instruction],
    roles: Roles<'_>,
    config: &CurriculumConfig,
    notify: &mut dyn FnMut(&str),
) -> Result<CurriculumOutcome> {
    config.validate()?;
    if seeds.is_empty() {
        return Err(TapirError::Input {
            what: "seed instructions".into(),
            detail: "expected at least one, found none; check the data section of the config"
                .into(),
        });
    }
    let mut state = RunState::new(run, roles, config, notify)?;
    let prepare = state.prepare(seeds, heldout)?;
    let mut rounds = vec![state.round_zero()?];
    let warmup = state.warmup()?;
    // A new instruction must not copy a held-out one.
    state.dedup.add(&state.held_texts())?;
    let mut final_student = None;
    for spec in &config.schedule() {
        let dir = round_dir(run, spec.round);
        let rec = if dir.join("round.json").is_file() {
            state.finished_round(&dir)?
        } else {
            state.round(spec, &dir)?
        };
        rounds.push(rec);
        final_student = Some(dir.join("train"));
    }
    Ok(CurriculumOutcome {
        prepare,
        warmup,
        rounds,
        calls: state.calls(),
        pool: state.pool,
        final_student,
    })
}

/// A run between its steps: the roles, the growing pool and the targets refined so far.
struct RunState<'a, 'b> {
    run: PathBuf,
    config: &'b CurriculumConfig,
    mix: TargetMix,
    teacher: &'a mut dyn Teacher,
    judge: &'a mut dyn Judge,
    classifier: &'a mut dyn TaskClassifier,
    student: StudentState<'a>,
    dedup: &'a mut dyn NearDuplicates,
    /// Pool instructions already added to `dedup` (after the held-out ones).
    dedup_len: usize,
    notify: &'b mut dyn FnMut(&str),
    /// Seeds with a teacher answer, then every round's new instructions.
    pool: Vec<PoolItem>,
    /// Refined targets by item id.
    refined: BTreeMap<String, String>,
    /// Held-out instructions with a teacher answer, and those answers.
    held: Vec<Instruction>,
    held_teacher: Vec<String>,
    /// The base student's held-out answers (round 0).
    base_answers: Vec<String>,
}

impl<'a, 'b> RunState<'a, 'b> {
    fn new(
        run: &Path,
        roles: Roles<'a>,
        config: &'b CurriculumConfig,
        notify: &'b mut dyn FnMut(&str),
    ) -> Result<Self> {
        Ok(Self {
            run: run.to_path_buf(),
            config,
            mix: config.mix()?,
            teacher: roles.teacher,
            judge: roles.judge,
            classifier: roles.classifier,
            student: StudentState {
                student: roles.student,
                at: Weights::Base,
                run: run.to_path_buf(),
                warmup: config.warmup > 0,
            },
            dedup: roles.dedup,
            dedup_len: 0,
            notify,
            pool: Vec::new(),
            refined: BTreeMap::new(),
            held: Vec::new(),
            held_teacher: Vec::new(),
            base_answers: Vec::new(),
        })
    }

    fn calls(&self) -> BTreeMap<String, CallStats> {
        let mut m = BTreeMap::new();
        m.insert("teacher".to_string(), self.teacher.stats());
        m.insert("judge".to_string(), self.judge.stats());
        m.insert("classifier".to_string(), self.classifier.stats());
        m
    }

    fn held_texts(&self) -> Vec<String> {
        self.held.iter().map(|h| h.text.clone()).collect()
    }

    /// The training target of a pool item: its refined answer when there is one.
    fn target(&self, it: &PoolItem) -> String {
        self.refined
            .get(&it.id)
            .cloned()
            .unwrap_or_else(|| it.teacher.clone())
    }

    /// Preparation: classify the seeds, have the teacher answer seeds and held-out
    /// instructions, drop those without an answer; fills the pool and the held-out set.
    fn prepare(&mut self, seeds: &[Instruction], heldout: &[Instruction]) -> Result<PrepareRecord> {
        let prep = self.run.join("prepare");
        (self.notify)(&format!("classify {} seed instructions", seeds.len()));
        let seed_texts: Vec<String> = seeds.iter().map(|s| s.text.clone()).collect();
        let classifier = &mut *self.classifier;
        let classes: Vec<ClassRecord> =
            step(&prep, "classes.json", || classify(classifier, &seed_texts))?;
        (self.notify)(&format!(
            "teacher answers {} seeds and {} held-out instructions",
            seeds.len(),
            heldout.len()
        ));
        let seed_answers = step(&prep, "teacher.json", || {
            teacher_answers(self.teacher, seeds)
        })?;
        let heldout_answers = step(&prep, "heldout_teacher.json", || {
            teacher_answers(self.teacher, heldout)
        })?;
        if seed_answers.len() != seeds.len()
            || classes.len() != seeds.len()
            || heldout_answers.len() != heldout.len()
        {
            return Err(TapirError::RunFile {
                path: prep,
                detail: "the files hold another number of instructions than the config's data; the data changed since the run started".into(),
            });
        }
        let mut dropped = Vec::new();
        for ((s, c), a) in seeds.iter().zip(&classes).zip(&seed_answers) {
            match a {
                Ok(t) => self.pool.push(PoolItem {
                    id: s.id.clone(),
                    instruction: s.text.clone(),
                    category: c.class.category,
                    origin: Origin::Seed,
                    teacher: t.clone(),
                }),
                Err(why) => dropped.push(Dropped {
                    id: s.id.clone(),
                    reason: why.clone(),
                }),
            }
        }
        for (h, a) in heldout.iter().zip(&heldout_answers) {
            match a {
                Ok(t) => {
                    self.held.push(h.clone());
                    self.held_teacher.push(t.clone());
                }
                Err(why) => dropped.push(Dropped {
                    id: h.id.clone(),
                    reason: why.clone(),
                }),
            }
        }
        if self.pool.is_empty() {
            return Err(TapirError::Input {
                what: "teacher".into(),
                detail: format!(
                    "the teacher's answers to all {} seed instructions failed or were empty ({}); check the teacher's model and max_new_tokens",
                    seeds.len(),
                    dropped.first().map_or("", |d| d.reason.as_str())
                ),
            });
        }
        if !dropped.is_empty() {
            tracing::warn!(
                "{} instructions dropped: the teacher's answer failed or was empty",
                dropped.len()
            );
        }
        let prepare = PrepareRecord {
            seeds: seeds.len(),
            heldout: heldout.len(),
            classes: summarise_classes(&classes),
            dropped,
            pool: self.pool.len(),
            heldout_kept: self.held.len(),
        };
        atomic_fs::write_json(&prep.join("prepare.json"), &prepare)?;
        Ok(prepare)
    }

    /// Round 0: the base student answers the held-out set and is judged against the teacher.
    fn round_zero(&mut self) -> Result<RoundRecord> {
        let r0 = round_dir(&self.run, 0);
        if r0.join("round.json").is_file() {
            self.base_answers = read_json(&r0.join("heldout.json"))?;
            return read_json(&r0.join("round.json"));
        }
        let t0 = Instant::now();
        let calls0 = self.calls();
        (self.notify)(&format!(
            "round 0: the base student on {} held-out instructions",
            self.held.len()
        ));
        let held_texts = self.held_texts();
        let student = &mut self.student;
        self.base_answers = step(&r0, "heldout.json", || {
            student.ensure(Weights::Base)?;
            student.student.respond(&held_texts)
        })?;
        let judged: HeldoutJudgements = step(&r0, "heldout_judge.json", || {
            judge_heldout(
                self.judge,
                &self.held,
                &self.held_teacher,
                &self.base_answers,
                None,
                self.config,
            )
        })?;
        let rec = RoundRecord {
            round: 0,
            heldout: summarise_heldout(&judged, self.config, false),
            calls: delta(&self.calls(), &calls0),
            seconds: t0.elapsed().as_secs_f64(),
            ..RoundRecord::default()
        };
        atomic_fs::write_json(&r0.join("round.json"), &rec)?;
        Ok(rec)
    }

    /// The warm-up student (ALGORITHMS.md 3(f), `curriculum.warmup > 0`): the base student
    /// trained on a seeded random slice of the seeds with the teacher's plain answers, so the
    /// round-1 MFD is measured on a student that follows instructions. Round 0 stays the raw
    /// base student's baseline.
    fn warmup(&mut self) -> Result<Option<WarmupRecord>> {
        let n = self.config.warmup.min(self.pool.len());
        if n == 0 {
            return Ok(None);
        }
        let dir = warmup_dir(&self.run);
        if let Ok(rec) = read_json::<WarmupRecord>(&dir.join("warmup.json")) {
            return Ok(Some(rec));
        }
        let cats: Vec<TaskCategory> = self.pool.iter().map(|p| p.category).collect();
        let picks = uniform_sample(&cats, n, step_seed(self.config.seed, 0, "warmup")).picks;
        let items: Vec<String> = picks.iter().map(|&i| self.pool[i].id.clone()).collect();
        let data: Vec<TrainPair> = picks
            .iter()
            .map(|&i| TrainPair {
                instruction: self.pool[i].instruction.clone(),
                response: self.pool[i].teacher.clone(),
            })
            .collect();
        write_jsonl(&dir.join("data.jsonl"), &data)?;
        (self.notify)(&format!(
            "warm-up: the base student trains on {n} seed answers"
        ));
        let student = &mut self.student;
        let train: serde_json::Value = step(&dir, "train.json", || {
            student.ensure(Weights::Base)?;
            let v = student.student.train_round(0, &data, &dir.join("train"))?;
            student.at = Weights::Warmup;
            Ok(v)
        })?;
        let rec = WarmupRecord { items, train };
        atomic_fs::write_json(&dir.join("warmup.json"), &rec)?;
        Ok(Some(rec))
    }

    /// A round finished by an earlier process: its record, new instructions and refinements.
    fn finished_round(&mut self, dir: &Path) -> Result<RoundRecord> {
        let rec: RoundRecord = read_json(&dir.join("round.json"))?;
        let new: Vec<PoolItem> = read_json(&dir.join("expanded.json"))?;
        self.pool.extend(new);
        let rf: BTreeMap<String, Refined> = read_json(&dir.join("refined.json"))?;
        self.refined
            .extend(rf.into_iter().map(|(k, v)| (k, v.response)));
        Ok(rec)
    }

    /// Round `spec.round`, steps 1-7 of the module docs.
    fn round(&mut self, spec: &RoundSpec, dir: &Path) -> Result<RoundRecord> {
        let r = spec.round;
        let t0 = Instant::now();
        let calls0 = self.calls();
        let pool_size = self.pool.len();
        let mfd_records = self.score_mfd(r, dir)?;
        let hard: Vec<bool> = match &mfd_records {
            Some(recs) => recs.iter().map(|m| m.hard == Some(true)).collect(),
            None => vec![true; self.pool.len()],
        };
        let expansion = self.expand(spec, dir, &hard)?;
        let new_items = self.answer_expansion(r, dir, &expansion)?;
        let plan: Plan = step(dir, "plan.json", || {
            Ok(make_plan(
                &self.pool,
                &new_items,
                mfd_records.as_deref(),
                spec,
                self.config,
                &self.mix,
            ))
        })?;
        let refine = self.refine(r, dir, &plan, &new_items)?;
        let data = self.training_data(dir, &plan, &new_items)?;
        let train = self.train(r, dir, &data)?;
        let judged = self.evaluate(r, dir)?;

        let mfd_values: Vec<f64> = mfd_records.iter().flatten().filter_map(|m| m.mfd).collect();
        self.pool.extend(new_items);
        let rec = RoundRecord {
            round: r,
            alpha: spec.alpha,
            size: spec.size,
            pool: pool_size,
            mfd: mfd_records
                .as_ref()
                .map(|m| summarise_mfd(m, &self.config.mfd)),
            mfd_values,
            expansion: expansion.summary(),
            plan,
            refine,
            train,
            heldout: summarise_heldout(&judged, self.config, true),
            calls: delta(&self.calls(), &calls0),
            seconds: t0.elapsed().as_secs_f64(),
        };
        atomic_fs::write_json(&dir.join("round.json"), &rec)?;
        Ok(rec)
    }

    /// Step 1: the MFD of every pool item under the previous round's student (`None` without
    /// the MFD filter).
    fn score_mfd(&mut self, r: usize, dir: &Path) -> Result<Option<Vec<MfdRecord>>> {
        if !self.config.ablation.mfd_filter {
            return Ok(None);
        }
        let n = self.pool.len();
        (self.notify)(&format!(
            "round {r}: the student answers {n} pool instructions"
        ));
        let texts: Vec<String> = self.pool.iter().map(|p| p.instruction.clone()).collect();
        let before = self.student.before(r);
        let student = &mut self.student;
        let answers: Vec<String> = step(dir, "student.json", || {
            student.ensure(before)?;
            student.student.respond(&texts)
        })?;
        if answers.len() != n {
            return Err(TapirError::RunFile {
                path: dir.join("student.json"),
                detail: format!("expected {n} answers, found {}", answers.len()),
            });
        }
        (self.notify)(&format!(
            "round {r}: the judge scores {n} answers against the teacher (MFD)"
        ));
        let items: Vec<MfdItem> = self
            .pool
            .iter()
            .zip(&answers)
            .map(|(p, s)| MfdItem {
                instruction: p.instruction.clone(),
                teacher: self.target(p),
                student: s.clone(),
            })
            .collect();
        let recs: Vec<MfdRecord> = step(dir, "mfd.json", || {
            score_mfd(self.judge, &items, &self.config.mfd)
        })?;
        if recs.iter().all(|m| m.mfd.is_none()) {
            return Err(TapirError::NothingScored {
                step: format!("round {r} MFD"),
                items: recs.len(),
                attempts: self.config.mfd.pairwise.max_attempts,
                outputs: dir.join("mfd.json"),
            });
        }
        Ok(Some(recs))
    }

    /// Step 2a: the teacher writes new instructions from hard seeds of categories drawn from
    /// the target mix.
    fn expand(&mut self, spec: &RoundSpec, dir: &Path, hard: &[bool]) -> Result<Expansion> {
        let r = spec.round;
        (self.notify)(&format!(
            "round {r}: the teacher writes {} new instructions",
            spec.expand
        ));
        let texts: Vec<String> = self.pool.iter().map(|p| p.instruction.clone()).collect();
        let cats: Vec<TaskCategory> = self.pool.iter().map(|p| p.category).collect();
        step(dir, "expansion.json", || {
            self.dedup.add(&texts[self.dedup_len..])?;
            self.dedup_len = texts.len();
            let cfg = ExpansionConfig {
                per_round: spec.expand,
                ..self.config.expansion.clone()
            };
            expand(
                self.teacher,
                SeedPool {
                    texts: &texts,
                    categories: &cats,
                    eligible: hard,
                },
                self.config.ablation.rebalance.then_some(&self.mix),
                self.dedup,
                &cfg,
                step_seed(self.config.seed, r, "expand"),
                step_seed(self.config.seed, r, "expand-draws") >> 16,
            )
        })
    }

    /// Step 2b: the teacher answers the accepted new instructions (those it fails on are
    /// dropped).
    fn answer_expansion(
        &mut self,
        r: usize,
        dir: &Path,
        expansion: &Expansion,
    ) -> Result<Vec<PoolItem>> {
        step(dir, "expanded.json", || {
            let instr: Vec<Instruction> = expansion
                .accepted
                .iter()
                .enumerate()
                .map(|(k, a)| Instruction {
                    id: format!("x{r}-{k}"),
                    text: a.text.clone(),
                })
                .collect();
            let answers = teacher_answers(self.teacher, &instr)?;
            Ok(instr
                .into_iter()
                .zip(&expansion.accepted)
                .zip(answers)
                .filter_map(|((i, a), ans)| {
                    ans.ok().map(|t| PoolItem {
                        id: i.id,
                        instruction: i.text,
                        category: a.category,
                        origin: Origin::Expanded {
                            round: r,
                            from: self.pool[a.seed].id.clone(),
                        },
                        teacher: t,
                    })
                })
                .collect())
        })
    }

    /// Step 4a: the teacher refines the targets of the plan's items not refined before.
    fn refine(
        &mut self,
        r: usize,
        dir: &Path,
        plan: &Plan,
        new_items: &[PoolItem],
    ) -> Result<RefineSummary> {
        let round_refined: BTreeMap<String, Refined> = step(dir, "refined.json", || {
            if !self.config.ablation.refine {
                return Ok(BTreeMap::new());
            }
            let by_id = items_by_id(&self.pool, new_items);
            let mut ids: Vec<&str> = plan
                .items
                .iter()
                .map(String::as_str)
                .filter(|i| !self.refined.contains_key(*i))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            (self.notify)(&format!(
                "round {r}: the teacher refines {} responses",
                ids.len()
            ));
            let reqs: Vec<RefineRequest> = ids
                .iter()
                .map(|i| {
                    let p = by_id[i];
                    RefineRequest {
                        instruction: p.instruction.clone(),
                        response: p.teacher.clone(),
                        category: p.category,
                    }
                })
                .collect();
            let out = refine_responses(self.teacher, &reqs)?;
            Ok(ids.into_iter().map(str::to_string).zip(out).collect())
        })?;
        let summary = RefineSummary {
            asked: round_refined.len(),
            refined: round_refined.values().filter(|v| v.refined).count(),
            kept_original: round_refined.values().filter(|v| !v.refined).count(),
        };
        self.refined
            .extend(round_refined.into_iter().map(|(k, v)| (k, v.response)));
        Ok(summary)
    }

    /// Step 4b: the round's training pairs (`data.jsonl`).
    fn training_data(
        &self,
        dir: &Path,
        plan: &Plan,
        new_items: &[PoolItem],
    ) -> Result<Vec<TrainPair>> {
        let by_id = items_by_id(&self.pool, new_items);
        let data: Vec<TrainPair> = plan
            .items
            .iter()
            .map(|id| {
                let p = by_id[id.as_str()];
                TrainPair {
                    instruction: p.instruction.clone(),
                    response: if self.config.ablation.refine {
                        self.target(p)
                    } else {
                        p.teacher.clone()
                    },
                }
            })
            .collect();
        if !dir.join("data.jsonl").is_file() {
            write_jsonl(&dir.join("data.jsonl"), &data)?;
        }
        Ok(data)
    }

    /// Step 5: the student trains on the round's data, continuing from the previous student.
    fn train(&mut self, r: usize, dir: &Path, data: &[TrainPair]) -> Result<serde_json::Value> {
        let train_dir = dir.join("train");
        let before = self.student.before(r);
        let student = &mut self.student;
        let notify = &mut *self.notify;
        step(dir, "train.json", || {
            notify(&format!(
                "round {r}: the student trains on {} examples",
                data.len()
            ));
            student.ensure(before)?;
            let v = student.student.train_round(r, data, &train_dir)?;
            student.at = Weights::Round(r);
            Ok(v)
        })
    }

    /// Step 6: the round's student answers the held-out set and is judged against the teacher
    /// and the base student.
    fn evaluate(&mut self, r: usize, dir: &Path) -> Result<HeldoutJudgements> {
        (self.notify)(&format!(
            "round {r}: the student answers {} held-out instructions",
            self.held.len()
        ));
        let held_texts = self.held_texts();
        let student = &mut self.student;
        let answers: Vec<String> = step(dir, "heldout.json", || {
            student.ensure(Weights::Round(r))?;
            student.student.respond(&held_texts)
        })?;
        (self.notify)(&format!(
            "round {r}: the judge compares them with the teacher and the base student"
        ));
        step(dir, "heldout_judge.json", || {
            judge_heldout(
                self.judge,
                &self.held,
                &self.held_teacher,
                &answers,
                Some(&self.base_answers),
                self.config,
            )
        })
    }
}

/// The pool items and this round's new ones, by id.
fn items_by_id<'p>(
    pool: &'p [PoolItem],
    new_items: &'p [PoolItem],
) -> BTreeMap<&'p str, &'p PoolItem> {
    pool.iter()
        .chain(new_items)
        .map(|p| (p.id.as_str(), p))
        .collect()
}

/// The training-set plan of a round (step 3 of the module docs).
fn make_plan(
    pool: &[PoolItem],
    new_items: &[PoolItem],
    mfd: Option<&[MfdRecord]>,
    spec: &RoundSpec,
    config: &CurriculumConfig,
    mix: &TargetMix,
) -> Plan {
    let (hard, easy, unscored) = split_by_difficulty(pool, new_items, mfd);
    let want_hard = if mfd.is_some() {
        (spec.alpha * spec.size as f64).round() as usize
    } else {
        0
    };
    let mut notes = Vec::new();
    let (n_hard, n_easy) = places(
        (want_hard, spec.size - want_hard),
        (hard.len(), easy.len()),
        config.max_repeats,
        &mut notes,
    );
    let sample = |items: &[&PoolItem], n: usize, tag: &str| -> Rebalanced {
        let cats: Vec<TaskCategory> = items.iter().map(|p| p.category).collect();
        let seed = step_seed(config.seed, spec.round, tag);
        if config.ablation.rebalance {
            rebalance_capped(&cats, mix, n, seed, config.max_repeats)
        } else {
            uniform_sample(&cats, n, seed)
        }
    };
    let h = sample(&hard, n_hard, "plan-hard");
    let e = sample(&easy, n_easy, "plan-easy");
    if h.picks.len() < n_hard || e.picks.len() < n_easy {
        notes.push(format!(
            "only {} of {} items could be drawn: the available items' categories are outside the target mix",
            h.picks.len() + e.picks.len(),
            spec.size
        ));
    }
    let mut items: Vec<String> = h.picks.iter().map(|&i| hard[i].id.clone()).collect();
    items.extend(e.picks.iter().map(|&i| easy[i].id.clone()));
    Plan {
        hard_part: h.picks.len(),
        items,
        hard_available: hard.len(),
        easy_available: easy.len(),
        unscored,
        hard: h,
        easy: e,
        notes,
    }
}

/// The hard and easy items of a round and the number of unscored pool items: without the MFD
/// filter every item is "easy" (one random or rebalanced sample); with it, new instructions
/// join the hard part.
fn split_by_difficulty<'p>(
    pool: &'p [PoolItem],
    new_items: &'p [PoolItem],
    mfd: Option<&[MfdRecord]>,
) -> (Vec<&'p PoolItem>, Vec<&'p PoolItem>, usize) {
    let (mut hard, mut easy) = (Vec::new(), Vec::new());
    let mut unscored = 0;
    match mfd {
        Some(recs) => {
            for (p, m) in pool.iter().zip(recs) {
                match m.hard {
                    Some(true) => hard.push(p),
                    Some(false) => easy.push(p),
                    None => unscored += 1,
                }
            }
            hard.extend(new_items);
        }
        None => easy.extend(pool.iter().chain(new_items)),
    }
    (hard, easy, unscored)
}

/// The places of the hard and easy parts, given the wanted `(hard, easy)` places and the
/// `(hard, easy)` items available: a part with no item hands its places to the other, and a part
/// that would need more than `max_repeats` copies of its items hands the excess to the other
/// (as far as that one can take it). Every move is written to `notes`.
fn places(
    want: (usize, usize),
    available: (usize, usize),
    max_repeats: usize,
    notes: &mut Vec<String>,
) -> (usize, usize) {
    let ((mut n_hard, mut n_easy), (hard, easy)) = (want, available);
    if hard == 0 && n_hard > 0 {
        notes.push(format!(
            "no hard item: the {n_hard} hard places go to easy items"
        ));
        n_easy += n_hard;
        n_hard = 0;
    }
    if easy == 0 && n_easy > 0 {
        notes.push(format!(
            "no easy item: the {n_easy} easy places go to hard items"
        ));
        n_hard += n_easy;
        n_easy = 0;
    }
    if max_repeats > 0 {
        let cap = |avail: usize| avail * max_repeats;
        if n_hard > cap(hard) {
            let moved = n_hard - cap(hard);
            notes.push(format!(
                "{hard} hard item(s) for {n_hard} hard places: at most {max_repeats} copies each (curriculum.max_repeats), {moved} place(s) go to easy items"
            ));
            n_hard -= moved;
            n_easy += moved;
        }
        if n_easy > cap(easy) {
            let moved = n_easy - cap(easy);
            let to_hard = moved.min(cap(hard) - n_hard);
            notes.push(format!(
                "{easy} easy item(s) for {n_easy} easy places: at most {max_repeats} copies each (curriculum.max_repeats); {to_hard} place(s) go to hard items, {} stay empty",
                moved - to_hard
            ));
            n_easy -= moved;
            n_hard += to_hard;
        }
    }
    (n_hard, n_easy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_move_to_the_other_part_and_say_so() {
        let mut notes = Vec::new();
        // enough of both: as wanted
        assert_eq!(places((4, 4), (5, 5), 3, &mut notes), (4, 4));
        assert!(notes.is_empty());
        // no hard item: its places go to easy
        assert_eq!(places((4, 4), (0, 5), 0, &mut notes), (0, 8));
        assert!(notes[0].contains("no hard item"), "{notes:?}");
        // one hard item, at most 3 copies: 6 wanted, 3 move to easy
        notes.clear();
        assert_eq!(places((6, 2), (1, 5), 3, &mut notes), (3, 5));
        assert!(notes[0].contains("3 place(s) go to easy"), "{notes:?}");
        // both parts short: what the hard part can take moves, the rest stays empty
        notes.clear();
        assert_eq!(places((2, 10), (1, 2), 3, &mut notes), (3, 6));
        assert!(
            notes[0].contains("1 place(s) go to hard items, 3 stay empty"),
            "{notes:?}"
        );
    }
}
