#!/usr/bin/env python3
"""Merge openexpert and PyTorch-anchor runtime results into one JSON file and a Markdown table.

How to run (run.sh does this for you; standard library only):

    python3 benches/compare/summarise.py --threads 2 \
        --rust rust-1.json rust-2.json --anchor anchor-1.json anchor-2.json \
        [--loadavg load-rust-1 ...] --json results/runtime-DATE.json --md results/runtime-DATE.md

Each input JSON follows benches/compare/runtime-schema.json (score_tokens_per_s, decode_tokens_per_s,
embed_sentences_per_s, threads, runs {metric: [per-run throughputs]}, seconds {workload: [...]}). For each side the raw runs of all rounds are pooled and
their median is reported; ratio = ours / theirs (openexpert median / PyTorch median), so a ratio
above 1 means openexpert is faster.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

METRICS = [
    ("score_tokens_per_s", "scoring, 8 x 256 teacher-forced (tokens/s)"),
    ("decode_tokens_per_s", "greedy decode, batch 1, 32 + 64 tokens (new tokens/s)"),
    ("embed_sentences_per_s", "MiniLM embeddings, 256 x ~30 tokens, batch 64 (sentences/s)"),
]


SCHEMA = json.loads((Path(__file__).parent / "runtime-schema.json").read_text())


def load(paths: list[Path], side: str, threads: int) -> list[dict]:
    out = []
    for p in paths:
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            sys.exit(f"error: cannot read {side} result {p}: {e}")
        missing = [k for k in SCHEMA["required"] if k not in d]
        missing += [f"runs.{k}" for k in SCHEMA["metrics"] if k not in d.get("runs", {})]
        if missing:
            sys.exit(f"error: {side} result {p} lacks the keys {missing}; expected the bench-runtime JSON format")
        if d["threads"] != threads:
            sys.exit(f"error: {side} result {p} ran with threads={d['threads']}, expected {threads}")
        out.append(d)
    if not out:
        sys.exit(f"error: no {side} result files given")
    return out


def pooled(results: list[dict], key: str) -> list[float]:
    vals = [float(v) for r in results for v in r["runs"][key]]
    if not vals or any(v <= 0 for v in vals):
        sys.exit(f"error: {key} runs must be positive numbers, found {vals}")
    return vals


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--rust", type=Path, nargs="+", required=True, help="openexpert bench-runtime JSON files")
    ap.add_argument("--anchor", type=Path, nargs="+", required=True, help="anchor_runtime.py JSON files")
    ap.add_argument("--loadavg", type=Path, nargs="*", default=[], help="1-minute load averages sampled per run")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--md", type=Path, required=True)
    args = ap.parse_args()

    ours = load(args.rust, "openexpert", args.threads)
    theirs = load(args.anchor, "anchor", args.threads)
    loads = {p.name: float(p.read_text().split()[0]) for p in args.loadavg}

    rows = {}
    for key, label in METRICS:
        o, t = pooled(ours, key), pooled(theirs, key)
        mo, mt = statistics.median(o), statistics.median(t)
        rows[key] = {
            "label": label,
            "ours_median": mo,
            "theirs_median": mt,
            "ratio_ours_over_theirs": mo / mt,
            "ours_round_medians": [float(r[key]) for r in ours],
            "theirs_round_medians": [float(r[key]) for r in theirs],
            "ours_runs": o,
            "theirs_runs": t,
        }

    # What openexpert's decoding multiplied by (`--decode-weights`; f32 in runs that predate it).
    decode_weights = ours[0].get("decode_weights", "f32")
    precision = (
        "f32 on CPU"
        if decode_weights == "f32"
        else f"f32 on CPU, except openexpert's decoding, which multiplies by {decode_weights} weights"
    )
    now = datetime.now(timezone.utc)
    summary = {
        "date_utc": now.isoformat(timespec="seconds"),
        "threads": args.threads,
        "cpu": cpu_model(),
        "loadavg_1min_before_each_run": loads,
        "metrics": rows,
        "anchor_versions": theirs[0].get("versions", {}),
        "raw": {"openexpert": ours, "anchor": theirs},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(summary, indent=1) + "\n")

    lines = [
        f"# Runtime: openexpert vs PyTorch ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        f"threads = {args.threads}, CPU: {cpu_model()}, rounds: {len(ours)} openexpert / {len(theirs)} PyTorch "
        f"(alternating), {precision}.",
        "",
        "| workload | openexpert (median) | PyTorch (median) | ratio ours/theirs |",
        "|---|---:|---:|---:|",
    ]
    for key, row in rows.items():
        lines.append(
            f"| {row['label']} | {row['ours_median']:.2f} | {row['theirs_median']:.2f} | "
            f"{row['ratio_ours_over_theirs']:.2f}x |"
        )
    lines += [
        "",
        "Ratio > 1: openexpert is faster. Medians pool the raw runs of all rounds.",
    ]
    if loads:
        lines.append(
            "1-minute load average before each run: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(loads.items()))
        )
    args.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
