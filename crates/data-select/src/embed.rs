//! Embedders and the on-disk embedding cache.
//!
//! [`Embedder`] is the seam to the models (lm-core implements it: the LM's mean-pooled last hidden state for
//! DiverseEvol, MiniLM sentence embeddings for Rocket). [`EmbeddingCache`] stores vectors keyed by
//! (model id, content hash) so an interrupted run resumes without recomputing: each computed batch is written as one
//! shard file, atomically (temporary file + rename), before the next batch starts.
//!
//! Layout: `<root>/<model-id-sanitised>-<12 hex of sha256(model id)>/shard-<16 hex>.bin`; a shard is
//! `b"OEEMB001"`, `dim: u32`, `count: u32`, then per entry `key_len: u16`, the key bytes and `dim` little-endian `f32`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::distance::check_finite;
use crate::error::{Result, SelectError};
use crate::pool::{Instruction, hex};
use atomic_fs::write_atomic;

/// Turns texts into fixed-width vectors.
pub trait Embedder: Send + Sync {
    /// Embeds a batch.
    ///
    /// # Shapes
    /// `texts: [n]` `-> [n, self.dim()]`
    fn embed(&self, texts: &[String]) -> Result<Array2<f32>>;

    /// A string naming the model *and* everything that changes its vectors (weights hash, pooling, max length);
    /// cache entries are keyed by it.
    fn model_id(&self) -> String;

    /// Output width.
    fn dim(&self) -> usize;
}

const MAGIC: &[u8; 8] = b"OEEMB001";

/// Cache hits and misses of one [`EmbeddingCache::embed_all`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Items served from the cache.
    pub hits: usize,
    /// Distinct items computed by the embedder.
    pub computed: usize,
    /// Embedder calls made.
    pub batches: usize,
}

/// On-disk embedding cache for one model.
#[derive(Debug)]
pub struct EmbeddingCache {
    dir: PathBuf,
    model_id: String,
    dim: usize,
    map: HashMap<String, Vec<f32>>,
}

impl EmbeddingCache {
    /// Opens (creating if needed) the cache of `model_id` under `root` and loads every shard.
    ///
    /// # Errors
    /// A shard that is damaged or has another width.
    pub fn open(root: &Path, model_id: &str, dim: usize) -> Result<Self> {
        let safe: String = model_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let tag = hex(&Sha256::digest(model_id.as_bytes()))[..12].to_string();
        let dir = root.join(format!("{safe}-{tag}"));
        std::fs::create_dir_all(&dir).map_err(|e| SelectError::io(&dir, e))?;
        let mut map = HashMap::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| SelectError::io(&dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("shard-") && n.ends_with(".bin"))
            })
            .collect();
        entries.sort();
        for path in entries {
            let bytes = std::fs::read(&path).map_err(|e| SelectError::io(&path, e))?;
            read_shard(&bytes, dim)
                .map_err(|reason| SelectError::CacheCorrupt {
                    path: path.clone(),
                    reason,
                })?
                .into_iter()
                .for_each(|(k, v)| {
                    map.insert(k, v);
                });
        }
        Ok(EmbeddingCache {
            dir,
            model_id: model_id.to_string(),
            dim,
            map,
        })
    }

    /// The directory holding this model's shards.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The cached vector for a content hash.
    pub fn get(&self, key: &str) -> Option<&[f32]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Stores a batch as one new shard (atomically) and in memory.
    ///
    /// # Shapes
    /// `vectors: [keys.len(), dim]`
    pub fn insert_batch(&mut self, keys: &[String], vectors: &Array2<f32>) -> Result<()> {
        if vectors.dim() != (keys.len(), self.dim) {
            return Err(SelectError::DimensionMismatch {
                what: format!("embedding batch of {} (rows x width)", self.model_id),
                expected: keys.len() * self.dim,
                found: vectors.len(),
            });
        }
        if keys.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(16 + keys.len() * (70 + 4 * self.dim));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(self.dim as u32).to_le_bytes());
        bytes.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        let mut h = Sha256::new();
        for (k, row) in keys.iter().zip(vectors.outer_iter()) {
            let kb = k.as_bytes();
            bytes.extend_from_slice(&(kb.len() as u16).to_le_bytes());
            bytes.extend_from_slice(kb);
            h.update(kb);
            h.update([0u8]);
            for v in row.iter() {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        let name = format!("shard-{}.bin", &hex(&h.finalize())[..16]);
        write_atomic(&self.dir.join(name), &bytes)?;
        for (k, row) in keys.iter().zip(vectors.outer_iter()) {
            self.map.insert(k.clone(), row.to_vec());
        }
        Ok(())
    }

    /// Embeds `items` (`(content hash, text)` pairs), computing only what the cache lacks, `batch_size` texts per
    /// embedder call, writing each batch to disk before the next; returns the vectors in `items` order.
    ///
    /// # Shapes
    /// `items: [n]` `-> [n, dim]`
    ///
    /// # Errors
    /// Embedder failures, wrong output shape, NaN/Inf vectors, a width different from the cache's.
    pub fn embed_all(
        &mut self,
        embedder: &dyn Embedder,
        items: &[(String, String)],
        batch_size: usize,
    ) -> Result<(Array2<f32>, CacheStats)> {
        if embedder.dim() != self.dim {
            return Err(SelectError::DimensionMismatch {
                what: format!("embedder {} width vs cache", embedder.model_id()),
                expected: self.dim,
                found: embedder.dim(),
            });
        }
        if embedder.model_id() != self.model_id {
            return Err(SelectError::param(
                "embedder",
                format!(
                    "cache was opened for model '{}', embedder is '{}'",
                    self.model_id,
                    embedder.model_id()
                ),
            ));
        }
        let batch_size = batch_size.max(1);
        let mut stats = CacheStats::default();
        let mut todo: Vec<usize> = Vec::new();
        let mut queued = std::collections::HashSet::new();
        for (i, (key, _)) in items.iter().enumerate() {
            if self.map.contains_key(key) {
                stats.hits += 1;
            } else if queued.insert(key.as_str()) {
                todo.push(i);
            }
        }
        for chunk in todo.chunks(batch_size) {
            let texts: Vec<String> = chunk.iter().map(|&i| items[i].1.clone()).collect();
            let keys: Vec<String> = chunk.iter().map(|&i| items[i].0.clone()).collect();
            let out = embedder.embed(&texts)?;
            if out.dim() != (texts.len(), self.dim) {
                return Err(SelectError::DimensionMismatch {
                    what: format!(
                        "embedder {} output rows x width, batch of {}",
                        self.model_id,
                        texts.len()
                    ),
                    expected: texts.len() * self.dim,
                    found: out.len(),
                });
            }
            check_finite(
                out.view(),
                &format!(
                    "embeddings from {} (batch row; item {})",
                    self.model_id, chunk[0]
                ),
            )
            .map_err(|e| match e {
                SelectError::NonFinite {
                    row, col, value, ..
                } => SelectError::NonFinite {
                    what: format!(
                        "embedding of item {} (content hash {}) from {}",
                        chunk[row], keys[row], self.model_id
                    ),
                    row: chunk[row],
                    col,
                    value,
                },
                other => other,
            })?;
            self.insert_batch(&keys, &out)?;
            stats.computed += keys.len();
            stats.batches += 1;
            tracing::debug!(done = stats.computed, total = todo.len(), "embedded batch");
        }
        let mut m = Array2::zeros((items.len(), self.dim));
        for (mut row, (key, _)) in m.outer_iter_mut().zip(items) {
            let v = self.map.get(key).expect("every key is cached by now");
            row.assign(&ndarray::ArrayView1::from(v.as_slice()));
        }
        Ok((m, stats))
    }
}

fn read_shard(bytes: &[u8], dim: usize) -> std::result::Result<Vec<(String, Vec<f32>)>, String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("missing OEEMB001 magic".into());
    }
    let d = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let count = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes")) as usize;
    if d != dim {
        return Err(format!(
            "width {d}, expected {dim} (same model id with another width?)"
        ));
    }
    let mut pos = 16;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let need = |pos: usize, n: usize| {
            if pos + n > bytes.len() {
                Err(format!("entry {i} runs past the end of the file"))
            } else {
                Ok(())
            }
        };
        need(pos, 2)?;
        let kl = u16::from_le_bytes([bytes[pos], bytes[pos + 1]]) as usize;
        pos += 2;
        need(pos, kl + 4 * d)?;
        let key = std::str::from_utf8(&bytes[pos..pos + kl])
            .map_err(|_| format!("entry {i} key is not UTF-8"))?
            .to_string();
        pos += kl;
        let v: Vec<f32> = bytes[pos..pos + 4 * d]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        pos += 4 * d;
        out.push((key, v));
    }
    if pos != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - pos));
    }
    Ok(out)
}

/// Texts per [`Embedder::embed`] call when the caller has no reason to choose another.
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// Embeds instruction records with `embedder`, one row per record in record order.
///
/// Each record is embedded as its [`Instruction::retrieval_text`] with `prefix` in front. With a
/// `cache_dir`, vectors go through an [`EmbeddingCache`] keyed by the record's content hash and a
/// hash of the prefix (the prefix changes the vectors), so a second run embeds nothing it has
/// seen; without one, texts are embedded `batch_size` at a time and checked for shape and
/// finiteness.
///
/// # Shapes
/// `records: [n]` -> `[n, embedder.dim()]`
pub fn embed_records(
    embedder: &dyn Embedder,
    records: &[Instruction],
    prefix: &str,
    cache_dir: Option<&Path>,
    batch_size: usize,
) -> Result<Array2<f32>> {
    let items: Vec<(String, String)> = records
        .iter()
        .map(|r| (r.content_hash.clone(), r.retrieval_text(prefix)))
        .collect();
    match cache_dir {
        Some(dir) => {
            let mut cache = EmbeddingCache::open(dir, &embedder.model_id(), embedder.dim())?;
            let prefix_hash = hex(&Sha256::digest(prefix.as_bytes())[..4]);
            let keyed: Vec<(String, String)> = items
                .into_iter()
                .map(|(h, t)| (format!("{h}:{prefix_hash}"), t))
                .collect();
            Ok(cache.embed_all(embedder, &keyed, batch_size)?.0)
        }
        None => {
            let batch_size = batch_size.max(1);
            let mut out = Array2::zeros((records.len(), embedder.dim()));
            for (c, chunk) in items.chunks(batch_size).enumerate() {
                let texts: Vec<String> = chunk.iter().map(|x| x.1.clone()).collect();
                let m = embedder.embed(&texts)?;
                check_finite(
                    m.view(),
                    &format!("embeddings from {}", embedder.model_id()),
                )?;
                if m.dim() != (texts.len(), embedder.dim()) {
                    return Err(SelectError::DimensionMismatch {
                        what: format!("embedder {} output", embedder.model_id()),
                        expected: texts.len() * embedder.dim(),
                        found: m.len(),
                    });
                }
                let start = c * batch_size;
                out.slice_mut(ndarray::s![start..start + texts.len(), ..])
                    .assign(&m);
            }
            Ok(out)
        }
    }
}

/// Reads precomputed embeddings of `records` records from a `.npy` matrix (f32 `[records, d]`),
/// failing when the row count differs; `what` names the matrix in the error.
pub fn read_record_embeddings(path: &Path, records: usize, what: &str) -> Result<Array2<f32>> {
    let m = crate::npy::read_npy(path)?;
    if m.nrows() != records {
        return Err(SelectError::DimensionMismatch {
            what: format!("{what} embedding rows ({}) vs records", path.display()),
            expected: records,
            found: m.nrows(),
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Deterministic fake: vector = (len, first byte, call-independent), counts texts embedded, can fail after a
    /// number of calls.
    struct Counting {
        texts: AtomicUsize,
        calls: AtomicUsize,
        fail_after_calls: Option<usize>,
        poison: Option<&'static str>,
    }

    impl Counting {
        fn new(fail_after_calls: Option<usize>) -> Self {
            Counting {
                texts: AtomicUsize::new(0),
                calls: AtomicUsize::new(0),
                fail_after_calls,
                poison: None,
            }
        }
    }

    impl Embedder for Counting {
        fn embed(&self, texts: &[String]) -> Result<Array2<f32>> {
            let c = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.fail_after_calls.is_some_and(|n| c >= n) {
                return Err(SelectError::embedder(self.model_id(), "interrupted"));
            }
            self.texts.fetch_add(texts.len(), Ordering::SeqCst);
            Ok(Array2::from_shape_fn((texts.len(), 3), |(i, j)| {
                let t = &texts[i];
                if self.poison == Some(t.as_str()) {
                    return f32::NAN;
                }
                match j {
                    0 => t.len() as f32,
                    1 => t.bytes().next().unwrap_or(0) as f32,
                    _ => t.bytes().map(|b| b as f32).sum(),
                }
            }))
        }
        fn model_id(&self) -> String {
            "fake/counting v1".into()
        }
        fn dim(&self) -> usize {
            3
        }
    }

    fn items(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("h{i:03}"), format!("text number {i}")))
            .collect()
    }

    #[test]
    fn interrupted_run_resumes_without_recomputing() {
        let root = tempfile::tempdir().unwrap();
        let it = items(10);
        // first run dies after 2 batches of 3
        let e1 = Counting::new(Some(2));
        let mut c = EmbeddingCache::open(root.path(), &e1.model_id(), 3).unwrap();
        assert!(c.embed_all(&e1, &it, 3).is_err());
        assert_eq!(e1.texts.load(Ordering::SeqCst), 6);
        drop(c);
        // a new process: reopen from disk, only the 4 missing items are computed
        let e2 = Counting::new(None);
        let mut c = EmbeddingCache::open(root.path(), &e2.model_id(), 3).unwrap();
        assert_eq!(c.len(), 6);
        let (m, stats) = c.embed_all(&e2, &it, 3).unwrap();
        assert_eq!(e2.texts.load(Ordering::SeqCst), 4);
        assert_eq!((stats.hits, stats.computed, stats.batches), (6, 4, 2));
        // same vectors as a fresh, uncached computation
        let direct = Counting::new(None)
            .embed(&it.iter().map(|x| x.1.clone()).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(m, direct);
        // third run: everything cached
        let e3 = Counting::new(None);
        let (_, stats) = EmbeddingCache::open(root.path(), &e3.model_id(), 3)
            .unwrap()
            .embed_all(&e3, &it, 3)
            .unwrap();
        assert_eq!((stats.hits, stats.computed), (10, 0));
        assert_eq!(e3.texts.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn repeated_hashes_are_embedded_once() {
        let root = tempfile::tempdir().unwrap();
        let e = Counting::new(None);
        let mut it = items(3);
        it.push(it[0].clone());
        let mut c = EmbeddingCache::open(root.path(), &e.model_id(), 3).unwrap();
        let (m, stats) = c.embed_all(&e, &it, 8).unwrap();
        assert_eq!(stats.computed, 3);
        assert_eq!(m.row(0), m.row(3));
    }

    #[test]
    fn nan_embedding_is_a_clear_error_and_not_cached() {
        let root = tempfile::tempdir().unwrap();
        let mut e = Counting::new(None);
        e.poison = Some("text number 4");
        let mut c = EmbeddingCache::open(root.path(), &e.model_id(), 3).unwrap();
        let err = c.embed_all(&e, &items(6), 2).unwrap_err();
        match err {
            SelectError::NonFinite { row, what, .. } => {
                assert_eq!(row, 4);
                assert!(what.contains("h004"), "{what}");
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn width_mismatch_and_damage_are_errors() {
        let root = tempfile::tempdir().unwrap();
        let e = Counting::new(None);
        assert!(
            EmbeddingCache::open(root.path(), &e.model_id(), 5)
                .unwrap()
                .embed_all(&e, &items(1), 1)
                .is_err()
        );
        let mut c = EmbeddingCache::open(root.path(), &e.model_id(), 3).unwrap();
        c.embed_all(&e, &items(2), 2).unwrap();
        let shard = std::fs::read_dir(c.dir())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(&shard).unwrap();
        std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
        let err = EmbeddingCache::open(root.path(), &e.model_id(), 3).unwrap_err();
        assert!(matches!(err, SelectError::CacheCorrupt { .. }), "{err}");
        // a different width under the same model id is reported, not silently mixed
        std::fs::write(&shard, &bytes).unwrap();
        assert!(EmbeddingCache::open(root.path(), &e.model_id(), 4).is_err());
    }

    /// Embeds by character counts; counts texts so cache reuse is visible.
    struct CharCounts(AtomicUsize);

    impl Embedder for CharCounts {
        fn embed(&self, texts: &[String]) -> Result<Array2<f32>> {
            self.0.fetch_add(texts.len(), Ordering::SeqCst);
            Ok(Array2::from_shape_fn((texts.len(), 3), |(i, j)| {
                texts[i].bytes().filter(|b| (*b as usize) % 3 == j).count() as f32 + 0.5
            }))
        }
        fn model_id(&self) -> String {
            "fake/char-counts".into()
        }
        fn dim(&self) -> usize {
            3
        }
    }

    /// Retrieval over records embedded through the cache: a second run embeds nothing and
    /// selects the same rows; without a cache the vectors are the same.
    #[test]
    fn embed_records_uses_the_cache() {
        use crate::pool::{PoolOptions, read_pool};
        use crate::retrieve::{RetrieveOptions, retrieve};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pool: String = (0..12)
            .map(|i| {
                format!(
                    "{{\"instruction\": \"task {i} {}\", \"output\": \"o\"}}\n",
                    "x".repeat(i)
                )
            })
            .collect();
        std::fs::write(d.join("pool.jsonl"), pool).unwrap();
        std::fs::write(
            d.join("k.jsonl"),
            "{\"instruction\": \"task 3 xxx\", \"output\": \"o\"}\n",
        )
        .unwrap();
        let pool = read_pool(&d.join("pool.jsonl"), &PoolOptions::default()).unwrap();
        let kshot = read_pool(&d.join("k.jsonl"), &PoolOptions::default()).unwrap();
        let cache = d.join("cache");
        let run = |e: &CharCounts| {
            let pe = embed_records(e, &pool, "", Some(&cache), 5).unwrap();
            let ke = embed_records(e, &kshot, "", Some(&cache), 5).unwrap();
            let options = RetrieveOptions {
                budget: 4,
                similarity: Default::default(),
                dedup: None,
            };
            (
                pe.clone(),
                retrieve(pe.view(), ke.view(), &options).unwrap().selected,
            )
        };
        let e = CharCounts(AtomicUsize::new(0));
        let (vectors, first) = run(&e);
        // 12 pool texts; the K-shot record has the same content as pool item 3, so it is a cache hit
        assert_eq!(e.0.load(Ordering::SeqCst), 12);
        assert_eq!(first.len(), 3);
        assert_eq!(first[0], 3, "the K-shot's own text is nearest");
        // second run: everything comes from the cache, same selection
        let e2 = CharCounts(AtomicUsize::new(0));
        assert_eq!(run(&e2).1, first);
        assert_eq!(e2.0.load(Ordering::SeqCst), 0);
        // a prefix changes the key: nothing is reused
        let e3 = CharCounts(AtomicUsize::new(0));
        embed_records(&e3, &pool, "q: ", Some(&cache), 5).unwrap();
        assert_eq!(e3.0.load(Ordering::SeqCst), 12);
        // without a cache: the same vectors, batch by batch
        let e4 = CharCounts(AtomicUsize::new(0));
        assert_eq!(embed_records(&e4, &pool, "", None, 5).unwrap(), vectors);
    }
}
