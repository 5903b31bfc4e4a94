//! The `select` subcommands (mounted by the `openexpert` binary as `openexpert select ...`).
//!
//! Index outputs are JSON arrays of row indices in pick order. Labelled/excluded index files may be a JSON array of
//! indices, an object with an `indices`/`labeled` array, or a boolean mask as long as the pool.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use ndarray::Array2;
use serde::Serialize;

use crate::baselines::{Allocation, KMeansSelectOptions, Within, kmeans_select, random_select};
use crate::dedup::DedupMode;
use crate::distance::Metric;
use crate::embed::{Embedder, EmbeddingCache};
use crate::error::{Result, SelectError};
use crate::fsutil::write_atomic;
use crate::kcenter::{KCenterOptions, Strategy, kcenter_greedy};
use crate::npy::read_npy;
use crate::pool::{Instruction, PoolOptions, read_jsonl};
use crate::retrieve::{DedupOptions, RetrieveOptions, Similarity, retrieve};
use crate::salvage::salvage_json_array;
use crate::vendi::vendi_score;

/// `select` subcommands.
#[derive(Debug, Subcommand)]
pub enum SelectCommand {
    /// k-center greedy (DiverseEvol): farthest-first picks from an embedding matrix.
    Kcenter {
        /// Embeddings, `.npy` float32 `[n, d]`.
        #[arg(long)]
        embeddings: PathBuf,
        /// Labelled rows (initial centers), JSON.
        #[arg(long)]
        labeled: Option<PathBuf>,
        /// Rows to pick.
        #[arg(long)]
        k: usize,
        /// Distance.
        #[arg(long, value_enum, default_value_t = Metric::Euclidean)]
        metric: Metric,
        /// Work strategy (same picks either way).
        #[arg(long, value_enum, default_value_t = Strategy::Lazy)]
        strategy: Strategy,
        /// Output: JSON array of picked indices in pick order.
        #[arg(long)]
        output: PathBuf,
        /// Optional JSON report (pick distances, truncation, work).
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// K-shot guided retrieval with near-duplicate removal (Rocket).
    Retrieve {
        /// Instruction pool: JSONL, or a (possibly truncated) JSON array.
        #[arg(long)]
        pool: PathBuf,
        /// K-shot examples, same formats.
        #[arg(long)]
        kshot: PathBuf,
        /// Total training-set size N (K-shot included); N - K pool items are selected.
        #[arg(long)]
        budget: usize,
        /// Cosine-similarity threshold for near-duplicates (Rocket: 0.9); omit to skip dedup.
        #[arg(long)]
        dedup: Option<f32>,
        /// Duplicate rule.
        #[arg(long, value_enum, default_value_t = DedupMode::Paper)]
        dedup_mode: DedupMode,
        /// Refill to the budget from further pool items after dedup.
        #[arg(long)]
        backfill: bool,
        /// Closeness criterion.
        #[arg(long, value_enum, default_value_t = Similarity::Centroid)]
        similarity: Similarity,
        /// Precomputed pool embeddings (`.npy`, one row per pool record) instead of an embedder.
        #[arg(long)]
        pool_embeddings: Option<PathBuf>,
        /// Precomputed K-shot embeddings (`.npy`).
        #[arg(long)]
        kshot_embeddings: Option<PathBuf>,
        /// Text put before each record when embedding (Rocket with bge-m3 uses
        /// `data_select::retrieve::ROCKET_RETRIEVAL_PREFIX`; MiniLM none).
        #[arg(long, default_value = "")]
        query_prefix: String,
        /// Embedding cache directory (with an embedder).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Texts per embedder call.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Skip malformed records instead of failing.
        #[arg(long)]
        lenient: bool,
        /// Output JSONL: the K-shot records, then the selected pool records (original JSON).
        #[arg(long)]
        output: PathBuf,
        /// Optional JSON array of the selected pool indices.
        #[arg(long)]
        indices_output: Option<PathBuf>,
        /// Optional JSON report.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Uniform random selection (seeded).
    Random {
        /// Pool size (or give --embeddings / --pool).
        #[arg(long)]
        n: Option<usize>,
        /// Take the pool size from this `.npy`.
        #[arg(long)]
        embeddings: Option<PathBuf>,
        /// Take the pool size from this pool file.
        #[arg(long)]
        pool: Option<PathBuf>,
        /// Rows to pick.
        #[arg(long)]
        k: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Rows never to pick (JSON).
        #[arg(long)]
        labeled: Option<PathBuf>,
        /// Output JSON array.
        #[arg(long)]
        output: PathBuf,
    },
    /// k-means (k-means++ init) with per-cluster sampling.
    Kmeans {
        /// Embeddings `.npy`.
        #[arg(long)]
        embeddings: PathBuf,
        /// Rows to pick.
        #[arg(long)]
        k: usize,
        /// Number of clusters.
        #[arg(long)]
        clusters: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Lloyd iteration cap.
        #[arg(long, default_value_t = 100)]
        max_iter: usize,
        /// Budget split over clusters.
        #[arg(long, value_enum, default_value_t = Allocation::Proportional)]
        allocation: Allocation,
        /// Members taken per cluster.
        #[arg(long, value_enum, default_value_t = Within::Random)]
        within: Within,
        /// Output JSON array.
        #[arg(long)]
        output: PathBuf,
        /// Optional JSON report.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// Vendi score (cosine kernel) of an embedding matrix or a subset of its rows.
    Vendi {
        /// Embeddings `.npy`.
        #[arg(long)]
        embeddings: PathBuf,
        /// Only these rows (JSON indices, e.g. a selection output).
        #[arg(long)]
        indices: Option<PathBuf>,
        /// Optional JSON output `{"vendi": x, "rows": n}` (always printed to stdout).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// Runs a subcommand without an embedder (retrieve then needs precomputed embeddings).
pub fn run(cmd: SelectCommand) -> Result<()> {
    run_with_embedder(cmd, None)
}

/// Runs a subcommand; `embedder` is used by `retrieve` when no precomputed embeddings are given.
pub fn run_with_embedder(cmd: SelectCommand, embedder: Option<&dyn Embedder>) -> Result<()> {
    match cmd {
        SelectCommand::Kcenter {
            embeddings,
            labeled,
            k,
            metric,
            strategy,
            output,
            report,
        } => {
            let emb = read_npy(&embeddings)?;
            let labeled = match labeled {
                Some(p) => read_indices(&p, emb.nrows())?,
                None => Vec::new(),
            };
            let r = kcenter_greedy(
                emb.view(),
                &labeled,
                &KCenterOptions {
                    k,
                    metric,
                    strategy,
                },
            )?;
            if r.truncated {
                tracing::warn!(
                    requested = k,
                    returned = r.picks.len(),
                    "k exceeds the unlabelled rows; returned all of them"
                );
            }
            write_json(&output, &r.picks)?;
            if let Some(p) = report {
                write_json(&p, &r)?;
            }
            Ok(())
        }
        SelectCommand::Retrieve {
            pool,
            kshot,
            budget,
            dedup,
            dedup_mode,
            backfill,
            similarity,
            pool_embeddings,
            kshot_embeddings,
            query_prefix,
            cache_dir,
            batch_size,
            lenient,
            output,
            indices_output,
            report,
        } => {
            let opts = PoolOptions {
                lenient,
                format: None,
            };
            let pool_recs = read_pool(&pool, &opts)?;
            let kshot_recs = read_pool(&kshot, &opts)?;
            if kshot_recs.is_empty() {
                return Err(SelectError::Empty {
                    what: format!("K-shot file {}", kshot.display()),
                    hint: "retrieval needs at least one K-shot example".into(),
                });
            }
            let embed = |path: Option<PathBuf>,
                         recs: &[Instruction],
                         what: &str|
             -> Result<Array2<f32>> {
                match (path, embedder) {
                    (Some(p), _) => {
                        let m = read_npy(&p)?;
                        if m.nrows() != recs.len() {
                            return Err(SelectError::DimensionMismatch {
                                what: format!("{what} embedding rows ({}) vs records", p.display()),
                                expected: recs.len(),
                                found: m.nrows(),
                            });
                        }
                        Ok(m)
                    }
                    (None, Some(e)) => {
                        embed_records(e, recs, &query_prefix, cache_dir.as_deref(), batch_size)
                    }
                    (None, None) => Err(SelectError::param(
                        &format!("--{what}-embeddings"),
                        "no embedder is wired into this build; pass precomputed --pool-embeddings and --kshot-embeddings",
                    )),
                }
            };
            let pe = embed(pool_embeddings, &pool_recs, "pool")?;
            let ke = embed(kshot_embeddings, &kshot_recs, "kshot")?;
            let dedup = dedup.map(|threshold| DedupOptions {
                threshold,
                mode: dedup_mode,
                backfill,
            });
            let r = retrieve(
                pe.view(),
                ke.view(),
                &RetrieveOptions {
                    budget,
                    similarity,
                    dedup,
                },
            )?;
            if r.short_by > 0 {
                tracing::warn!(
                    short_by = r.short_by,
                    "selection is below budget - K (use --backfill, or a larger pool)"
                );
            }
            let mut text = String::new();
            for rec in kshot_recs
                .iter()
                .chain(r.selected.iter().map(|&i| &pool_recs[i]))
            {
                text.push_str(&serde_json::to_string(&rec.raw).expect("JSON value serializes"));
                text.push('\n');
            }
            write_atomic(&output, text.as_bytes())?;
            if let Some(p) = indices_output {
                write_json(&p, &r.selected)?;
            }
            if let Some(p) = report {
                write_json(&p, &r)?;
            }
            Ok(())
        }
        SelectCommand::Random {
            n,
            embeddings,
            pool,
            k,
            seed,
            labeled,
            output,
        } => {
            let n = match (n, embeddings, pool) {
                (Some(n), None, None) => n,
                (None, Some(e), None) => read_npy(&e)?.nrows(),
                (None, None, Some(p)) => read_pool(&p, &PoolOptions::default())?.len(),
                _ => {
                    return Err(SelectError::param(
                        "random",
                        "give exactly one of --n, --embeddings, --pool",
                    ));
                }
            };
            let exclude = match labeled {
                Some(p) => read_indices(&p, n)?,
                None => Vec::new(),
            };
            write_json(&output, &random_select(n, k, seed, &exclude)?)
        }
        SelectCommand::Kmeans {
            embeddings,
            k,
            clusters,
            seed,
            max_iter,
            allocation,
            within,
            output,
            report,
        } => {
            let emb = read_npy(&embeddings)?;
            let r = kmeans_select(
                emb.view(),
                &KMeansSelectOptions {
                    budget: k,
                    clusters,
                    max_iter,
                    seed,
                    allocation,
                    within,
                },
            )?;
            write_json(&output, &r.picks)?;
            if let Some(p) = report {
                write_json(&p, &r)?;
            }
            Ok(())
        }
        SelectCommand::Vendi {
            embeddings,
            indices,
            output,
        } => {
            let emb = read_npy(&embeddings)?;
            let emb = match indices {
                Some(p) => {
                    let idx = read_indices(&p, emb.nrows())?;
                    emb.select(ndarray::Axis(0), &idx)
                }
                None => emb,
            };
            let v = vendi_score(emb.view())?;
            #[derive(Serialize)]
            struct Out {
                vendi: f64,
                rows: usize,
            }
            let out = Out {
                vendi: v,
                rows: emb.nrows(),
            };
            let line = serde_json::to_string(&out).expect("plain data");
            // The score is the command's product: print it for shell use.
            println!("{line}");
            if let Some(p) = output {
                write_json(&p, &out)?;
            }
            Ok(())
        }
    }
}

/// Reads a pool: a JSON array (salvaging a truncated one) when the file starts with `[`, JSONL otherwise.
pub fn read_pool(path: &Path, opts: &PoolOptions) -> Result<Vec<Instruction>> {
    let mut head = [0u8; 64];
    let n = {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| SelectError::io(path, e))?;
        f.read(&mut head).map_err(|e| SelectError::io(path, e))?
    };
    let first = head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace() && **b != 0xEF && **b != 0xBB && **b != 0xBF);
    let report = if first == Some(&b'[') {
        let s = salvage_json_array(path, opts)?;
        if !s.closed {
            tracing::warn!(
                file = %path.display(),
                records = s.pool.records.len(),
                cut_line = ?s.cut_element_start_line,
                "JSON array is truncated; using its complete records"
            );
        }
        s.pool
    } else {
        read_jsonl(path, opts)?
    };
    for issue in &report.skipped {
        tracing::warn!(file = %path.display(), line = issue.line, reason = %issue.reason, "skipped malformed record");
    }
    Ok(report.records)
}

fn embed_records(
    e: &dyn Embedder,
    recs: &[Instruction],
    prefix: &str,
    cache_dir: Option<&Path>,
    batch_size: usize,
) -> Result<Array2<f32>> {
    let items: Vec<(String, String)> = recs
        .iter()
        .map(|r| (r.content_hash.clone(), r.retrieval_text(prefix)))
        .collect();
    match cache_dir {
        Some(dir) => {
            // The prefix changes the vectors, so its hash is part of the cache key.
            let mut cache = EmbeddingCache::open(dir, &e.model_id(), e.dim())?;
            let keyed: Vec<(String, String)> = items
                .into_iter()
                .map(|(h, t)| (format!("{h}:{}", crate::pool::hex(&sha_prefix(prefix))), t))
                .collect();
            Ok(cache.embed_all(e, &keyed, batch_size)?.0)
        }
        None => {
            let mut out = Array2::zeros((recs.len(), e.dim()));
            for (c, chunk) in items.chunks(batch_size.max(1)).enumerate() {
                let texts: Vec<String> = chunk.iter().map(|x| x.1.clone()).collect();
                let m = e.embed(&texts)?;
                crate::distance::check_finite(
                    m.view(),
                    &format!("embeddings from {}", e.model_id()),
                )?;
                if m.dim() != (texts.len(), e.dim()) {
                    return Err(SelectError::DimensionMismatch {
                        what: format!("embedder {} output", e.model_id()),
                        expected: texts.len() * e.dim(),
                        found: m.len(),
                    });
                }
                let start = c * batch_size.max(1);
                out.slice_mut(ndarray::s![start..start + texts.len(), ..])
                    .assign(&m);
            }
            Ok(out)
        }
    }
}

fn sha_prefix(prefix: &str) -> [u8; 4] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(prefix.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// Reads row indices: a JSON array of integers, `{"indices": [...]}` / `{"labeled": [...]}`, or a boolean mask of
/// length `n`. Checks every index is `< n`.
pub fn read_indices(path: &Path, n: usize) -> Result<Vec<usize>> {
    let text = std::fs::read_to_string(path).map_err(|e| SelectError::io(path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| SelectError::InvalidJson {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?;
    let arr = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => o
            .get("indices")
            .or_else(|| o.get("labeled"))
            .or_else(|| o.get("picks"))
            .and_then(|x| x.as_array())
            .ok_or_else(|| SelectError::InvalidJson {
                what: path.display().to_string(),
                reason: "object without an 'indices', 'labeled' or 'picks' array".into(),
            })?,
        _ => {
            return Err(SelectError::InvalidJson {
                what: path.display().to_string(),
                reason: "expected a JSON array of indices".into(),
            });
        }
    };
    let bad = |reason: String| SelectError::InvalidJson {
        what: path.display().to_string(),
        reason,
    };
    if !arr.is_empty() && arr.iter().all(|x| x.is_boolean()) {
        if arr.len() != n {
            return Err(bad(format!(
                "boolean mask has {} entries, pool has {n}",
                arr.len()
            )));
        }
        return Ok(arr
            .iter()
            .enumerate()
            .filter(|(_, b)| b.as_bool() == Some(true))
            .map(|(i, _)| i)
            .collect());
    }
    arr.iter()
        .enumerate()
        .map(|(pos, x)| {
            let i = x.as_u64().ok_or_else(|| {
                bad(format!(
                    "entry {pos} is {x}, expected a non-negative integer"
                ))
            })? as usize;
            if i >= n {
                return Err(SelectError::IndexOutOfRange {
                    what: path.display().to_string(),
                    index: i,
                    len: n,
                });
            }
            Ok(i)
        })
        .collect()
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string(value).map_err(|e| SelectError::InvalidJson {
        what: path.display().to_string(),
        reason: e.to_string(),
    })?;
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::write_npy;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: SelectCommand,
    }

    fn parse(args: &[&str]) -> SelectCommand {
        Cli::try_parse_from(std::iter::once("select").chain(args.iter().copied()))
            .unwrap()
            .cmd
    }

    #[test]
    fn kcenter_end_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let e = dir.path().join("e.npy");
        let m = ndarray::array![[0.0f32], [1.0], [2.0], [10.0], [11.0]];
        write_npy(&e, m.view()).unwrap();
        std::fs::write(dir.path().join("l.json"), "[0]").unwrap();
        let out = dir.path().join("p.json");
        let s = |p: &Path| p.to_str().unwrap().to_string();
        run(parse(&[
            "kcenter",
            "--embeddings",
            &s(&e),
            "--labeled",
            &s(&dir.path().join("l.json")),
            "--k",
            "2",
            "--output",
            &s(&out),
        ]))
        .unwrap();
        let picks: Vec<usize> =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(picks, vec![4, 2]);
        // mask form of the labelled file, cosine metric parses
        std::fs::write(
            dir.path().join("l.json"),
            "[true, false, false, false, false]",
        )
        .unwrap();
        assert_eq!(
            read_indices(&dir.path().join("l.json"), 5).unwrap(),
            vec![0]
        );
        assert!(read_indices(&dir.path().join("l.json"), 4).is_err());
        std::fs::write(dir.path().join("l.json"), "[7]").unwrap();
        assert!(read_indices(&dir.path().join("l.json"), 5).is_err());
    }

    #[test]
    fn retrieve_end_to_end_with_precomputed_embeddings() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pool = "{\"instruction\": \"a\", \"output\": \"1\"}\n{\"instruction\": \"b\", \"output\": \"2\"}\n{\"instruction\": \"c\", \"output\": \"3\"}\n";
        std::fs::write(d.join("pool.jsonl"), pool).unwrap();
        std::fs::write(
            d.join("k.jsonl"),
            "{\"instruction\": \"q\", \"output\": \"0\"}\n",
        )
        .unwrap();
        write_npy(
            &d.join("pe.npy"),
            ndarray::array![[0.0f32, 1.0], [1.0, 0.0], [0.99, 0.05]].view(),
        )
        .unwrap();
        write_npy(&d.join("ke.npy"), ndarray::array![[1.0f32, 0.0]].view()).unwrap();
        let s = |n: &str| d.join(n).to_str().unwrap().to_string();
        let args = [
            "retrieve",
            "--pool",
            &s("pool.jsonl"),
            "--kshot",
            &s("k.jsonl"),
            "--budget",
            "3",
            "--dedup",
            "0.9",
            "--dedup-mode",
            "greedy",
            "--pool-embeddings",
            &s("pe.npy"),
            "--kshot-embeddings",
            &s("ke.npy"),
            "--output",
            &s("out.jsonl"),
            "--indices-output",
            &s("idx.json"),
        ];
        run(parse(&args)).unwrap();
        let idx: Vec<usize> =
            serde_json::from_str(&std::fs::read_to_string(s("idx.json")).unwrap()).unwrap();
        assert_eq!(idx, vec![1]);
        let out = std::fs::read_to_string(s("out.jsonl")).unwrap();
        assert_eq!(out.lines().count(), 2);
        assert!(out.lines().next().unwrap().contains("\"q\""));
        // with back-fill the far item comes in
        let mut a2 = args.to_vec();
        a2.push("--backfill");
        run(parse(&a2)).unwrap();
        let idx: Vec<usize> =
            serde_json::from_str(&std::fs::read_to_string(s("idx.json")).unwrap()).unwrap();
        assert_eq!(idx, vec![1, 0]);
        // no embeddings and no embedder: clear error
        let err = run(parse(&[
            "retrieve",
            "--pool",
            &s("pool.jsonl"),
            "--kshot",
            &s("k.jsonl"),
            "--budget",
            "2",
            "--output",
            &s("o.jsonl"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("precomputed"), "{err}");
        // wrong row count
        write_npy(&d.join("pe.npy"), ndarray::array![[0.0f32, 1.0]].view()).unwrap();
        assert!(run(parse(&args)).is_err());
        // empty K-shot file
        std::fs::write(d.join("k.jsonl"), "\n").unwrap();
        assert!(matches!(run(parse(&args)), Err(SelectError::Empty { .. })));
    }

    #[test]
    fn random_kmeans_vendi() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s = |n: &str| d.join(n).to_str().unwrap().to_string();
        let m = Array2::from_shape_fn((40, 3), |(i, j)| {
            ((i * 7 + j * 3) % 11) as f32 + if j == i % 3 { 5.0 } else { 0.0 }
        });
        write_npy(&d.join("e.npy"), m.view()).unwrap();
        run(parse(&[
            "random",
            "--n",
            "40",
            "--k",
            "5",
            "--seed",
            "3",
            "--output",
            &s("r.json"),
        ]))
        .unwrap();
        let r: Vec<usize> =
            serde_json::from_str(&std::fs::read_to_string(s("r.json")).unwrap()).unwrap();
        assert_eq!(r.len(), 5);
        assert!(run(parse(&["random", "--k", "5", "--output", &s("r.json")])).is_err());
        run(parse(&[
            "kmeans",
            "--embeddings",
            &s("e.npy"),
            "--k",
            "6",
            "--clusters",
            "3",
            "--output",
            &s("km.json"),
        ]))
        .unwrap();
        let km: Vec<usize> =
            serde_json::from_str(&std::fs::read_to_string(s("km.json")).unwrap()).unwrap();
        assert_eq!(km.len(), 6);
        run(parse(&[
            "vendi",
            "--embeddings",
            &s("e.npy"),
            "--indices",
            &s("km.json"),
            "--output",
            &s("v.json"),
        ]))
        .unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(s("v.json")).unwrap()).unwrap();
        assert_eq!(v["rows"], 6);
        let score = v["vendi"].as_f64().unwrap();
        assert!((1.0..=3.0).contains(&score), "{score}");
    }

    /// Embeds by character counts; counts texts so cache reuse is visible.
    struct CharCounts(std::sync::atomic::AtomicUsize);

    impl Embedder for CharCounts {
        fn embed(&self, texts: &[String]) -> Result<Array2<f32>> {
            self.0
                .fetch_add(texts.len(), std::sync::atomic::Ordering::SeqCst);
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

    #[test]
    fn retrieve_with_embedder_uses_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s = |n: &str| d.join(n).to_str().unwrap().to_string();
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
        let args = [
            "retrieve",
            "--pool",
            &s("pool.jsonl"),
            "--kshot",
            &s("k.jsonl"),
            "--budget",
            "4",
            "--cache-dir",
            &s("cache"),
            "--batch-size",
            "5",
            "--output",
            &s("out.jsonl"),
            "--indices-output",
            &s("idx.json"),
        ];
        let e = CharCounts(Default::default());
        run_with_embedder(parse(&args), Some(&e)).unwrap();
        // 12 pool texts; the K-shot record has the same content as pool item 3, so it is a cache hit
        assert_eq!(e.0.load(std::sync::atomic::Ordering::SeqCst), 12);
        let first = std::fs::read_to_string(s("idx.json")).unwrap();
        let idx: Vec<usize> = serde_json::from_str(&first).unwrap();
        assert_eq!(idx.len(), 3);
        assert_eq!(idx[0], 3, "the K-shot's own text is nearest");
        // second run: everything comes from the cache, same selection
        let e2 = CharCounts(Default::default());
        run_with_embedder(parse(&args), Some(&e2)).unwrap();
        assert_eq!(e2.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(std::fs::read_to_string(s("idx.json")).unwrap(), first);
    }

    #[test]
    fn pool_reader_detects_json_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sg.json");
        std::fs::write(&p, "[{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}, {\"conversations\": [{\"from\": \"hu").unwrap();
        let recs = read_pool(&p, &PoolOptions::default()).unwrap();
        assert_eq!(recs.len(), 1);
    }
}
