#!/usr/bin/env bash
# Side-by-side LoRA training throughput: openexpert's trainer vs PyTorch + PEFT, same workload
# (SmolLM2-135M-Instruct, LoRA r=8 / alpha 16 / dropout 0 on q_proj,v_proj, batch 4 x 128 fixed
# token ids, loss on every next-token target, AdamW lr 1e-4), alternating ROUNDS times.
#
# Usage (from anywhere inside the repository):
#   benches/compare/train/run.sh [THREADS]     # THREADS defaults to 2
# Environment: ROUNDS (default 2), STEPS (timed steps per run, default 8), SKIP_BUILD=1,
#   CARGO_TARGET_DIR (default ~/.cache/openexpert-target), PYTHON (default ~/.cache/pyref/venv/bin/python).
# Output: benches/compare/results/train.json: every run, medians of tokens/s, the ratio ours/theirs,
#   peak RSS of each side and the load average before/after. Run on an idle machine if you can.
set -euo pipefail

THREADS="${1:-2}"
ROUNDS="${ROUNDS:-2}"
STEPS="${STEPS:-8}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/openexpert-target}"
BIN="$CARGO_TARGET_DIR/release/openexpert"
PYTHON="${PYTHON:-$HOME/.cache/pyref/venv/bin/python}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release -p openexpert --features bench)
fi
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
LOAD_BEFORE="$(cut -d' ' -f1 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r: openexpert" >&2
  (cd "$ROOT" && OPENEXPERT_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS" \
     "$BIN" --threads "$THREADS" bench-train --steps "$STEPS" --json "$TMP/ours-$r.json")
  echo "round $r: PyTorch + PEFT" >&2
  (cd "$ROOT" && OMP_WAIT_POLICY=PASSIVE "$PYTHON" benches/compare/train/anchor_train.py \
     --threads "$THREADS" --steps "$STEPS" --json "$TMP/theirs-$r.json")
done
LOAD_AFTER="$(cut -d' ' -f1 /proc/loadavg)"
"$PYTHON" - "$TMP" "$ROUNDS" "$THREADS" "$LOAD_BEFORE" "$LOAD_AFTER" "$ROOT/benches/compare/results/train.json" <<'PY'
import json, statistics, sys
tmp, rounds, threads, lb, la, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
ours = [json.load(open(f"{tmp}/ours-{r}.json")) for r in range(1, rounds + 1)]
theirs = [json.load(open(f"{tmp}/theirs-{r}.json")) for r in range(1, rounds + 1)]
o = statistics.median(x["tokens_per_s"] for x in ours)
t = statistics.median(x["tokens_per_s"] for x in theirs)
summary = {
    "workload": "SmolLM2-135M-Instruct, LoRA r=8 alpha=16 dropout=0 on q_proj,v_proj, batch 4 x 128, loss on all next-token targets, AdamW",
    "threads": threads,
    "ours_tokens_per_s": o,
    "theirs_tokens_per_s": t,
    "ratio_ours_over_theirs": o / t,
    "ours_peak_rss_mb": max(x.get("peak_rss_mb") or 0 for x in ours),
    "theirs_peak_rss_mb": max(x.get("peak_rss_mb") or 0 for x in theirs),
    "load_avg_1min_before": float(lb),
    "load_avg_1min_after": float(la),
    "runs": {"ours": ours, "theirs": theirs},
}
json.dump(summary, open(out, "w"), indent=2)
print(f"ours {o:.1f} tok/s, PyTorch+PEFT {t:.1f} tok/s, ratio {o/t:.2f}; peak RSS {summary['ours_peak_rss_mb']:.0f} vs {summary['theirs_peak_rss_mb']:.0f} MB")
PY
