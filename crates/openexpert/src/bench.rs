//! The result format of `openexpert bench-runtime` (the side-by-side comparison with the PyTorch
//! anchor in `benches/compare/`): one schema for both sides, stated in
//! `benches/compare/runtime-schema.json`, which `summarise.py` reads and a test here checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Throughput figures of one benchmark round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeResult {
    /// `openexpert` or `pytorch`.
    pub implementation: String,
    /// Threads both sides were limited to.
    pub threads: usize,
    /// Median teacher-forced scoring throughput, tokens per second.
    pub score_tokens_per_s: f64,
    /// Median greedy decoding throughput at batch 1, new tokens per second.
    pub decode_tokens_per_s: f64,
    /// Median sentence-embedding throughput, sentences per second.
    pub embed_sentences_per_s: f64,
    /// Every timed run's throughput, by metric name (the three names above).
    pub runs: BTreeMap<String, Vec<f64>>,
    /// Every timed run's wall time in seconds, by workload (`score`, `decode`, `embed`).
    pub seconds: BTreeMap<String, Vec<f64>>,
    /// Workload shapes and anything else the side records.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

impl RuntimeResult {
    /// A result from the timed runs (`seconds` per workload) and the work per run.
    ///
    /// # Units
    /// `score_tokens`, `decode_tokens`, `embed_sentences`: work per run; the throughputs are work
    /// divided by each run's seconds.
    pub fn from_seconds(
        implementation: &str,
        threads: usize,
        seconds: BTreeMap<String, Vec<f64>>,
        score_tokens: usize,
        decode_tokens: usize,
        embed_sentences: usize,
    ) -> Self {
        let rate = |name: &str, work: usize| -> Vec<f64> {
            seconds
                .get(name)
                .map(|s| s.iter().map(|t| work as f64 / t).collect())
                .unwrap_or_default()
        };
        let runs: BTreeMap<String, Vec<f64>> = [
            (
                "score_tokens_per_s".to_string(),
                rate("score", score_tokens),
            ),
            (
                "decode_tokens_per_s".to_string(),
                rate("decode", decode_tokens),
            ),
            (
                "embed_sentences_per_s".to_string(),
                rate("embed", embed_sentences),
            ),
        ]
        .into();
        Self {
            implementation: implementation.into(),
            threads,
            score_tokens_per_s: median(&runs["score_tokens_per_s"]),
            decode_tokens_per_s: median(&runs["decode_tokens_per_s"]),
            embed_sentences_per_s: median(&runs["embed_sentences_per_s"]),
            runs,
            seconds,
            extra: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_has_every_key_the_shared_schema_requires() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../../benches/compare/runtime-schema.json"))
                .unwrap();
        let seconds: BTreeMap<String, Vec<f64>> = [
            ("score".to_string(), vec![1.0, 2.0]),
            ("decode".to_string(), vec![4.0]),
            ("embed".to_string(), vec![0.5, 0.25, 1.0]),
        ]
        .into();
        let r = RuntimeResult::from_seconds("openexpert", 2, seconds, 2048, 64, 256);
        let v = serde_json::to_value(&r).unwrap();
        for key in schema["required"].as_array().unwrap() {
            assert!(v.get(key.as_str().unwrap()).is_some(), "missing {key}");
        }
        for m in schema["metrics"].as_array().unwrap() {
            let m = m.as_str().unwrap();
            assert!(v["runs"][m].is_array(), "runs.{m}");
            assert!(v[m].as_f64().unwrap() > 0.0);
        }
        for s in schema["seconds"].as_array().unwrap() {
            assert!(v["seconds"][s.as_str().unwrap()].is_array());
        }
        assert_eq!(r.score_tokens_per_s, median(&[2048.0, 1024.0]));
        assert_eq!(r.embed_sentences_per_s, 512.0);
        let back: RuntimeResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
