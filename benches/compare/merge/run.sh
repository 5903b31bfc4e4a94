#!/usr/bin/env bash
# Side by side: `openexpert lora merge` vs PEFT, merging 8 LoRA adapters with TIES into
# SmolLM2-135M-Instruct and writing the HF checkpoint. Run from the repository root:
#
#     export CARGO_TARGET_DIR=...                      # release build dir
#     cargo build --release -p openexpert              # or SKIP_BUILD=1 / OPENEXPERT_BIN=...
#     . ~/.cache/pyref/venv/bin/activate
#     benches/compare/merge/run.sh [ROUNDS=3] [PEFT_METHOD=ties]
#
# 1. exports the base from the GGUF with `openexpert lora export` (PEFT needs an HF directory; both
#    sides then start from the same f32 weights: ours reads the GGUF, PEFT the exported f32 copy);
# 2. generates 8 random PEFT adapters (r 8, alpha 16, q/k/v/o/gate/up/down of all 30 layers) with peft;
# 3. alternates ours / PEFT ROUNDS times, each under /usr/bin/time -v (wall and peak RSS of the whole
#    process: imports, loading, merging, writing); ours with --no-verify (the check is timed apart);
# 4. writes medians, the ratio and every run to benches/compare/results/merge.json.
# Ours runs `--method ties --density 0.5` (TIES on each module's dense ΔW, full rank); PEFT runs
# `add_weighted_adapter(combination_type=$PEFT_METHOD, density=0.5)` (`ties` prunes the A and B
# factors separately; `ties_svd` is the ΔW-space TIES + SVD, much slower).
set -euo pipefail
ROUNDS=${ROUNDS:-3}
PEFT_METHOD=${PEFT_METHOD:-ties}
PY=${PYTHON:-python}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
BIN=${OPENEXPERT_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/openexpert-target}/release/openexpert}
if [ -z "${SKIP_BUILD:-}" ] && [ -z "${OPENEXPERT_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -p openexpert)
fi
OE=("$BIN" lora)
GGUF=${GGUF:-$HOME/.cache/openexpert/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}
WORK=${WORK:-$(mktemp -d /tmp/oe-merge-bench.XXXXXX)}
mkdir -p "$WORK"
echo "work dir $WORK"
[ -f "$WORK/base/model.safetensors" ] || "${OE[@]}" export --model "$GGUF" --output "$WORK/base" --force
[ -d "$WORK/adapters/adapter_7" ] || "$PY" "$ROOT/benches/compare/merge/peft_merge.py" gen --base "$GGUF" --out "$WORK/adapters" --n 8
ADAPTERS=$(ls -d "$WORK"/adapters/adapter_* | paste -sd, -)
RUNS="$WORK/runs.jsonl"; : > "$RUNS"
measure() { # name, command...
  local name=$1; shift
  /usr/bin/time -v "$@" > "$WORK/$name.out" 2> "$WORK/$name.time" || { cat "$WORK/$name.time"; exit 1; }
  local wall rss
  wall=$(grep "Elapsed (wall clock)" "$WORK/$name.time" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(grep "Maximum resident set size" "$WORK/$name.time" | awk '{print $NF}')
  echo "{\"side\": \"$name\", \"wall_s\": $wall, \"max_rss_kb\": $rss}" >> "$RUNS"
  echo "$name wall ${wall}s max RSS ${rss} kB"
}
for r in $(seq 1 "$ROUNDS"); do
  measure ours "${OE[@]}" merge --model "$GGUF" --adapter "$ADAPTERS" --method ties --density 0.5 \
    --output "$WORK/ours" --force --no-verify
  measure peft "$PY" "$ROOT/benches/compare/merge/peft_merge.py" merge --base "$WORK/base" \
    --adapters "$WORK/adapters" --out "$WORK/peft" --method "$PEFT_METHOD" --density 0.5 --json "$WORK/peft_phases_$r.json"
  cp "$WORK/ours/merge_report.json" "$WORK/ours_report_$r.json"
done
# one verified run (timed apart): merged vs unmerged logits of the dense TIES update
measure ours_verified "${OE[@]}" merge --model "$GGUF" --adapter "$ADAPTERS" --method ties --density 0.5 \
  --output "$WORK/ours" --force
cp "$WORK/ours/merge_report.json" "$WORK/ours_verified_report.json"
"$PY" - "$WORK" "$ROOT/benches/compare/results/merge.json" "$PEFT_METHOD" <<'PYEOF'
import json, os, platform, statistics, sys
from pathlib import Path
work, out, method = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
runs = [json.loads(l) for l in (work / "runs.jsonl").read_text().splitlines()]
def med(side, key): return statistics.median(r[key] for r in runs if r["side"] == side)
model_bytes = (work / "ours" / "model.safetensors").stat().st_size
ver = json.loads((work / "ours_verified_report.json").read_text())
ours_reports = sorted(work.glob("ours_report_*.json"))
peft_phases = [json.loads(p.read_text()) for p in sorted(work.glob("peft_phases_*.json"))]
res = {
  "task": "merge 8 LoRA adapters (r 8, q/k/v/o/gate/up/down x 30 layers) with TIES (density 0.5) into SmolLM2-135M-Instruct and write the HF checkpoint (f32)",
  "ours": "openexpert lora merge --method ties --density 0.5 --no-verify (GGUF Q4_1 base, dense ΔW TIES, full rank)",
  "peft": f"PEFT add_weighted_adapter(combination_type={method!r}, density=0.5) + merge_and_unload + save_pretrained (base: the f32 HF export)",
  "ours_wall_s_median": med("ours", "wall_s"), "peft_wall_s_median": med("peft", "wall_s"),
  "speedup_wall": med("peft", "wall_s") / med("ours", "wall_s"),
  "ours_max_rss_mb_median": med("ours", "max_rss_kb") / 1024, "peft_max_rss_mb_median": med("peft", "max_rss_kb") / 1024,
  "model_safetensors_mb": model_bytes / 2**20,
  "ours_rss_over_model": med("ours", "max_rss_kb") * 1024 / model_bytes,
  "ours_verified_wall_s": med("ours_verified", "wall_s"),
  "ours_verified_max_rss_mb": med("ours_verified", "max_rss_kb") / 1024,
  "ours_verified_rss_over_model": med("ours_verified", "max_rss_kb") * 1024 / model_bytes,
  "verification": ver.get("verification"), "ours_timings_verified_run": ver.get("timings"),
  "ours_timings": [json.loads(p.read_text())["timings"] for p in ours_reports],
  "peft_phases": peft_phases,
  "runs": runs, "rounds": len(peft_phases),
  "machine": {"cpus": os.cpu_count(), "load_avg_end": os.getloadavg(), "platform": platform.platform()},
}
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(res, indent=1) + "\n")
print(json.dumps({k: res[k] for k in ["ours_wall_s_median", "peft_wall_s_median", "speedup_wall", "ours_max_rss_mb_median", "peft_max_rss_mb_median", "model_safetensors_mb", "ours_rss_over_model", "ours_verified_rss_over_model"]}, indent=1))
PYEOF
