#!/usr/bin/env bash
# Side-by-side runtime benchmark: openexpert (Rust) vs the PyTorch anchor, same models, same inputs.
#
# Usage (from anywhere inside the repository):
#   benches/compare/run.sh [THREADS]          # THREADS defaults to 2
# Environment knobs:
#   ROUNDS=2            how many (rust, python) rounds to alternate (default 2: rust, python, rust, python)
#   SKIP_BUILD=1        do not run `cargo build --release -p openexpert` first
#   OPENEXPERT_BIN=...  use this binary instead of $CARGO_TARGET_DIR/release/openexpert
#   CARGO_TARGET_DIR    defaults to ~/.cache/openexpert-target
#   PYTHON=...          python with torch + transformers (default ~/.cache/pyref/venv/bin/python)
#   DECODE_WEIGHTS=...  f32 (default), q8_0 or native: what openexpert's decoding multiplies by
# Output: benches/compare/results/runtime-<UTC date>.json and .md (medians and ours/theirs ratios).
# Run it on an otherwise idle machine: both sides use THREADS busy threads and contention skews them.
set -euo pipefail

THREADS="${1:-2}"
ROUNDS="${ROUNDS:-2}"
DECODE_WEIGHTS="${DECODE_WEIGHTS:-f32}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/openexpert-target}"
BIN="${OPENEXPERT_BIN:-$CARGO_TARGET_DIR/release/openexpert}"
PYTHON="${PYTHON:-$HOME/.cache/pyref/venv/bin/python}"

if ! [[ "$THREADS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: THREADS must be a positive integer, got '$THREADS'" >&2; exit 2
fi
if ! [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: ROUNDS must be a positive integer, got '$ROUNDS'" >&2; exit 2
fi
if [[ "${SKIP_BUILD:-0}" != 1 && -z "${OPENEXPERT_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release -p openexpert --features bench)
fi
if [[ ! -x "$BIN" ]]; then
  echo "error: expected the openexpert binary at $BIN, found nothing; build it with" \
       "'cargo build --release -p openexpert --features bench' or set OPENEXPERT_BIN" >&2
  exit 2
fi
if ! "$BIN" bench-runtime --help >/dev/null 2>&1; then
  echo "error: $BIN has no 'bench-runtime' subcommand (expected '$BIN bench-runtime --threads N --json out.json');" \
       "build it with 'cargo build --release -p openexpert --features bench'" >&2
  exit 3
fi
if ! "$PYTHON" -c "import torch, transformers, gguf" 2>/dev/null; then
  echo "error: $PYTHON cannot import torch, transformers and gguf; install scripts/requirements-fixtures.txt" \
       "into a venv and point PYTHON at it" >&2
  exit 2
fi

STAMP="$(date -u +%Y%m%d-%H%M%S)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "threads=$THREADS rounds=$ROUNDS loadavg=$(cut -d' ' -f1-3 /proc/loadavg)" >&2

for ((r = 1; r <= ROUNDS; r++)); do
  echo "== round $r/$ROUNDS: openexpert" >&2
  cut -d' ' -f1 /proc/loadavg > "$WORK/load-rust-$r"
  "$BIN" bench-runtime --threads "$THREADS" --decode-weights "$DECODE_WEIGHTS" --json "$WORK/rust-$r.json"
  echo "== round $r/$ROUNDS: pytorch anchor" >&2
  cut -d' ' -f1 /proc/loadavg > "$WORK/load-anchor-$r"
  "$PYTHON" "$HERE/anchor_runtime.py" --threads "$THREADS" --json "$WORK/anchor-$r.json"
done

mkdir -p "$HERE/results"
"$PYTHON" "$HERE/summarise.py" \
  --threads "$THREADS" \
  --rust "$WORK"/rust-*.json \
  --anchor "$WORK"/anchor-*.json \
  --loadavg "$WORK"/load-* \
  --json "$HERE/results/runtime-$STAMP.json" \
  --md "$HERE/results/runtime-$STAMP.md"
cat "$HERE/results/runtime-$STAMP.md"
