//! Timing harness for k-center greedy, used by `benches/compare/kcenter/compare.py`.
//!
//! ```text
//! cargo run --release -p data-select --example kcenter_bench -- \
//!     E.npy L.json K [REPEATS] [lazy|eager] [PICKS_OUT.json]
//! ```
//! Prints one JSON line: `{"impl", "n", "d", "k", "times_s", "median_s", "peak_rss_mb", ...}`. Peak RSS is read
//! from `/proc/self/status` (`VmHWM`) and covers loading the matrix too.

use std::path::Path;
use std::time::Instant;

use data_select::kcenter::{KCenterOptions, Strategy, kcenter_greedy};
use data_select::npy::read_npy;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err(
            "usage: kcenter_bench E.npy L.json K [REPEATS] [lazy|eager] [PICKS_OUT.json]".into(),
        );
    }
    let emb = read_npy(Path::new(&args[0]))?;
    let labeled: Vec<usize> = serde_json::from_str(&std::fs::read_to_string(&args[1])?)?;
    let k: usize = args[2].parse()?;
    let repeats: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let strategy = match args.get(4).map(String::as_str) {
        Some("eager") => Strategy::Eager,
        _ => Strategy::Lazy,
    };
    let opts = KCenterOptions {
        k,
        metric: data_select::Metric::Euclidean,
        strategy,
    };
    let mut times = Vec::new();
    let mut report = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let r = kcenter_greedy(emb.view(), &labeled, &opts)?;
        times.push(t.elapsed().as_secs_f64());
        report = Some(r);
    }
    let report = report.expect("at least one run");
    if let Some(out) = args.get(5) {
        std::fs::write(out, serde_json::to_string(&report.picks)?)?;
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let line = serde_json::json!({
        "impl": format!("rust-{strategy:?}").to_lowercase(),
        "n": emb.nrows(),
        "d": emb.ncols(),
        "k": k,
        "labeled": labeled.len(),
        "threads": rayon::current_num_threads(),
        "times_s": times,
        "median_s": median,
        "peak_rss_mb": peak_rss_mb(),
        "distance_evaluations": report.distance_evaluations,
        "full_evaluations": (emb.nrows() as u64) * (labeled.len() + k) as u64,
    });
    println!("{line}");
    Ok(())
}
