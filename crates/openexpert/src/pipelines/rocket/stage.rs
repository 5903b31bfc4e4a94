//! Cached, resumable stages: each stage's output is a directory keyed by a fingerprint of
//! everything it depends on (input file hashes, the config fields it reads, the fingerprints of
//! the stages it consumes), committed atomically, with its `stage.json` written last.
//!
//! Layout under the run directory: `stages/<stage>-<fingerprint[..16]>/` (finished outputs) and
//! `stages/.work/<stage>-<fingerprint[..16]>/` (a stage's scratch space that survives a crash,
//! e.g. training checkpoints; deleted when the stage commits). A stage whose directory exists is
//! never recomputed; changing an option changes the fingerprints of exactly the stages that read
//! it (and of those downstream of them), so only they run again.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{Result, RocketError};

/// Version of the stage outputs; bump when a stage's files change meaning.
const STAGE_FORMAT: u32 = 1;

/// The name and fingerprint of one stage's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageKey {
    /// Stage name (`rank`, `data`, `train-moe`, `eval-lora`, ...).
    pub name: String,
    /// Hex SHA-256 of the stage's inputs (see [`StageKey::new`]).
    pub fingerprint: String,
}

impl StageKey {
    /// The key of stage `name` whose output depends on `inputs` (any serialisable value: config
    /// fields, file hashes, upstream keys).
    pub fn new(name: &str, inputs: &impl Serialize) -> Self {
        let json = serde_json::to_vec(&(STAGE_FORMAT, name, inputs))
            .expect("stage inputs serialise to JSON");
        Self {
            name: name.to_string(),
            fingerprint: hex(&Sha256::digest(&json)),
        }
    }

    /// `<name>-<first 16 hex digits>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.name, &self.fingerprint[..16])
    }
}

/// What `stage.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    /// The key.
    pub key: StageKey,
    /// Wall-clock seconds the stage took.
    pub seconds: f64,
}

/// The stage outputs of one run directory.
#[derive(Debug, Clone)]
pub struct StageStore {
    root: PathBuf,
}

impl StageStore {
    /// The store under `run_dir/stages`.
    pub fn new(run_dir: &Path) -> Self {
        Self {
            root: run_dir.join("stages"),
        }
    }

    /// Removes the half-built stage directories a killed run left (`.<stage>.partial-*`); they
    /// are never resumed from (training resumes from `.work/`).
    pub fn remove_partials(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && (name.contains(".partial-") || name.contains(".old-")) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// The finished output directory of `key`.
    pub fn dir(&self, key: &StageKey) -> PathBuf {
        self.root.join(key.dir_name())
    }

    /// Whether `key`'s output is complete on disk.
    pub fn is_done(&self, key: &StageKey) -> bool {
        let record = self.dir(key).join("stage.json");
        std::fs::read(&record)
            .ok()
            .and_then(|b| serde_json::from_slice::<StageRecord>(&b).ok())
            .is_some_and(|r| r.key == *key)
    }

    /// `key`'s scratch directory (created), kept across crashes until the stage commits.
    ///
    /// # Errors
    /// [`RocketError::Io`] when it cannot be created.
    pub fn work_dir(&self, key: &StageKey) -> Result<PathBuf> {
        let dir = self.root.join(".work").join(key.dir_name());
        std::fs::create_dir_all(&dir).map_err(|e| RocketError::io(&dir, e))?;
        Ok(dir)
    }

    /// Runs `produce` into a staging directory unless `key` is done, then commits it atomically
    /// (a crash leaves either no output or the whole output). Returns the output directory and
    /// whether the stage ran.
    ///
    /// # Errors
    /// The producer's error (nothing is committed), or [`RocketError::Io`] on the commit.
    pub fn run(
        &self,
        key: &StageKey,
        produce: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(PathBuf, bool)> {
        let dir = self.dir(key);
        if self.is_done(key) {
            return Ok((dir, false));
        }
        std::fs::create_dir_all(&self.root).map_err(|e| RocketError::io(&self.root, e))?;
        let start = std::time::Instant::now();
        let staged =
            atomic_fs::StagedDir::replacing(&dir).map_err(|e| RocketError::stage("store", e))?;
        produce(staged.path())?;
        let record = StageRecord {
            key: key.clone(),
            seconds: start.elapsed().as_secs_f64(),
        };
        atomic_fs::write_json(&staged.path().join("stage.json"), &record)
            .map_err(|e| RocketError::stage("store", e))?;
        staged
            .commit()
            .map_err(|e| RocketError::stage("store", e))?;
        let work = self.root.join(".work").join(key.dir_name());
        if work.exists() {
            let _ = std::fs::remove_dir_all(&work);
        }
        Ok((dir, true))
    }

    /// Reads JSON file `file` of `key`'s output.
    ///
    /// # Errors
    /// [`RocketError::Io`] / [`RocketError::Input`] when missing or malformed.
    pub fn read_json<T: DeserializeOwned>(&self, key: &StageKey, file: &str) -> Result<T> {
        let path = self.dir(key).join(file);
        let bytes = std::fs::read(&path).map_err(|e| RocketError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| RocketError::Input {
            path,
            detail: format!(
                "malformed stage output ({e}); delete the stage directory to recompute it"
            ),
        })
    }

    /// Seconds the finished stage took (0 when unknown).
    pub fn seconds(&self, key: &StageKey) -> f64 {
        self.read_json::<StageRecord>(key, "stage.json")
            .map_or(0.0, |r| r.seconds)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of a file's bytes.
///
/// # Errors
/// [`RocketError::Io`] when it cannot be read.
pub fn file_hash(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| RocketError::io(path, e))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_with_their_inputs_only() {
        let a = StageKey::new("rank", &("x", 1));
        assert_eq!(a, StageKey::new("rank", &("x", 1)));
        assert_ne!(a, StageKey::new("rank", &("x", 2)));
        assert_ne!(a, StageKey::new("data", &("x", 1)));
        assert_eq!(a.dir_name().len(), "rank-".len() + 16);
    }

    #[test]
    fn a_stage_runs_once_and_a_failed_one_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = StageStore::new(tmp.path());
        let key = StageKey::new("s", &1);
        let failed = store.run(&key, |dir| {
            std::fs::write(dir.join("half"), b"x").unwrap();
            Err(RocketError::Config("boom".into()))
        });
        assert!(failed.is_err());
        assert!(!store.is_done(&key));
        assert!(!store.dir(&key).exists());
        let (dir, ran) = store
            .run(&key, |dir| {
                atomic_fs::write_json(&dir.join("out.json"), &5).unwrap();
                Ok(())
            })
            .unwrap();
        assert!(ran);
        assert_eq!(store.read_json::<i32>(&key, "out.json").unwrap(), 5);
        let (dir2, ran2) = store.run(&key, |_| panic!("must not run")).unwrap();
        assert!(!ran2);
        assert_eq!(dir, dir2);
    }
}
