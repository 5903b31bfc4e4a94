//! [`CallCache`]: successful chat completions on disk, keyed by what determines them, so that a
//! re-run (after a crash, a `kill -9`, or a code change elsewhere) replays every answered call
//! and sends only the missing ones.
//!
//! The key is the SHA-256 of a canonical JSON of the endpoint's model name, the messages and the
//! sampling settings (not the URL: the same model moved to another server keeps its cache). An
//! entry is one small JSON file, `DIR/<first two hex digits>/<key>.json`, written atomically
//! (temporary sibling, `fsync`, rename) so a crash never leaves half an entry. Failures are never
//! written. An unreadable entry is treated as missing (and rewritten by the next success).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::client::Completion;
use crate::error::{ClientError, Result};
use crate::sampling::Sampling;
use crate::wire::ChatMessage;

/// Version of the key's canonical form; bump it when the form changes so old entries are not
/// read with a new meaning.
const KEY_VERSION: u32 = 1;

/// A directory of cached completions (cheap to clone; safe to share between threads and
/// processes: entries are written atomically and never modified in place).
#[derive(Debug, Clone)]
pub struct CallCache {
    dir: PathBuf,
}

/// What a cache entry stores.
#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    text: String,
    finish_reason: String,
}

impl CallCache {
    /// Opens (creating if needed) a cache directory.
    ///
    /// # Errors
    /// [`ClientError::Io`] when the directory cannot be created or is a file.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| ClientError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of a call: hex SHA-256 of the canonical JSON
    /// `{"v":1,"model":..,"messages":[{"role":..,"content":..}..],"sampling":{"temperature":..,
    /// "top_p":..,"max_tokens":..,"stop":[..],"seed":..}}` (fixed field order, no whitespace).
    pub fn key(model: &str, messages: &[ChatMessage], sampling: &Sampling) -> String {
        #[derive(Serialize)]
        struct Canonical<'a> {
            v: u32,
            model: &'a str,
            messages: &'a [ChatMessage],
            sampling: &'a Sampling,
        }
        let json = serde_json::to_vec(&Canonical {
            v: KEY_VERSION,
            model,
            messages,
            sampling,
        })
        .expect("plain strings and numbers always serialise");
        Sha256::digest(&json)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Where the entry of `key` lives.
    pub fn path_of(&self, key: &str) -> PathBuf {
        let shard = key.get(..2).unwrap_or("__");
        self.dir.join(shard).join(format!("{key}.json"))
    }

    /// The cached completion of `key` (with `cached: true`), or `None` when there is none or the
    /// entry cannot be read (logged at `warn`).
    pub fn get(&self, key: &str) -> Option<Completion> {
        let path = self.path_of(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(
                    "call cache: cannot read {}: {e}; calling again",
                    path.display()
                );
                return None;
            }
        };
        match serde_json::from_slice::<Entry>(&bytes) {
            Ok(entry) if entry.key == key => Some(Completion {
                text: entry.text,
                finish_reason: entry.finish_reason,
                cached: true,
            }),
            Ok(_) => {
                tracing::warn!(
                    "call cache: {} holds another key; calling again",
                    path.display()
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    "call cache: {} is not a cache entry ({e}); calling again",
                    path.display()
                );
                None
            }
        }
    }

    /// Stores a successful completion under `key`, atomically.
    ///
    /// # Errors
    /// [`ClientError::CacheWrite`] when the entry cannot be written.
    pub fn put(&self, key: &str, completion: &Completion) -> Result<()> {
        let path = self.path_of(key);
        let entry = Entry {
            key: key.to_string(),
            text: completion.text.clone(),
            finish_reason: completion.finish_reason.clone(),
        };
        atomic_fs::write_json(&path, &entry)
            .map_err(|source| ClientError::CacheWrite { path, source })
    }

    /// Number of entries on disk (walks the directory; for reports and tests).
    pub fn len(&self) -> usize {
        let Ok(shards) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        shards
            .flatten()
            .filter_map(|s| std::fs::read_dir(s.path()).ok())
            .flat_map(|files| files.flatten())
            .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
            .count()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(text: &str) -> Completion {
        Completion {
            text: text.into(),
            finish_reason: "stop".into(),
            cached: false,
        }
    }

    #[test]
    fn key_depends_on_every_part_and_nothing_else() {
        let m = [ChatMessage::user("hi")];
        let s = Sampling::default();
        let k = CallCache::key("m", &m, &s);
        assert_eq!(k.len(), 64);
        assert_eq!(k, CallCache::key("m", &m, &s.clone()));
        assert_ne!(k, CallCache::key("m2", &m, &s));
        assert_ne!(k, CallCache::key("m", &[ChatMessage::system("hi")], &s));
        assert_ne!(k, CallCache::key("m", &[ChatMessage::user("hi ")], &s));
        for other in [
            Sampling {
                temperature: 0.7,
                ..s.clone()
            },
            Sampling {
                top_p: 0.9,
                ..s.clone()
            },
            Sampling {
                max_tokens: 7,
                ..s.clone()
            },
            Sampling {
                stop: vec!["\n".into()],
                ..s.clone()
            },
            Sampling {
                seed: Some(0),
                ..s.clone()
            },
        ] {
            assert_ne!(k, CallCache::key("m", &m, &other), "{other:?}");
        }
    }

    #[test]
    fn put_then_get_replays_and_bad_entries_read_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CallCache::open(&dir.path().join("calls")).unwrap();
        let key = CallCache::key("m", &[ChatMessage::user("q")], &Sampling::default());
        assert!(cache.get(&key).is_none());
        cache.put(&key, &completion("a")).unwrap();
        let got = cache.get(&key).unwrap();
        assert_eq!((got.text.as_str(), got.cached), ("a", true));
        assert_eq!(cache.len(), 1);
        // an entry under another key's name is a miss
        let other = CallCache::key("m", &[ChatMessage::user("r")], &Sampling::default());
        std::fs::create_dir_all(cache.path_of(&other).parent().unwrap()).unwrap();
        std::fs::copy(cache.path_of(&key), cache.path_of(&other)).unwrap();
        assert!(cache.get(&other).is_none());
        // a truncated entry (e.g. edited by hand) is a miss, not an error
        std::fs::write(cache.path_of(&key), b"{\"key\":").unwrap();
        assert!(cache.get(&key).is_none());
    }

    #[test]
    fn open_on_a_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = CallCache::open(&file).unwrap_err();
        assert!(e.to_string().contains("f"), "{e}");
    }
}
