//! [`LoraBank`]: a directory of PEFT adapters (one per sub-directory), indexed from their configs and
//! file sizes, loaded lazily and checked against a base model.
//!
//! An optional `card.json` next to an adapter says what trained it (dataset, task, licence); its JSON
//! is kept verbatim in [`BankEntry::card`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::adapter::{CONFIG_FILE, LoraAdapter, ValidationReport, WEIGHTS_FILE};
use crate::config::{AdapterConfig, TargetModules};
use crate::error::{LoraError, Result};
use crate::spec::BaseModelSpec;

/// File name of the optional adapter card.
pub const CARD_FILE: &str = "card.json";

/// One adapter of a bank, as indexed (without loading its weights).
#[derive(Debug, Clone, Serialize)]
pub struct BankEntry {
    /// The sub-directory name.
    pub name: String,
    /// The adapter directory.
    pub dir: PathBuf,
    /// `base_model_name_or_path` from the config.
    pub base_model: Option<String>,
    /// The config's default rank `r`.
    pub rank: usize,
    /// `target_modules` as written (list entries, or the regex string).
    pub targets: Vec<String>,
    /// Size of `adapter_model.safetensors` in bytes.
    pub size_bytes: u64,
    /// Contents of `card.json`, if present.
    pub card: Option<serde_json::Value>,
    /// The full config.
    #[serde(skip)]
    pub config: AdapterConfig,
}

/// A directory of adapters with lazy loading.
#[derive(Debug)]
pub struct LoraBank {
    root: PathBuf,
    entries: Vec<BankEntry>,
    cache: Vec<OnceLock<Arc<LoraAdapter>>>,
    skipped: Vec<(PathBuf, String)>,
}

/// The outcome of checking one bank entry against a base model.
#[derive(Debug)]
pub struct Compatibility {
    /// Entry name.
    pub name: String,
    /// The validation report, or why the adapter does not fit.
    pub result: Result<ValidationReport>,
}

impl LoraBank {
    /// Indexes every sub-directory of `root` holding an `adapter_config.json` (sorted by name).
    /// Sub-directories whose config does not parse are skipped and listed in [`skipped`](Self::skipped).
    pub fn scan(root: &Path) -> Result<Self> {
        let rd = std::fs::read_dir(root).map_err(|e| LoraError::io(root, e))?;
        let mut dirs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(CONFIG_FILE).is_file())
            .collect();
        dirs.sort();
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for dir in dirs {
            match index_entry(&dir) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "skipping adapter");
                    skipped.push((dir, e.to_string()));
                }
            }
        }
        let cache = entries.iter().map(|_| OnceLock::new()).collect();
        Ok(LoraBank {
            root: root.to_path_buf(),
            entries,
            cache,
            skipped,
        })
    }

    /// The bank directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Indexed entries, sorted by name.
    pub fn entries(&self) -> &[BankEntry] {
        &self.entries
    }

    /// Sub-directories that looked like adapters but could not be indexed, with the reason.
    pub fn skipped(&self) -> &[(PathBuf, String)] {
        &self.skipped
    }

    /// Entry names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name.clone()).collect()
    }

    fn index_of(&self, name: &str) -> Result<usize> {
        self.entries
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| LoraError::UnknownAdapter {
                name: name.to_string(),
                root: self.root.clone(),
                known: self.names(),
            })
    }

    /// Loads (once) and returns the adapter `name`.
    pub fn load(&self, name: &str) -> Result<Arc<LoraAdapter>> {
        let i = self.index_of(name)?;
        if let Some(a) = self.cache[i].get() {
            return Ok(a.clone());
        }
        let a = Arc::new(LoraAdapter::load(&self.entries[i].dir)?);
        let _ = self.cache[i].set(a);
        Ok(self.cache[i].get().expect("just set").clone())
    }

    /// Whether `name` has been loaded already.
    pub fn is_loaded(&self, name: &str) -> bool {
        self.index_of(name)
            .is_ok_and(|i| self.cache[i].get().is_some())
    }

    /// Loads every adapter (in parallel) and returns them in entry order.
    pub fn load_all(&self) -> Result<Vec<Arc<LoraAdapter>>> {
        use rayon::prelude::*;
        self.entries
            .par_iter()
            .map(|e| self.load(&e.name))
            .collect()
    }

    /// Validates every adapter against `base` (loading them).
    pub fn check_compatibility(&self, base: &BaseModelSpec) -> Vec<Compatibility> {
        self.entries
            .iter()
            .map(|e| Compatibility {
                name: e.name.clone(),
                result: self.load(&e.name).and_then(|a| a.validate(base)),
            })
            .collect()
    }
}

fn index_entry(dir: &Path) -> Result<BankEntry> {
    let config = AdapterConfig::from_file(&dir.join(CONFIG_FILE))?;
    let weights = dir.join(WEIGHTS_FILE);
    let size_bytes = std::fs::metadata(&weights)
        .map_err(|_| LoraError::MissingFile {
            path: weights.clone(),
        })?
        .len();
    let card_path = dir.join(CARD_FILE);
    let card = if card_path.is_file() {
        let text = std::fs::read_to_string(&card_path).map_err(|e| LoraError::io(&card_path, e))?;
        Some(
            serde_json::from_str(&text).map_err(|e| LoraError::InvalidConfig {
                path: card_path.clone(),
                message: e.to_string(),
            })?,
        )
    } else {
        None
    };
    let targets = match &config.target_modules {
        Some(TargetModules::List(v)) => v.clone(),
        Some(TargetModules::Regex(s)) => vec![s.clone()],
        None => Vec::new(),
    };
    Ok(BankEntry {
        name: dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dir: dir.to_path_buf(),
        base_model: config.base_model_name_or_path.clone(),
        rank: config.r,
        targets,
        size_bytes,
        card,
        config,
    })
}
