//! Settings of a TAPIR curriculum, with every default written once (here, as serde defaults).
//!
//! Defaults and where they come from (ALGORITHMS.md section 3(c); none of them is the paper's
//! verified value, which was not published):
//! - 3 rounds, hard share `α = (0.3, 0.5, 0.7)` (the recommended linear ramp), round sizes
//!   `N = (32, 48, 64)` (growing, as the paper describes; small so a CPU run finishes);
//! - MFD threshold δ = 1 with `≥` (Lion's code), 3 asks per presentation order;
//! - 8 new instructions per round, ROUGE-L dedup above 0.7 (Lion);
//! - the DistilQwen2 task mix (easydistill);
//! - every TAPIR component on; the ablation switches turn them off one at a time.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TapirError};
use crate::expand::ExpansionConfig;
use crate::mfd::MfdConfig;
use crate::taxonomy::TargetMix;

/// Switches that turn TAPIR's components off, one at a time (ALGORITHMS.md section 3(e)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ablation {
    /// Judge the student against the teacher and seed the expansion with the hard items (off:
    /// no judge calls on the pool, seeds and training items drawn at random, α ignored).
    pub mfd_filter: bool,
    /// Draw expansion categories from the target mix and resample training sets to it (off:
    /// the natural task mix of the pool).
    pub rebalance: bool,
    /// Refine training responses with the task-specific prompts (off: plain teacher answers).
    pub refine: bool,
    /// One round with all the data at once (`N = Σ N_r`, the size-weighted mean α, all the
    /// expansion budget) instead of the multi-round curriculum.
    pub single_round: bool,
}

impl Default for Ablation {
    fn default() -> Self {
        Self {
            mfd_filter: true,
            rebalance: true,
            refine: true,
            single_round: false,
        }
    }
}

/// A TAPIR curriculum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CurriculumConfig {
    /// Seed of every random draw (expansion seeds, training-set samples).
    pub seed: u64,
    /// Rounds `R`.
    pub rounds: usize,
    /// Hard share `α_r` of each round's training set, one per round.
    pub alpha: Vec<f64>,
    /// Training-set size `N_r` of each round, one per round.
    pub sizes: Vec<usize>,
    /// Difficulty scoring.
    pub mfd: MfdConfig,
    /// Instruction expansion.
    pub expansion: ExpansionConfig,
    /// Most times one item may appear in a part (hard or easy) of a round's training set
    /// (0 = no limit). When a part has fewer distinct items than `α_r N_r` (or `(1-α_r) N_r`)
    /// needs, sampling repeats them; past this many copies the rest of the places go to the
    /// other part (reported), so a single hard item is not learnt nine times over. Default 3.
    pub max_repeats: usize,
    /// Seed items the base student trains on before round 1 (0 = no warm-up, the default).
    /// ALGORITHMS.md 3(f): a raw base model cannot follow instructions well enough for the
    /// MFD to discriminate, so round 1 scores a student first tuned on a small random slice of
    /// the seed set (the teacher's plain answers). An instruct student does not need it. The
    /// held-out baseline (round 0) stays the untouched base student.
    pub warmup: usize,
    /// Target task mix by category name (default: easydistill's DistilQwen2 mix); categories
    /// not named get 0.
    pub ratios: Option<BTreeMap<String, f64>>,
    /// Ablation switches.
    pub ablation: Ablation,
}

impl Default for CurriculumConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            rounds: 3,
            alpha: vec![0.3, 0.5, 0.7],
            sizes: vec![32, 48, 64],
            mfd: MfdConfig::default(),
            expansion: ExpansionConfig::default(),
            max_repeats: 3,
            warmup: 0,
            ratios: None,
            ablation: Ablation::default(),
        }
    }
}

/// What one round does, after the ablation switches are applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSpec {
    /// 1-based round number.
    pub round: usize,
    /// Hard share of the training set.
    pub alpha: f64,
    /// Training-set size.
    pub size: usize,
    /// New instructions wanted.
    pub expand: usize,
}

impl CurriculumConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// [`TapirError::Config`] naming the first bad key, with what was expected.
    pub fn validate(&self) -> Result<()> {
        if self.rounds == 0 {
            return Err(TapirError::config(
                "curriculum.rounds",
                "expected at least 1 round, found 0",
            ));
        }
        if self.alpha.len() != self.rounds {
            return Err(TapirError::config(
                "curriculum.alpha",
                format!(
                    "expected one hard share per round ({} values), found {}",
                    self.rounds,
                    self.alpha.len()
                ),
            ));
        }
        if let Some(a) = self.alpha.iter().find(|a| !(0.0..=1.0).contains(*a)) {
            return Err(TapirError::config(
                "curriculum.alpha",
                format!("expected shares in [0, 1], found {a}"),
            ));
        }
        if self.sizes.len() != self.rounds {
            return Err(TapirError::config(
                "curriculum.sizes",
                format!(
                    "expected one training-set size per round ({} values), found {}",
                    self.rounds,
                    self.sizes.len()
                ),
            ));
        }
        if self.sizes.contains(&0) {
            return Err(TapirError::config(
                "curriculum.sizes",
                "expected sizes >= 1, found 0",
            ));
        }
        self.mfd.validate()?;
        self.expansion.validate()?;
        self.mix()?;
        if self.alpha.windows(2).any(|w| w[1] < w[0]) {
            tracing::warn!(
                "curriculum.alpha {:?} is not increasing: TAPIR raises the hard share round by round",
                self.alpha
            );
        }
        Ok(())
    }

    /// The target task mix.
    ///
    /// # Errors
    /// An unknown category or bad ratio in `ratios`.
    pub fn mix(&self) -> Result<TargetMix> {
        match &self.ratios {
            Some(r) => TargetMix::from_names(r),
            None => Ok(TargetMix::default()),
        }
    }

    /// The rounds to run, with the single-round ablation applied.
    pub fn schedule(&self) -> Vec<RoundSpec> {
        if self.ablation.single_round {
            let size: usize = self.sizes.iter().sum();
            let alpha = self
                .alpha
                .iter()
                .zip(&self.sizes)
                .map(|(a, n)| a * *n as f64)
                .sum::<f64>()
                / size.max(1) as f64;
            return vec![RoundSpec {
                round: 1,
                alpha,
                size,
                expand: self.expansion.per_round * self.rounds,
            }];
        }
        (0..self.rounds)
            .map(|r| RoundSpec {
                round: r + 1,
                alpha: self.alpha[r],
                size: self.sizes[r],
                expand: self.expansion.per_round,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_toml_like_json() {
        let c = CurriculumConfig::default();
        c.validate().unwrap();
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<CurriculumConfig>(&j).unwrap(), c);
        // an empty object is the defaults
        assert_eq!(serde_json::from_str::<CurriculumConfig>("{}").unwrap(), c);
        assert!(serde_json::from_str::<CurriculumConfig>("{\"rounds\": 2, \"typo\": 1}").is_err());
    }

    #[test]
    fn bad_settings_name_their_key() {
        let bad = |c: CurriculumConfig| c.validate().unwrap_err().to_string();
        let e = bad(CurriculumConfig {
            rounds: 2,
            ..CurriculumConfig::default()
        });
        assert!(
            e.contains("curriculum.alpha") && e.contains("2 values"),
            "{e}"
        );
        let e = bad(CurriculumConfig {
            alpha: vec![0.3, 1.5, 0.7],
            ..CurriculumConfig::default()
        });
        assert!(e.contains("1.5"), "{e}");
        let e = bad(CurriculumConfig {
            sizes: vec![1, 0, 2],
            ..CurriculumConfig::default()
        });
        assert!(e.contains("curriculum.sizes"), "{e}");
        let mut r = BTreeMap::new();
        r.insert("Cooking".to_string(), 1.0);
        let e = bad(CurriculumConfig {
            ratios: Some(r),
            ..CurriculumConfig::default()
        });
        assert!(e.contains("Cooking"), "{e}");
    }

    #[test]
    fn single_round_puts_all_data_in_one_round() {
        let c = CurriculumConfig {
            ablation: Ablation {
                single_round: true,
                ..Ablation::default()
            },
            ..CurriculumConfig::default()
        };
        let s = c.schedule();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].size, 144);
        assert_eq!(s[0].expand, 24);
        let want = (0.3 * 32.0 + 0.5 * 48.0 + 0.7 * 64.0) / 144.0;
        assert!((s[0].alpha - want).abs() < 1e-12);
        assert_eq!(CurriculumConfig::default().schedule()[2].alpha, 0.7);
    }
}
