//! Held-out test accuracy of DiverseEvol rounds, and the random-selection baseline run they are
//! compared with (`select evolve --test`).
//!
//! - **Per-round evaluation**: right after a round's LoRA is trained, the adapter is evaluated on
//!   a fixed test set ([`TestSet`]): exact match by greedy generation with a bootstrap standard
//!   error, and reasoning perplexity when every test item has a rationale. The result goes to
//!   `rd_{t}/test_eval.json` ([`RoundTestEval`], written atomically). [`TestedEvolveModel`]
//!   wraps a [`LoraEvolveModel`] so data-select's loop does this for every round it trains.
//! - **Resume**: [`evaluate_rounds`] reads back the evaluation of every completed round and
//!   computes the missing ones (a run started without `--test`, a crash between training and
//!   evaluation) from the round's saved adapter. An evaluation made with another test set or
//!   other settings (its [`RoundTestEval::test_fingerprint`]) is redone, never mixed in.
//! - **Random baseline**: a second run with [`EvolveStrategy::Random`](data_select::evolve::EvolveStrategy)
//!   and the same sizes and seed in its own directory. Its round 0 is the same seeded draw, so
//!   [`share_round_zero`] copies the finished round 0 (picks, adapter, records, evaluation)
//!   instead of training it again: both curves start from the same model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use atomic_fs::{write_atomic, write_json};
use data_select::evolve::{EvolveModel, RoundRecord, picks_path, record_path, round_dir};
use data_select::{Result, SelectError};
use kshot_eval::KShotItem;
use kshot_eval::eval::{EvalConfig, Evaluation, Experts, Metrics, evaluate};
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::train::TrainExample;
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::diverse_evol::LoraEvolveModel;

/// The name of a round's test evaluation inside `rd_{t}/`.
pub const TEST_EVAL_FILE: &str = "test_eval.json";

/// The path of the test evaluation of the round whose directory is `round_dir`.
pub fn test_eval_path(round_dir: &Path) -> PathBuf {
    round_dir.join(TEST_EVAL_FILE)
}

/// A held-out test set and how every round is evaluated on it.
#[derive(Debug, Clone)]
pub struct TestSet {
    /// Where the items come from (a path, for reports).
    pub source: String,
    /// The items evaluated, in order.
    pub items: Vec<KShotItem>,
    /// Exact match, plus reasoning perplexity when every item has a rationale.
    pub metrics: Metrics,
    /// Prompt format, extractor, generation length, batch size and bootstrap settings.
    pub config: EvalConfig,
}

impl TestSet {
    /// A test set of `items` evaluated zero-shot with `config`.
    ///
    /// # Errors
    /// [`SelectError::Empty`] when `items` is empty.
    pub fn new(
        source: impl Into<String>,
        items: Vec<KShotItem>,
        config: EvalConfig,
    ) -> Result<Self> {
        let source = source.into();
        if items.is_empty() {
            return Err(SelectError::Empty {
                what: format!("the test set {source}"),
                hint: "give a test JSONL with at least one question/answer item".into(),
            });
        }
        let metrics = Metrics {
            exact_match: true,
            reasoning_ppl: items.iter().all(|i| i.rationale_text().is_some()),
            answer_ppl: false,
            multiple_choice: false,
        };
        Ok(Self {
            source,
            items,
            metrics,
            config,
        })
    }

    /// A hex SHA-256 of what an evaluation's numbers depend on: the items, the metrics and the
    /// evaluation settings (not the progress switch, not the file name).
    pub fn fingerprint(&self) -> String {
        let mut config = self.config.clone();
        config.show_progress = false;
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&self.items).expect("items serialise"));
        h.update(serde_json::to_vec(&self.metrics).expect("metrics serialise"));
        h.update(serde_json::to_vec(&config).expect("the config serialises"));
        format!("{:x}", h.finalize())
    }

    /// Evaluates `model` with `mix` on the items (zero-shot).
    ///
    /// # Errors
    /// Whatever kshot-eval reports (prompt rendering, generation, scoring).
    pub fn evaluate(
        &self,
        model: &LanguageModel,
        mix: &ExpertMix,
        name: &str,
    ) -> kshot_eval::Result<Evaluation> {
        let mut all = evaluate(
            model,
            Experts::Shared(mix),
            &[name.to_string()],
            &[],
            &self.items,
            self.metrics,
            &self.config,
        )?;
        Ok(all.remove(0))
    }
}

/// `rd_{t}/test_eval.json`: one round's adapter (or the base model) on the test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundTestEval {
    /// Round number; `None` for the base model.
    pub round: Option<usize>,
    /// Labelled items the round was trained on (0 for the base model).
    pub labeled: usize,
    /// [`TestSet::fingerprint`] of the test set evaluated.
    pub test_fingerprint: String,
    /// Test items evaluated.
    pub items: usize,
    /// Exact-match accuracy in `[0, 1]`.
    pub accuracy: Option<f64>,
    /// Bootstrap standard error of `accuracy`.
    pub stderr: Option<f64>,
    /// Mean reasoning perplexity (when the items have rationales).
    pub reasoning_ppl: Option<f64>,
    /// Wall-clock seconds of the evaluation.
    pub seconds: f64,
    /// Every metric with its per-item details.
    pub evaluation: Evaluation,
}

impl RoundTestEval {
    fn new(
        round: Option<usize>,
        labeled: usize,
        test: &TestSet,
        evaluation: Evaluation,
        seconds: f64,
    ) -> Self {
        let em = evaluation.exact_match.as_ref();
        Self {
            round,
            labeled,
            test_fingerprint: test.fingerprint(),
            items: test.items.len(),
            accuracy: em.map(|e| e.accuracy),
            stderr: em.map(|e| e.stderr),
            reasoning_ppl: evaluation.reasoning_ppl.as_ref().map(|r| r.mean_ppl),
            seconds,
            evaluation,
        }
    }

    /// Per-item exact match (1 correct, 0 wrong) in test-set order, for paired comparisons.
    pub fn correct(&self) -> Option<Vec<f64>> {
        let em = self.evaluation.exact_match.as_ref()?;
        Some(
            em.per_item
                .iter()
                .map(|p| if p.correct { 1.0 } else { 0.0 })
                .collect(),
        )
    }
}

/// Evaluates the model's current adapter (the base model when it holds none) on `test`.
///
/// # Errors
/// [`SelectError::Model`] wrapping kshot-eval's error.
pub fn evaluate_current(
    model: &mut LoraEvolveModel,
    test: &TestSet,
    round: Option<usize>,
    labeled: usize,
) -> Result<RoundTestEval> {
    let name = match round {
        Some(t) => format!("round {t}"),
        None => "base".to_string(),
    };
    let t0 = Instant::now();
    let evaluation = model
        .with_current(|m, mix| test.evaluate(m, mix, &name))
        .map_err(|e| SelectError::model(format!("evaluating {name} on the test set"), e))?;
    let eval = RoundTestEval::new(round, labeled, test, evaluation, t0.elapsed().as_secs_f64());
    tracing::info!(
        what = %name,
        accuracy = eval.accuracy,
        seconds = eval.seconds,
        "test evaluation"
    );
    Ok(eval)
}

/// The evaluation stored at `path` when it is one of `test` (same fingerprint); `None` when the
/// file is missing, unreadable or made with another test set (it is then redone).
pub fn read_test_eval(path: &Path, test: &TestSet) -> Option<RoundTestEval> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<RoundTestEval>(&bytes) {
        Ok(e) if e.test_fingerprint == test.fingerprint() => Some(e),
        Ok(_) => {
            tracing::warn!(path = %path.display(), "made with another test set or settings; evaluating again");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable test evaluation; evaluating again");
            None
        }
    }
}

/// The base model's evaluation: read back from `path` when `reuse` (a resumed run: the file's
/// fingerprint covers the test set, not the model), else computed (after
/// [`EvolveModel::reset_to_base`]) and written there.
///
/// # Errors
/// Evaluation errors and write errors.
pub fn evaluate_base(
    model: &mut LoraEvolveModel,
    test: &TestSet,
    path: &Path,
    reuse: bool,
) -> Result<RoundTestEval> {
    if let Some(e) = reuse.then(|| read_test_eval(path, test)).flatten() {
        return Ok(e);
    }
    model.reset_to_base();
    let eval = evaluate_current(model, test, None, 0)?;
    write_json(path, &eval)?;
    Ok(eval)
}

/// The evaluation of every completed round in `rounds` of the run in `dir`, in order: read back
/// from `rd_{t}/test_eval.json`, or computed from `rd_{t}/adapter` (loaded with
/// [`EvolveModel::load_round`], which replaces the model's current adapter) and written there.
///
/// # Errors
/// A round's adapter that cannot be loaded, evaluation errors and write errors.
pub fn evaluate_rounds(
    model: &mut LoraEvolveModel,
    test: &TestSet,
    dir: &Path,
    rounds: &[RoundRecord],
) -> Result<Vec<RoundTestEval>> {
    let mut out = Vec::with_capacity(rounds.len());
    for r in rounds {
        let rdir = round_dir(dir, r.round);
        let path = test_eval_path(&rdir);
        if let Some(e) = read_test_eval(&path, test) {
            out.push(e);
            continue;
        }
        model.load_round(r.round, &rdir)?;
        let eval = evaluate_current(model, test, Some(r.round), r.labeled)?;
        write_json(&path, &eval)?;
        out.push(eval);
    }
    Ok(out)
}

/// A [`LoraEvolveModel`] that evaluates every round it trains on a test set, writing
/// `rd_{t}/test_eval.json` before the loop marks the round complete.
#[derive(Debug)]
pub struct TestedEvolveModel<'a> {
    inner: &'a mut LoraEvolveModel,
    test: &'a TestSet,
}

impl<'a> TestedEvolveModel<'a> {
    /// Wraps `inner`, evaluating on `test`.
    pub fn new(inner: &'a mut LoraEvolveModel, test: &'a TestSet) -> Self {
        Self { inner, test }
    }
}

impl EvolveModel for TestedEvolveModel<'_> {
    fn pool_len(&self) -> usize {
        self.inner.pool_len()
    }

    fn embed(&mut self) -> Result<Array2<f32>> {
        self.inner.embed()
    }

    fn reset_to_base(&mut self) {
        self.inner.reset_to_base();
    }

    fn train(
        &mut self,
        round: usize,
        labeled: &[usize],
        round_dir: &Path,
    ) -> Result<serde_json::Value> {
        let summary = self.inner.train(round, labeled, round_dir)?;
        let eval = evaluate_current(self.inner, self.test, Some(round), labeled.len())?;
        write_json(&test_eval_path(round_dir), &eval)?;
        Ok(summary)
    }

    fn load_round(&mut self, round: usize, round_dir: &Path) -> Result<()> {
        self.inner.load_round(round, round_dir)
    }
}

/// Indices of the test items whose question is also the prompt of a pool item (compared after
/// trimming, lower-casing and collapsing whitespace; a chat's prompt is its first user turn).
pub fn overlap_with_pool(pool: &[TrainExample], test: &[KShotItem]) -> Vec<usize> {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let prompts: std::collections::HashSet<String> = pool
        .iter()
        .filter_map(|e| match e {
            TrainExample::PromptResponse { prompt, .. } => Some(norm(prompt)),
            TrainExample::Chat { messages } => messages
                .iter()
                .find(|m| m.role == "user")
                .map(|m| norm(&m.content)),
            TrainExample::Tokens { .. } => None,
        })
        .collect();
    test.iter()
        .enumerate()
        .filter(|(_, it)| prompts.contains(&norm(&it.question)))
        .map(|(i, _)| i)
        .collect()
}

/// Copies the finished round 0 of the run in `from` into the baseline run directory `to`
/// (picks, records, adapter and test evaluation; not the training checkpoints), so the baseline
/// starts from the very same model. Does nothing and returns `false` when `to` already has a
/// completed round 0, or when `from`'s round 0 is not complete. The round's `round.json`, its
/// completion marker, is written last.
///
/// # Errors
/// File-system errors.
pub fn share_round_zero(from: &Path, to: &Path) -> Result<bool> {
    if record_path(to, 0).exists() || !record_path(from, 0).exists() {
        return Ok(false);
    }
    let (src, dst) = (round_dir(from, 0), round_dir(to, 0));
    copy_tree(&src, &dst, &|p: &Path| {
        p.file_name()
            .is_some_and(|n| n == "checkpoints" || n == "round.json")
    })?;
    copy_file(&picks_path(from, 0), &picks_path(to, 0))?;
    copy_file(&record_path(from, 0), &record_path(to, 0))?;
    Ok(true)
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| SelectError::io(from, e))?;
    write_atomic(to, &bytes)?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| SelectError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| SelectError::io(from, e))? {
        let entry = entry.map_err(|e| SelectError::io(from, e))?;
        let path = entry.path();
        if skip(&path) {
            continue;
        }
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_tree(&path, &target, skip)?;
        } else {
            copy_file(&path, &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::diverse_evol::test_support::evolve_model;
    use data_select::evolve::{EvolveConfig, EvolveStrategy, run_evolve};
    use lm_core::train::PromptFormat;

    fn model(n: usize) -> LoraEvolveModel {
        evolve_model(n, 2)
    }

    fn test_set() -> TestSet {
        let items = (0..3)
            .map(|i| KShotItem::new(format!("t{i}:"), "ab").with_rationale("r"))
            .collect();
        let config = EvalConfig {
            format: PromptFormat::raw(),
            max_new_tokens: 3,
            bootstrap_resamples: 20,
            ..EvalConfig::default()
        };
        TestSet::new("test", items, config).unwrap()
    }

    fn cfg(strategy: EvolveStrategy) -> EvolveConfig {
        EvolveConfig {
            init: 3,
            per_round: 2,
            rounds: 1,
            strategy,
            ..EvolveConfig::default()
        }
    }

    #[test]
    fn every_trained_round_is_evaluated_and_resume_reads_evaluations_back() {
        let dir = tempfile::tempdir().unwrap();
        let test = test_set();
        let mut m = model(10);
        let fp = m.fingerprint();
        let report = {
            let mut tested = TestedEvolveModel::new(&mut m, &test);
            run_evolve(
                &mut tested,
                &cfg(EvolveStrategy::KCenter),
                dir.path(),
                &fp,
                false,
            )
            .unwrap()
        };
        for t in 0..=1 {
            let e: RoundTestEval = serde_json::from_slice(
                &std::fs::read(test_eval_path(&round_dir(dir.path(), t))).unwrap(),
            )
            .unwrap();
            assert_eq!(e.round, Some(t));
            assert_eq!(e.labeled, 3 + 2 * t);
            assert_eq!(e.items, 3);
            assert!(e.accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
            assert!(e.reasoning_ppl.is_some_and(f64::is_finite));
            assert_eq!(e.correct().unwrap().len(), 3);
        }
        // Read back, not recomputed: a marker in a stored file survives.
        let p1 = test_eval_path(&round_dir(dir.path(), 1));
        let mut stored: RoundTestEval =
            serde_json::from_slice(&std::fs::read(&p1).unwrap()).unwrap();
        stored.seconds = -1.0;
        write_json(&p1, &stored).unwrap();
        let p0 = test_eval_path(&round_dir(dir.path(), 0));
        std::fs::remove_file(&p0).unwrap();
        let evals = evaluate_rounds(&mut m, &test, dir.path(), &report.rounds).unwrap();
        assert_eq!(evals[1].seconds, -1.0);
        assert!(
            evals[0].seconds >= 0.0 && p0.exists(),
            "the missing one is recomputed"
        );
        // Another test set redoes them.
        let mut other = test_set();
        other.config.max_new_tokens = 4;
        let evals = evaluate_rounds(&mut m, &other, dir.path(), &report.rounds).unwrap();
        assert!(evals[1].seconds >= 0.0);
        assert_eq!(evals[1].test_fingerprint, other.fingerprint());
    }

    #[test]
    fn evaluating_the_loaded_adapter_matches_the_fresh_one_and_base_differs() {
        let dir = tempfile::tempdir().unwrap();
        let test = test_set();
        let mut m = model(8);
        m.train(0, &[0, 1, 2, 3], dir.path()).unwrap();
        let fresh = evaluate_current(&mut m, &test, Some(0), 4).unwrap();
        m.reset_to_base();
        let base = evaluate_current(&mut m, &test, None, 0).unwrap();
        m.load_round(0, dir.path()).unwrap();
        let loaded = evaluate_current(&mut m, &test, Some(0), 4).unwrap();
        assert_eq!(fresh.evaluation, loaded.evaluation);
        assert_ne!(
            fresh.reasoning_ppl, base.reasoning_ppl,
            "the adapter changes the model"
        );
        // evaluate_base resets, and reads its file back afterwards
        let path = dir.path().join("base.json");
        let b = evaluate_base(&mut m, &test, &path, true).unwrap();
        assert_eq!(b.evaluation, base.evaluation);
        assert!(m.current().is_none());
        assert!(path.exists());
        let mut stored = b.clone();
        stored.seconds = -1.0;
        write_json(&path, &stored).unwrap();
        assert_eq!(
            evaluate_base(&mut m, &test, &path, true).unwrap().seconds,
            -1.0
        );
        assert!(evaluate_base(&mut m, &test, &path, false).unwrap().seconds >= 0.0);
    }

    #[test]
    fn random_baseline_shares_round_zero() {
        let root = tempfile::tempdir().unwrap();
        let (main, random) = (root.path().join("main"), root.path().join("random"));
        let test = test_set();
        let mut m = model(12);
        let fp = m.fingerprint();
        let a = run_evolve(
            &mut TestedEvolveModel::new(&mut m, &test),
            &cfg(EvolveStrategy::KCenter),
            &main,
            &fp,
            false,
        )
        .unwrap();
        assert!(share_round_zero(&main, &random).unwrap());
        assert!(!share_round_zero(&main, &random).unwrap(), "only once");
        assert!(!round_dir(&random, 0).join("checkpoints").exists());
        assert!(test_eval_path(&round_dir(&random, 0)).exists());
        let b = run_evolve(
            &mut TestedEvolveModel::new(&mut m, &test),
            &cfg(EvolveStrategy::Random),
            &random,
            &fp,
            true,
        )
        .unwrap();
        assert_eq!(b.skipped_rounds, vec![0]);
        assert_eq!(b.trained_rounds, vec![1]);
        assert_eq!(a.labeled[..3], b.labeled[..3]);
        assert_eq!(
            a.rounds.iter().map(|r| r.labeled).collect::<Vec<_>>(),
            b.rounds.iter().map(|r| r.labeled).collect::<Vec<_>>()
        );
        // an unfinished run shares nothing
        let empty = root.path().join("empty");
        assert!(!share_round_zero(&empty, &root.path().join("x")).unwrap());
    }

    #[test]
    fn overlap_finds_test_questions_in_the_pool() {
        let pool = vec![
            TrainExample::PromptResponse {
                prompt: "What is  2+2?".into(),
                response: "4".into(),
            },
            TrainExample::Chat {
                messages: vec![
                    lm_core::chat_template::ChatMessage::user("Spell cat backwards"),
                    lm_core::chat_template::ChatMessage::assistant("tac"),
                ],
            },
        ];
        let test = vec![
            KShotItem::new("what is 2+2?", "4"),
            KShotItem::new("What is 3+3?", "6"),
            KShotItem::new(" spell cat backwards ", "tac"),
        ];
        assert_eq!(overlap_with_pool(&pool, &test), vec![0, 2]);
        assert!(TestSet::new("t", vec![], EvalConfig::default()).is_err());
    }
}
