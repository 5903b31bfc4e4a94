//! The DiverseEvol loop: random `n0` items, then `T` rounds of "embed the whole pool with the current model → pick
//! `k` new items by k-center greedy → train on everything labelled so far".
//!
//! This module is model-free: the model side (embedding with the current model, training, going back to the base) is
//! the [`EvolveModel`] trait; `openexpert`'s `pipelines::diverse_evol` implements it on lm-core.
//!
//! # Rounds
//! Round 0 labels `init` items drawn uniformly at random (seeded) and trains `M_0`. Round `t = 1..=rounds` embeds
//! **all** pool items with `M_{t-1}`, picks `per_round` unlabelled items (k-center with every labelled item as a
//! center, or random for the baseline), and trains `M_t` on the union. Training starts from the base weights each
//! round (the reference's behaviour) unless [`EvolveConfig::warm_start`] is set, in which case it continues from
//! `M_{t-1}`. When the pool runs out the loop stops early (a round with no new item would retrain on the same data).
//!
//! # Files (under the run directory)
//! - `evolve.json`: the [`EvolveManifest`] (config, pool size and fingerprint); a resumed run must match it;
//! - `rd_{t}_labeled.json`: the round's [`RoundPicks`] (new picks in pick order and every labelled index so far),
//!   written atomically **before** the round's training starts;
//! - `rd_{t}/`: the model's artifacts for the round (written by [`EvolveModel::train`]) and `rd_{t}/round.json`,
//!   the [`RoundRecord`], written last: a round is complete exactly when this file exists;
//! - `state.json`: the [`EvolveState`] summary, rewritten after every round.
//!
//! # Resume
//! With `resume`, completed rounds are skipped (never retrained); the first incomplete round reads its picks back
//! from `rd_{t}_labeled.json` when they were written (they are not recomputed, so a crash during training changes
//! nothing), and the model is brought to `M_{t-1}` with [`EvolveModel::load_round`] when it needs it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::baselines::random_select;
use crate::distance::Metric;
use crate::error::{Result, SelectError};
use crate::kcenter::{KCenterOptions, kcenter_greedy};
use atomic_fs::write_json;

/// How each round's new items are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvolveStrategy {
    /// k-center greedy on the current model's embeddings (DiverseEvol).
    #[default]
    KCenter,
    /// Uniform random among the unlabelled items (the baseline; the model is not used for picking).
    Random,
}

crate::named_enum!(EvolveStrategy, "evolve strategy", { KCenter => "kcenter", Random => "random" });

/// Settings of a DiverseEvol run (defaults: the reference's 100 / 100 / 10).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvolveConfig {
    /// Items labelled at random in round 0 (`init_label_num`).
    pub init: usize,
    /// Items added per round (`n_query`).
    pub per_round: usize,
    /// Rounds after round 0 (`n_round`); `rounds + 1` models are trained.
    pub rounds: usize,
    /// Seed of round 0's draw (and of the random strategy's draws).
    pub seed: u64,
    /// Continue training from the previous round's model instead of from the base weights (the reference retrains
    /// from the base every round: `false`).
    pub warm_start: bool,
    /// Distance of the k-center picks (the reference: Euclidean on raw vectors).
    pub metric: Metric,
    /// How new items are chosen.
    pub strategy: EvolveStrategy,
}

impl Default for EvolveConfig {
    fn default() -> Self {
        EvolveConfig {
            init: 100,
            per_round: 100,
            rounds: 10,
            seed: 42,
            warm_start: false,
            metric: Metric::Euclidean,
            strategy: EvolveStrategy::KCenter,
        }
    }
}

/// The model side of the loop.
pub trait EvolveModel {
    /// Number of items in the pool (indices `0..pool_len()`).
    fn pool_len(&self) -> usize;

    /// Embeds every pool item with the current model.
    ///
    /// # Shapes
    /// `-> [pool_len, d]`
    fn embed(&mut self) -> Result<Array2<f32>>;

    /// Drops any trained state: the next [`train`](Self::train) starts from the base weights.
    fn reset_to_base(&mut self);

    /// Trains on the `labeled` items (starting from the current model), writes the round's artifacts under
    /// `round_dir`, and makes the result the current model. Returns a summary kept in the round's record.
    fn train(
        &mut self,
        round: usize,
        labeled: &[usize],
        round_dir: &Path,
    ) -> Result<serde_json::Value>;

    /// Makes the model trained in a completed `round` (artifacts under `round_dir`) the current model (resume).
    fn load_round(&mut self, round: usize, round_dir: &Path) -> Result<()>;
}

/// `evolve.json`: what a run directory was created for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvolveManifest {
    /// The loop's settings.
    pub config: EvolveConfig,
    /// Items in the pool.
    pub pool_len: usize,
    /// A caller-chosen fingerprint of the pool and model settings (e.g. a hash of item ids and training flags).
    pub fingerprint: String,
}

/// `rd_{t}_labeled.json`: one round's picks, written before its training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundPicks {
    /// Round number (0 = the random initial set).
    pub round: usize,
    /// How the picks were made (`random` for round 0).
    pub strategy: String,
    /// New items, in pick order.
    pub picks: Vec<usize>,
    /// For k-center picks: each pick's distance to its nearest earlier center (`null` when infinite).
    pub pick_distances: Vec<Option<f32>>,
    /// Every labelled item after this round, in the order they were added.
    pub labeled: Vec<usize>,
    /// Seconds spent embedding the pool (0 when not embedded).
    pub embed_seconds: f64,
    /// Seconds spent choosing.
    pub select_seconds: f64,
}

/// `rd_{t}/round.json`: a completed round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number.
    pub round: usize,
    /// New items this round.
    pub new_items: usize,
    /// Labelled items trained on.
    pub labeled: usize,
    /// Whether training started from the previous round's model.
    pub warm_started: bool,
    /// Seconds spent embedding the pool.
    pub embed_seconds: f64,
    /// Seconds spent choosing.
    pub select_seconds: f64,
    /// Seconds spent training (including writing the model's artifacts).
    pub train_seconds: f64,
    /// Whether the picks were read back from disk (resumed round).
    pub picks_resumed: bool,
    /// What [`EvolveModel::train`] returned.
    pub train: serde_json::Value,
}

/// `state.json`: progress of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvolveState {
    /// Completed rounds, in order.
    pub completed_rounds: Vec<usize>,
    /// Labelled items after the last completed round.
    pub labeled: usize,
    /// True when every round ran (or the pool ran out).
    pub finished: bool,
    /// True when the pool ran out before the last round.
    pub pool_exhausted: bool,
}

/// What [`run_evolve`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvolveReport {
    /// Every completed round's record (read back for rounds completed earlier).
    pub rounds: Vec<RoundRecord>,
    /// Rounds skipped because an earlier run completed them.
    pub skipped_rounds: Vec<usize>,
    /// Rounds trained by this call.
    pub trained_rounds: Vec<usize>,
    /// Final labelled items, in the order they were added.
    pub labeled: Vec<usize>,
    /// True when the pool ran out before the last round.
    pub pool_exhausted: bool,
}

/// The path of round `t`'s picks file.
pub fn picks_path(dir: &Path, round: usize) -> PathBuf {
    dir.join(format!("rd_{round}_labeled.json"))
}

/// The directory of round `t`'s model artifacts.
pub fn round_dir(dir: &Path, round: usize) -> PathBuf {
    dir.join(format!("rd_{round}"))
}

/// The completion marker (and record) of round `t`.
pub fn record_path(dir: &Path, round: usize) -> PathBuf {
    round_dir(dir, round).join("round.json")
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| SelectError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| SelectError::InvalidJson {
        what: path.display().to_string(),
        reason: format!("{e} (the file was not written by this version of `select evolve`?)"),
    })
}

fn check_manifest(dir: &Path, manifest: &EvolveManifest, resume: bool) -> Result<()> {
    let path = dir.join("evolve.json");
    if path.exists() {
        if !resume {
            return Err(SelectError::param(
                "output",
                format!(
                    "{} already holds a DiverseEvol run: pass --resume to continue it, or choose another directory",
                    dir.display()
                ),
            ));
        }
        let found: EvolveManifest = read_json(&path)?;
        if found != *manifest {
            return Err(SelectError::param(
                "resume",
                format!(
                    "{} was created with other settings (found {:?}, now {:?}); resume with the same pool and flags, or start in another directory",
                    path.display(),
                    found,
                    manifest
                ),
            ));
        }
        return Ok(());
    }
    Ok(write_json(&path, manifest)?)
}

/// Runs (or resumes) the DiverseEvol loop in `dir`.
///
/// `fingerprint` identifies the pool and the model settings; a resumed run must pass the same one.
///
/// # Errors
/// Invalid settings (`init` or `per_round` of 0, empty pool), a run directory made with other settings (or an
/// existing run without `resume`), damaged state files, and whatever the model reports.
pub fn run_evolve(
    model: &mut dyn EvolveModel,
    config: &EvolveConfig,
    dir: &Path,
    fingerprint: &str,
    resume: bool,
) -> Result<EvolveReport> {
    let n = model.pool_len();
    if n == 0 {
        return Err(SelectError::Empty {
            what: "the pool".into(),
            hint: "give a pool with at least one item".into(),
        });
    }
    if config.init == 0 || config.per_round == 0 {
        return Err(SelectError::param(
            "init/per_round",
            format!(
                "both must be at least 1, found init {} and per_round {}",
                config.init, config.per_round
            ),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| SelectError::io(dir, e))?;
    let manifest = EvolveManifest {
        config: config.clone(),
        pool_len: n,
        fingerprint: fingerprint.to_string(),
    };
    check_manifest(dir, &manifest, resume)?;

    let mut labeled: Vec<usize> = Vec::new();
    let mut report = EvolveReport {
        rounds: Vec::new(),
        skipped_rounds: Vec::new(),
        trained_rounds: Vec::new(),
        labeled: Vec::new(),
        pool_exhausted: false,
    };
    // Which round's model the `model` holds now (None = the base weights).
    let mut holds: Option<usize> = None;
    for t in 0..=config.rounds {
        let picks_file = picks_path(dir, t);
        let rdir = round_dir(dir, t);
        if record_path(dir, t).exists() {
            let picks: RoundPicks = read_json(&picks_file)?;
            check_continuation(&picks, &labeled, n, &picks_file)?;
            labeled = picks.labeled;
            report.rounds.push(read_json(&record_path(dir, t))?);
            report.skipped_rounds.push(t);
            tracing::info!(round = t, "round already complete; skipped");
            continue;
        }
        let (picks, picks_resumed) = if picks_file.exists() {
            let picks: RoundPicks = read_json(&picks_file)?;
            check_continuation(&picks, &labeled, n, &picks_file)?;
            tracing::info!(round = t, picks = picks.picks.len(), "picks read back");
            (picks, true)
        } else {
            if t > 0 && labeled.len() == n {
                report.pool_exhausted = true;
                tracing::info!(round = t, "every pool item is labelled; stopping");
                break;
            }
            let picks = choose(model, config, t, &labeled, dir, &mut holds)?;
            write_json(&picks_file, &picks)?;
            (picks, false)
        };
        labeled = picks.labeled.clone();

        let warm = config.warm_start && t > 0;
        if warm {
            bring_to(model, dir, t - 1, &mut holds)?;
        } else {
            model.reset_to_base();
        }
        let t0 = Instant::now();
        let train = model.train(t, &labeled, &rdir)?;
        holds = Some(t);
        let record = RoundRecord {
            round: t,
            new_items: picks.picks.len(),
            labeled: labeled.len(),
            warm_started: warm,
            embed_seconds: picks.embed_seconds,
            select_seconds: picks.select_seconds,
            train_seconds: t0.elapsed().as_secs_f64(),
            picks_resumed,
            train,
        };
        write_json(&record_path(dir, t), &record)?;
        report.rounds.push(record);
        report.trained_rounds.push(t);
        write_json(
            &dir.join("state.json"),
            &EvolveState {
                completed_rounds: report.rounds.iter().map(|r| r.round).collect(),
                labeled: labeled.len(),
                finished: false,
                pool_exhausted: false,
            },
        )?;
        tracing::info!(round = t, labeled = labeled.len(), "round complete");
    }
    write_json(
        &dir.join("state.json"),
        &EvolveState {
            completed_rounds: report.rounds.iter().map(|r| r.round).collect(),
            labeled: labeled.len(),
            finished: true,
            pool_exhausted: report.pool_exhausted,
        },
    )?;
    report.labeled = labeled;
    Ok(report)
}

/// Brings the model to `M_round`, loading it from disk when it holds something else.
fn bring_to(
    model: &mut dyn EvolveModel,
    dir: &Path,
    round: usize,
    holds: &mut Option<usize>,
) -> Result<()> {
    if *holds != Some(round) {
        model.load_round(round, &round_dir(dir, round))?;
        *holds = Some(round);
    }
    Ok(())
}

/// Checks that a picks file read back extends the labelled set so far.
fn check_continuation(picks: &RoundPicks, labeled: &[usize], n: usize, path: &Path) -> Result<()> {
    let mut expected = labeled.to_vec();
    expected.extend(&picks.picks);
    if picks.labeled != expected {
        return Err(SelectError::InvalidJson {
            what: path.display().to_string(),
            reason: format!(
                "its labelled set ({} items) is not the earlier rounds' {} items plus its {} picks; the run directory is inconsistent (delete this round's files to redo it)",
                picks.labeled.len(),
                labeled.len(),
                picks.picks.len()
            ),
        });
    }
    if let Some(&bad) = picks.labeled.iter().find(|&&i| i >= n) {
        return Err(SelectError::IndexOutOfRange {
            what: path.display().to_string(),
            index: bad,
            len: n,
        });
    }
    Ok(())
}

/// Chooses round `t`'s new items.
fn choose(
    model: &mut dyn EvolveModel,
    config: &EvolveConfig,
    t: usize,
    labeled: &[usize],
    dir: &Path,
    holds: &mut Option<usize>,
) -> Result<RoundPicks> {
    let n = model.pool_len();
    let (strategy, picks, distances, embed_seconds, select_seconds) = if t == 0 {
        let t0 = Instant::now();
        let picks = random_select(n, config.init, config.seed, &[])?;
        let d = vec![None; picks.len()];
        ("random", picks, d, 0.0, t0.elapsed().as_secs_f64())
    } else {
        match config.strategy {
            EvolveStrategy::Random => {
                let t0 = Instant::now();
                let seed = config.seed.wrapping_add(t as u64);
                let picks = random_select(n, config.per_round, seed, labeled)?;
                let d = vec![None; picks.len()];
                ("random", picks, d, 0.0, t0.elapsed().as_secs_f64())
            }
            EvolveStrategy::KCenter => {
                bring_to(model, dir, t - 1, holds)?;
                let t0 = Instant::now();
                let emb = model.embed()?;
                let embed_seconds = t0.elapsed().as_secs_f64();
                if emb.nrows() != n {
                    return Err(SelectError::DimensionMismatch {
                        what: format!("round {t} embeddings (rows)"),
                        expected: n,
                        found: emb.nrows(),
                    });
                }
                let t1 = Instant::now();
                let opts = KCenterOptions {
                    metric: config.metric,
                    ..KCenterOptions::new(config.per_round)
                };
                let r = kcenter_greedy(emb.view(), labeled, &opts)?;
                let d = r
                    .pick_distances
                    .iter()
                    .map(|&v| v.is_finite().then_some(v))
                    .collect();
                (
                    "kcenter",
                    r.picks,
                    d,
                    embed_seconds,
                    t1.elapsed().as_secs_f64(),
                )
            }
        }
    };
    let mut all = labeled.to_vec();
    all.extend(&picks);
    Ok(RoundPicks {
        round: t,
        strategy: strategy.to_string(),
        picks,
        pick_distances: distances,
        labeled: all,
        embed_seconds,
        select_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Deterministic stand-in for a model: item `i` embeds to a point that depends on `i` and on how many rounds of
    /// training the current model has seen, so picks change from round to round.
    #[derive(Default)]
    struct FakeModel {
        n: usize,
        /// Labelled sets of every train() call, with the round.
        trained: Vec<(usize, Vec<usize>)>,
        /// `(round, existed)`: whether the picks file existed when train() started.
        picks_on_disk: Vec<(usize, bool)>,
        dir: PathBuf,
        resets: usize,
        loads: Vec<usize>,
        /// Generation of the current model: the number of labelled items it was trained on (0 = base).
        state: usize,
        fail_at: Option<usize>,
        embeds: usize,
    }

    impl FakeModel {
        fn new(n: usize, dir: &Path) -> Self {
            FakeModel {
                n,
                dir: dir.to_path_buf(),
                ..Default::default()
            }
        }
        fn embedding(&self) -> Array2<f32> {
            let s = self.state as f32;
            Array2::from_shape_fn((self.n, 2), |(i, j)| {
                let x = i as f32;
                if j == 0 {
                    (x * 0.7 + s).sin() * 10.0
                } else {
                    (x * 1.3 - s * 0.5).cos() * 10.0
                }
            })
        }
    }

    impl EvolveModel for FakeModel {
        fn pool_len(&self) -> usize {
            self.n
        }
        fn embed(&mut self) -> Result<Array2<f32>> {
            self.embeds += 1;
            Ok(self.embedding())
        }
        fn reset_to_base(&mut self) {
            self.resets += 1;
            self.state = 0;
        }
        fn train(
            &mut self,
            round: usize,
            labeled: &[usize],
            round_dir: &Path,
        ) -> Result<serde_json::Value> {
            self.picks_on_disk
                .push((round, picks_path(&self.dir, round).exists()));
            if self.fail_at == Some(round) {
                return Err(SelectError::param("fake", "simulated crash"));
            }
            self.trained.push((round, labeled.to_vec()));
            // warm start accumulates, a cold start does not
            self.state += labeled.len();
            atomic_fs::write_atomic(
                &round_dir.join("model.txt"),
                self.state.to_string().as_bytes(),
            )?;
            Ok(serde_json::json!({ "state": self.state }))
        }
        fn load_round(&mut self, round: usize, round_dir: &Path) -> Result<()> {
            self.loads.push(round);
            let s = std::fs::read_to_string(round_dir.join("model.txt"))
                .map_err(|e| SelectError::io(round_dir, e))?;
            self.state = s.parse().unwrap();
            Ok(())
        }
    }

    fn config(init: usize, k: usize, rounds: usize) -> EvolveConfig {
        EvolveConfig {
            init,
            per_round: k,
            rounds,
            seed: 7,
            ..EvolveConfig::default()
        }
    }

    #[test]
    fn round_zero_is_seeded_random_and_later_rounds_are_kcenter_on_the_current_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = FakeModel::new(60, dir.path());
        let cfg = config(5, 4, 3);
        let r = run_evolve(&mut m, &cfg, dir.path(), "fp", false).unwrap();
        assert_eq!(r.trained_rounds, vec![0, 1, 2, 3]);
        assert_eq!(r.labeled.len(), 5 + 3 * 4);
        let p0: RoundPicks = read_json(&picks_path(dir.path(), 0)).unwrap();
        assert_eq!(p0.picks, random_select(60, 5, 7, &[]).unwrap());
        let mut labeled = p0.picks.clone();
        for t in 1..=3 {
            let p: RoundPicks = read_json(&picks_path(dir.path(), t)).unwrap();
            // the model that embedded round t was trained (from base) on round t-1's labelled set
            let shadow = FakeModel {
                n: 60,
                state: labeled.len(),
                ..Default::default()
            };
            let expected =
                kcenter_greedy(shadow.embedding().view(), &labeled, &KCenterOptions::new(4))
                    .unwrap();
            assert_eq!(p.picks, expected.picks, "round {t}");
            labeled.extend(&p.picks);
            assert_eq!(p.labeled, labeled);
            assert_eq!(m.trained[t].1, labeled);
        }
        // the random first draw and different embeddings give distinct picks that differ from a one-shot k-center
        assert_eq!(labeled.iter().collect::<HashSet<_>>().len(), labeled.len());
        let one_shot = kcenter_greedy(
            FakeModel::new(60, dir.path()).embedding().view(),
            &p0.picks,
            &KCenterOptions::new(12),
        )
        .unwrap();
        assert_ne!(one_shot.picks, labeled[5..].to_vec());
        let state: EvolveState = read_json(&dir.path().join("state.json")).unwrap();
        assert!(state.finished && state.completed_rounds == vec![0, 1, 2, 3]);
        // another seed draws another initial set
        let dir2 = tempfile::tempdir().unwrap();
        let mut m2 = FakeModel::new(60, dir2.path());
        let r2 = run_evolve(
            &mut m2,
            &EvolveConfig { seed: 8, ..cfg },
            dir2.path(),
            "fp",
            false,
        )
        .unwrap();
        assert_ne!(r2.labeled[..5], r.labeled[..5]);
    }

    #[test]
    fn picks_are_on_disk_before_training_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = FakeModel::new(30, dir.path());
        run_evolve(&mut m, &config(3, 3, 2), dir.path(), "fp", false).unwrap();
        assert_eq!(m.picks_on_disk, vec![(0, true), (1, true), (2, true)]);
        for t in 0..=2 {
            assert!(record_path(dir.path(), t).exists());
        }
    }

    #[test]
    fn resume_after_a_crash_continues_exactly() {
        let full_dir = tempfile::tempdir().unwrap();
        let mut full = FakeModel::new(50, full_dir.path());
        let cfg = config(4, 5, 4);
        let uninterrupted = run_evolve(&mut full, &cfg, full_dir.path(), "fp", false).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut crashing = FakeModel::new(50, dir.path());
        crashing.fail_at = Some(2);
        assert!(run_evolve(&mut crashing, &cfg, dir.path(), "fp", false).is_err());
        assert_eq!(crashing.trained.len(), 2);
        assert!(picks_path(dir.path(), 2).exists());
        assert!(!record_path(dir.path(), 2).exists());
        let picks_before = std::fs::read(picks_path(dir.path(), 2)).unwrap();

        // without --resume the directory is refused
        let mut fresh = FakeModel::new(50, dir.path());
        assert!(run_evolve(&mut fresh, &cfg, dir.path(), "fp", false).is_err());
        // with other settings too
        let other = EvolveConfig {
            per_round: 6,
            ..cfg.clone()
        };
        assert!(run_evolve(&mut fresh, &other, dir.path(), "fp", true).is_err());
        assert!(run_evolve(&mut fresh, &cfg, dir.path(), "other-pool", true).is_err());

        let mut resumed = FakeModel::new(50, dir.path());
        let r = run_evolve(&mut resumed, &cfg, dir.path(), "fp", true).unwrap();
        assert_eq!(r.labeled, uninterrupted.labeled);
        assert_eq!(r.skipped_rounds, vec![0, 1]);
        assert_eq!(r.trained_rounds, vec![2, 3, 4]);
        // completed rounds not retrained; round 2's picks were read back, not recomputed (no embedding for it)
        assert_eq!(
            resumed.trained.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(r.rounds[2].picks_resumed && !r.rounds[3].picks_resumed);
        assert_eq!(resumed.embeds, 2);
        assert_eq!(
            std::fs::read(picks_path(dir.path(), 2)).unwrap(),
            picks_before
        );
        for t in 0..=4 {
            let a: RoundPicks = read_json(&picks_path(dir.path(), t)).unwrap();
            let b: RoundPicks = read_json(&picks_path(full_dir.path(), t)).unwrap();
            assert_eq!(a.picks, b.picks, "round {t}");
        }
        // a finished run resumed again does nothing
        let mut again = FakeModel::new(50, dir.path());
        let r = run_evolve(&mut again, &cfg, dir.path(), "fp", true).unwrap();
        assert!(again.trained.is_empty() && r.trained_rounds.is_empty());
        assert_eq!(r.labeled, uninterrupted.labeled);
    }

    #[test]
    fn warm_start_keeps_the_previous_model_and_resume_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cold = FakeModel::new(40, dir.path());
        run_evolve(&mut cold, &config(3, 2, 3), dir.path(), "fp", false).unwrap();
        assert_eq!(cold.resets, 4);
        assert_eq!(cold.state, 3 + 3 * 2);

        let warm_cfg = EvolveConfig {
            warm_start: true,
            ..config(3, 2, 3)
        };
        let wdir = tempfile::tempdir().unwrap();
        let mut warm = FakeModel::new(40, wdir.path());
        let r = run_evolve(&mut warm, &warm_cfg, wdir.path(), "fp", false).unwrap();
        assert_eq!(warm.resets, 1);
        assert_eq!(warm.state, 3 + 5 + 7 + 9);
        assert!(!r.rounds[0].warm_started && r.rounds[1].warm_started);

        // a warm run that crashes in round 2 resumes by loading round 1's model first
        let cdir = tempfile::tempdir().unwrap();
        let mut crashing = FakeModel::new(40, cdir.path());
        crashing.fail_at = Some(2);
        assert!(run_evolve(&mut crashing, &warm_cfg, cdir.path(), "fp", false).is_err());
        let mut resumed = FakeModel::new(40, cdir.path());
        let r2 = run_evolve(&mut resumed, &warm_cfg, cdir.path(), "fp", true).unwrap();
        assert_eq!(resumed.loads, vec![1]);
        assert_eq!(resumed.state, warm.state);
        assert_eq!(r2.labeled, r.labeled);
    }

    #[test]
    fn kcenter_resume_loads_the_previous_model_before_embedding() {
        // a crash in round 1's training, then round 1's picks lost: the resumed run recomputes them with M_0,
        // which it must load from disk (the fresh model holds the base weights).
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(4, 3, 3);
        let mut crashing = FakeModel::new(30, dir.path());
        crashing.fail_at = Some(1);
        assert!(run_evolve(&mut crashing, &cfg, dir.path(), "fp", false).is_err());
        // remove round 1's picks: the resumed run must recompute them with M_0, loaded from disk
        std::fs::remove_file(picks_path(dir.path(), 1)).unwrap();
        let mut resumed = FakeModel::new(30, dir.path());
        run_evolve(&mut resumed, &cfg, dir.path(), "fp", true).unwrap();
        assert_eq!(resumed.loads, vec![0]);
        let full_dir = tempfile::tempdir().unwrap();
        let mut full = FakeModel::new(30, full_dir.path());
        let a = run_evolve(&mut full, &cfg, full_dir.path(), "fp", false).unwrap();
        let b: RoundPicks = read_json(&picks_path(dir.path(), 3)).unwrap();
        assert_eq!(b.labeled, a.labeled);
    }

    #[test]
    fn budget_larger_than_the_pool_stops_when_it_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = FakeModel::new(10, dir.path());
        let r = run_evolve(&mut m, &config(4, 4, 5), dir.path(), "fp", false).unwrap();
        assert_eq!(r.trained_rounds, vec![0, 1, 2]);
        assert_eq!(r.rounds[2].new_items, 2);
        assert!(r.pool_exhausted);
        let mut all = r.labeled.clone();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        let state: EvolveState = read_json(&dir.path().join("state.json")).unwrap();
        assert!(state.pool_exhausted && state.finished);

        // init alone exceeds the pool
        let dir = tempfile::tempdir().unwrap();
        let mut m = FakeModel::new(3, dir.path());
        let r = run_evolve(&mut m, &config(5, 2, 2), dir.path(), "fp", false).unwrap();
        assert_eq!(r.trained_rounds, vec![0]);
        assert_eq!(r.labeled.len(), 3);
        assert!(r.pool_exhausted);
    }

    #[test]
    fn random_strategy_never_embeds_and_bad_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = FakeModel::new(30, dir.path());
        let cfg = EvolveConfig {
            strategy: EvolveStrategy::Random,
            ..config(3, 3, 2)
        };
        let r = run_evolve(&mut m, &cfg, dir.path(), "fp", false).unwrap();
        assert_eq!(m.embeds, 0);
        assert_eq!(r.labeled.len(), 9);
        assert_eq!(
            r.labeled[3..6],
            random_select(30, 3, 8, &r.labeled[..3]).unwrap()[..]
        );

        let dir = tempfile::tempdir().unwrap();
        let mut m = FakeModel::new(30, dir.path());
        assert!(matches!(
            run_evolve(&mut m, &config(0, 3, 2), dir.path(), "fp", false),
            Err(SelectError::InvalidParameter { .. })
        ));
        let mut empty = FakeModel::new(0, dir.path());
        assert!(matches!(
            run_evolve(&mut empty, &config(1, 1, 1), dir.path(), "fp", false),
            Err(SelectError::Empty { .. })
        ));
    }

    #[test]
    fn an_inconsistent_picks_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(3, 2, 2);
        let mut crashing = FakeModel::new(20, dir.path());
        crashing.fail_at = Some(1);
        assert!(run_evolve(&mut crashing, &cfg, dir.path(), "fp", false).is_err());
        let p = picks_path(dir.path(), 1);
        let mut picks: RoundPicks = read_json(&p).unwrap();
        picks.labeled.pop();
        write_json(&p, &picks).unwrap();
        let mut resumed = FakeModel::new(20, dir.path());
        let err = run_evolve(&mut resumed, &cfg, dir.path(), "fp", true).unwrap_err();
        assert!(matches!(err, SelectError::InvalidJson { .. }), "{err}");
        assert!(resumed.trained.is_empty());
    }
}
