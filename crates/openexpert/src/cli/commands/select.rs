//! `openexpert select ...`: choosing the few instructions worth training on.
//!
//! `kcenter`, `random`, `kmeans` and `vendi` work on embedding matrices (`.npy`) and need no
//! model; `retrieve` embeds the pool and the K-shot set with a sentence encoder unless
//! precomputed embeddings are given; `evolve` trains a LoRA each round ([`super::evolve`]).
//!
//! Index outputs are JSON arrays of row indices in pick order. Labelled / excluded index files
//! are read by [`data_select::indices::read_indices`] (an array, an object with an `indices` /
//! `labeled` / `picks` array, or a boolean mask as long as the pool).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use data_select::Metric;
use data_select::baselines::{
    Allocation, DEFAULT_MAX_ITER, KMeansSelectOptions, Within, kmeans_select, random_select,
};
use data_select::dedup::DedupMode;
use data_select::embed::{DEFAULT_BATCH_SIZE, Embedder, embed_records, read_record_embeddings};
use data_select::indices::read_indices;
use data_select::kcenter::{KCenterOptions, Strategy, kcenter_greedy};
use data_select::npy::read_npy;
use data_select::pool::{Instruction, PoolOptions, read_pool};
use data_select::retrieve::{DedupOptions, RetrieveOptions, Similarity, retrieve};
use data_select::vendi::vendi_score;
use lm_core::assets::DEFAULT_ENCODER;
use openexpert::embedders::SentenceEmbedder;

use super::evolve::EvolveArgs;
use crate::cli::args::named;
use crate::cli::args::output::PicksOutput;
use atomic_fs::{write_atomic, write_json};

/// `select` subcommands.
#[derive(Debug, Subcommand)]
pub enum SelectCommand {
    /// DiverseEvol: random --init items, then --rounds rounds of "embed the pool with the
    /// current model, add --per-round k-center picks, train a LoRA on all picks".
    Evolve(EvolveArgs),
    /// k-center greedy (DiverseEvol): farthest-first picks from an embedding matrix.
    Kcenter(KcenterArgs),
    /// K-shot guided retrieval with near-duplicate removal (Rocket).
    Retrieve(RetrieveArgs),
    /// Uniform random selection (seeded).
    Random(RandomArgs),
    /// k-means (k-means++ init) with per-cluster sampling.
    Kmeans(KmeansArgs),
    /// Vendi score (cosine kernel) of an embedding matrix or a subset of its rows.
    Vendi(VendiArgs),
}

/// Arguments of `select kcenter`.
#[derive(Debug, Args)]
pub struct KcenterArgs {
    /// Embeddings, `.npy` float32 `[n, d]`.
    #[arg(long)]
    pub embeddings: PathBuf,
    /// Labelled rows (initial centers), JSON.
    #[arg(long)]
    pub labeled: Option<PathBuf>,
    /// Rows to pick.
    #[arg(long)]
    pub k: usize,
    /// Distance.
    #[arg(long, value_parser = named::<Metric>(), default_value_t = Metric::default())]
    pub metric: Metric,
    /// Work strategy (same picks either way).
    #[arg(long, value_parser = named::<Strategy>(), default_value_t = Strategy::default())]
    pub strategy: Strategy,
    /// Picks and report (pick distances, truncation, work).
    #[command(flatten)]
    pub output: PicksOutput,
}

/// Arguments of `select retrieve`.
#[derive(Debug, Args)]
pub struct RetrieveArgs {
    /// Instruction pool: JSONL, or a (possibly truncated) JSON array.
    #[arg(long)]
    pub pool: PathBuf,
    /// K-shot examples, same formats.
    #[arg(long)]
    pub kshot: PathBuf,
    /// Total training-set size N (K-shot included); N - K pool items are selected.
    #[arg(long)]
    pub budget: usize,
    /// Cosine-similarity threshold for near-duplicates (Rocket: 0.9); omit to skip dedup.
    #[arg(long)]
    pub dedup: Option<f32>,
    /// Duplicate rule.
    #[arg(long, value_parser = named::<DedupMode>(), default_value_t = DedupMode::default())]
    pub dedup_mode: DedupMode,
    /// Refill to the budget from further pool items after dedup.
    #[arg(long)]
    pub backfill: bool,
    /// Closeness criterion.
    #[arg(long, value_parser = named::<Similarity>(), default_value_t = Similarity::default())]
    pub similarity: Similarity,
    /// Sentence encoder for records without precomputed embeddings (a BERT HF directory or an
    /// asset name).
    #[arg(long, default_value = DEFAULT_ENCODER)]
    pub embedder: String,
    /// Precomputed pool embeddings (`.npy`, one row per pool record) instead of the encoder.
    #[arg(long)]
    pub pool_embeddings: Option<PathBuf>,
    /// Precomputed K-shot embeddings (`.npy`).
    #[arg(long)]
    pub kshot_embeddings: Option<PathBuf>,
    /// Text put before each record when embedding (Rocket with bge-m3 uses
    /// `data_select::retrieve::ROCKET_RETRIEVAL_PREFIX`; MiniLM none).
    #[arg(long, default_value = "")]
    pub query_prefix: String,
    /// Embedding cache directory (with the encoder).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Texts per encoder call.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Skip malformed records instead of failing.
    #[arg(long)]
    pub lenient: bool,
    /// Output JSONL: the K-shot records, then the selected pool records (original JSON).
    #[arg(long)]
    pub output: PathBuf,
    /// Optional JSON array of the selected pool indices.
    #[arg(long)]
    pub indices_output: Option<PathBuf>,
    /// Optional JSON report.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Arguments of `select random`.
#[derive(Debug, Args)]
pub struct RandomArgs {
    /// Pool size (or give --embeddings / --pool).
    #[arg(long)]
    pub n: Option<usize>,
    /// Take the pool size from this `.npy`.
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// Take the pool size from this pool file.
    #[arg(long)]
    pub pool: Option<PathBuf>,
    /// Rows to pick.
    #[arg(long)]
    pub k: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Rows never to pick (JSON).
    #[arg(long)]
    pub labeled: Option<PathBuf>,
    /// Output: JSON array of the picked row indices.
    #[arg(long)]
    pub output: PathBuf,
}

/// Arguments of `select kmeans`.
#[derive(Debug, Args)]
pub struct KmeansArgs {
    /// Embeddings `.npy`.
    #[arg(long)]
    pub embeddings: PathBuf,
    /// Rows to pick.
    #[arg(long)]
    pub k: usize,
    /// Number of clusters.
    #[arg(long)]
    pub clusters: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Lloyd iteration cap.
    #[arg(long, default_value_t = DEFAULT_MAX_ITER)]
    pub max_iter: usize,
    /// Budget split over clusters.
    #[arg(long, value_parser = named::<Allocation>(), default_value_t = Allocation::default())]
    pub allocation: Allocation,
    /// Members taken per cluster.
    #[arg(long, value_parser = named::<Within>(), default_value_t = Within::default())]
    pub within: Within,
    /// Picks and report (clusters, inertia).
    #[command(flatten)]
    pub output: PicksOutput,
}

/// Arguments of `select vendi`.
#[derive(Debug, Args)]
pub struct VendiArgs {
    /// Embeddings `.npy`.
    #[arg(long)]
    pub embeddings: PathBuf,
    /// Only these rows (JSON indices, e.g. a selection output).
    #[arg(long)]
    pub indices: Option<PathBuf>,
    /// Optional JSON output `{"vendi": x, "rows": n}` (always printed to stdout).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Runs a `select` subcommand.
pub fn run(command: SelectCommand, device: &str) -> anyhow::Result<()> {
    match command {
        SelectCommand::Evolve(a) => super::evolve::run(a, device),
        SelectCommand::Kcenter(a) => kcenter(a),
        SelectCommand::Retrieve(a) => run_retrieve(a, device),
        SelectCommand::Random(a) => random(a),
        SelectCommand::Kmeans(a) => kmeans(a),
        SelectCommand::Vendi(a) => vendi(a),
    }
}

fn kcenter(a: KcenterArgs) -> anyhow::Result<()> {
    let emb = read_npy(&a.embeddings)?;
    let labeled = match &a.labeled {
        Some(p) => read_indices(p, emb.nrows())?,
        None => Vec::new(),
    };
    let options = KCenterOptions {
        k: a.k,
        metric: a.metric,
        strategy: a.strategy,
    };
    let r = kcenter_greedy(emb.view(), &labeled, &options)?;
    if r.truncated {
        tracing::warn!(
            requested = a.k,
            returned = r.picks.len(),
            "k exceeds the unlabelled rows; returned all of them"
        );
    }
    a.output.write(&r.picks, &r)
}

fn run_retrieve(a: RetrieveArgs, device: &str) -> anyhow::Result<()> {
    let opts = PoolOptions {
        lenient: a.lenient,
        format: None,
    };
    let pool = read_pool(&a.pool, &opts)?;
    let kshot = read_pool(&a.kshot, &opts)?;
    if kshot.is_empty() {
        return Err(data_select::SelectError::Empty {
            what: format!("K-shot file {}", a.kshot.display()),
            hint: "retrieval needs at least one K-shot example".into(),
        }
        .into());
    }
    // The encoder is loaded only when a side has no precomputed embeddings.
    let mut encoder: Option<SentenceEmbedder> = None;
    let mut embeddings = |path: Option<&Path>, records: &[Instruction], what: &str| {
        if let Some(p) = path {
            return Ok(read_record_embeddings(p, records.len(), what)?);
        }
        if encoder.is_none() {
            let device = lm_core::device::device_from_name(device)?;
            encoder = Some(SentenceEmbedder::load(&a.embedder, &device)?);
        }
        let e: &dyn Embedder = encoder.as_ref().expect("loaded above");
        anyhow::Ok(embed_records(
            e,
            records,
            &a.query_prefix,
            a.cache_dir.as_deref(),
            a.batch_size,
        )?)
    };
    let pe = embeddings(a.pool_embeddings.as_deref(), &pool, "pool")?;
    let ke = embeddings(a.kshot_embeddings.as_deref(), &kshot, "kshot")?;
    let options = RetrieveOptions {
        budget: a.budget,
        similarity: a.similarity,
        dedup: a.dedup.map(|threshold| DedupOptions {
            threshold,
            mode: a.dedup_mode,
            backfill: a.backfill,
        }),
    };
    let r = retrieve(pe.view(), ke.view(), &options)?;
    if r.short_by > 0 {
        tracing::warn!(
            short_by = r.short_by,
            "selection is below budget - K (use --backfill, or a larger pool)"
        );
    }
    let mut text = String::new();
    for rec in kshot.iter().chain(r.selected.iter().map(|&i| &pool[i])) {
        text.push_str(&serde_json::to_string(&rec.raw)?);
        text.push('\n');
    }
    write_atomic(&a.output, text.as_bytes())?;
    if let Some(p) = &a.indices_output {
        write_json(p, &r.selected)?;
    }
    if let Some(p) = &a.report {
        write_json(p, &r)?;
    }
    Ok(())
}

fn random(a: RandomArgs) -> anyhow::Result<()> {
    let n = match (a.n, &a.embeddings, &a.pool) {
        (Some(n), None, None) => n,
        (None, Some(e), None) => read_npy(e)?.nrows(),
        (None, None, Some(p)) => read_pool(p, &PoolOptions::default())?.len(),
        _ => anyhow::bail!("select random: give exactly one of --n, --embeddings, --pool"),
    };
    let exclude = match &a.labeled {
        Some(p) => read_indices(p, n)?,
        None => Vec::new(),
    };
    Ok(write_json(
        &a.output,
        &random_select(n, a.k, a.seed, &exclude)?,
    )?)
}

fn kmeans(a: KmeansArgs) -> anyhow::Result<()> {
    let emb = read_npy(&a.embeddings)?;
    let options = KMeansSelectOptions {
        budget: a.k,
        clusters: a.clusters,
        max_iter: a.max_iter,
        seed: a.seed,
        allocation: a.allocation,
        within: a.within,
    };
    let r = kmeans_select(emb.view(), &options)?;
    a.output.write(&r.picks, &r)
}

fn vendi(a: VendiArgs) -> anyhow::Result<()> {
    let emb = read_npy(&a.embeddings)?;
    let emb = match &a.indices {
        Some(p) => {
            let idx = read_indices(p, emb.nrows())?;
            emb.select(ndarray::Axis(0), &idx)
        }
        None => emb,
    };
    #[derive(serde::Serialize)]
    struct Out {
        vendi: f64,
        rows: usize,
    }
    let out = Out {
        vendi: vendi_score(emb.view())?,
        rows: emb.nrows(),
    };
    // The score is the command's product: print it for shell use.
    println!("{}", serde_json::to_string(&out)?);
    if let Some(p) = &a.output {
        write_json(p, &out)?;
    }
    Ok(())
}
