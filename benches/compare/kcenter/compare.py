"""Side-by-side k-center greedy benchmark: DiverseEvol-style full-matrix PyTorch vs a PyTorch running-min rewrite vs
data-select (Rust).

Run from the repository root (2-core machine, nothing else running, ~5 minutes):
    . ~/.cache/pyref/venv/bin/activate
    cargo build --release -p data-select --example kcenter_bench
    python benches/compare/kcenter/compare.py --bin $CARGO_TARGET_DIR/release/examples/kcenter_bench \
        [--n 20000 --d 576 --k 1000 --labeled 100 --repeats 3 --ref-repeats 1] [--big]

Data: standard-normal float32 rows (seed 0), labelled = 100 rows drawn without replacement (seed 1). Every
implementation runs in its own process under /usr/bin/time -v; times are the selection only (median over repeats,
data loading excluded), peak RSS is the whole process's maximum resident set. Picks are compared across the three
(the reference's set, the running-min and Rust pick orders). --big also runs Rust alone on 100k x 576, k = 5000.
Results are printed as a markdown table and written to results.json next to this script (or --results). The torch
runs use BENCH_THREADS threads (default 2).
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "scripts"))


def make_data(workdir, n, d, n_lab):
    import numpy as np

    emb_path = os.path.join(workdir, f"emb_{n}x{d}.npy")
    lab_path = os.path.join(workdir, f"lab_{n}_{n_lab}.json")
    if not os.path.exists(emb_path):
        rng = np.random.default_rng(0)
        emb = np.empty((n, d), dtype=np.float32)
        for i in range(0, n, 10000):
            emb[i:i + 10000] = rng.standard_normal((min(10000, n - i), d), dtype=np.float32)
        np.save(emb_path, emb)
    if not os.path.exists(lab_path):
        lab = sorted(int(i) for i in np.random.default_rng(1).choice(n, n_lab, replace=False))
        with open(lab_path, "w") as f:
            json.dump(lab, f)
    return emb_path, lab_path


def worker(kind, emb_path, lab_path, k, repeats, picks_out):
    """Runs one Python implementation inside this process and prints a JSON line."""
    import numpy as np
    import torch

    from kcenter_reference import reference_kcenter, running_min_kcenter

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    emb = torch.from_numpy(np.load(emb_path))
    with open(lab_path) as f:
        lab = json.load(f)
    times, picks = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        if kind == "reference":
            mask = torch.zeros(emb.shape[0], dtype=torch.bool)
            mask[lab] = True
            picks, _ = reference_kcenter(emb, mask, k)
        else:
            picks = running_min_kcenter(emb, lab, k)
        times.append(time.perf_counter() - t0)
    with open(picks_out, "w") as f:
        json.dump(picks, f)
    print(json.dumps({"impl": kind, "times_s": times, "median_s": statistics.median(times)}))


def timed(cmd):
    """Runs cmd under /usr/bin/time -v; returns (last stdout JSON line, peak RSS MB)."""
    proc = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    cpu = sum(float(re.search(rf"{k} time \(seconds\): ([\d.]+)", proc.stderr).group(1)) for k in ("User", "System"))
    line = [l for l in proc.stdout.splitlines() if l.startswith("{")][-1]
    res = json.loads(line)
    res["process_cpu_s"] = cpu
    return res, rss_kb / 1024.0


def explain_divergence(emb_path, lab_path, a, b):
    """First position where two pick orders differ, with both candidates' exact (float64) min-distances."""
    import numpy as np

    i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
    if i is None:
        return None
    e = np.load(emb_path).astype(np.float64)
    with open(lab_path) as f:
        centers = e[json.load(f) + a[:i]]
    exact = {}
    for q in (a[i], b[i]):
        exact[q] = float(np.sqrt(((e[q] - centers) ** 2).sum(axis=1)).min())
    return {"position": i, "rust_pick": a[i], "other_pick": b[i], "exact_min_distance": exact,
            "exact_winner": max(exact, key=lambda q: (exact[q], -q))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="path to the kcenter_bench example binary")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--labeled", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-repeats", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/kcenter_bench")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--results", default=os.path.join(HERE, "results.json"), help="where to write the JSON results")
    ap.add_argument("--worker", nargs=5, metavar=("KIND", "EMB", "LAB", "K", "REPEATS"), help=argparse.SUPPRESS)
    ap.add_argument("--picks-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, emb, lab, k, rep = args.worker
        worker(kind, emb, lab, int(k), int(rep), args.picks_out)
        return

    os.makedirs(args.workdir, exist_ok=True)
    emb, lab = make_data(args.workdir, args.n, args.d, args.labeled)
    load0 = os.getloadavg()
    rows = []
    picks = {}
    runs = [("rust", args.repeats)]
    runs.append(("running_min", args.repeats))
    if not args.skip_reference:
        runs.append(("reference", args.ref_repeats))
    for kind, rep in runs:
        out = os.path.join(args.workdir, f"picks_{kind}.json")
        if kind == "rust":
            cmd = [args.bin, emb, lab, str(args.k), str(rep), "lazy", out]
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "--bin", args.bin, "--worker", kind, emb, lab,
                   str(args.k), str(rep), "--picks-out", out]
        res, rss = timed(cmd)
        res["peak_rss_mb"] = rss
        with open(out) as f:
            picks[kind] = json.load(f)
        rows.append(res)
        print(f"{kind}: median {res['median_s']:.3f} s, peak RSS {rss:.0f} MB", flush=True)

    same_order = picks["rust"] == picks["running_min"]
    same_set_ref = ("reference" not in picks) or sorted(picks["rust"]) == sorted(picks["reference"])
    same_order_ref = ("reference" not in picks) or picks["rust"] == picks["reference"]
    ref_vs_rm = ("reference" not in picks) or picks["reference"] == picks["running_min"]
    rust = next(r for r in rows if r["impl"].startswith("rust"))
    print(f"\n{args.n} x {args.d} f32, k = {args.k} from {args.labeled} labelled\n")
    print(f"load average before the run: {load0}")
    print("| implementation | median time (s) | peak RSS (MB) | process CPU s (all repeats + load) | rust speed-up |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['impl']} | {r['median_s']:.3f} | {r['peak_rss_mb']:.0f} | {r['process_cpu_s']:.1f} | "
              f"{r['median_s'] / rust['median_s']:.1f}x |")
    print(f"\npick order rust == running-min: {same_order}; rust == reference: {same_order_ref}; "
          f"reference == running-min: {ref_vs_rm}; same set rust vs reference: {same_set_ref}")
    rust_key = next(k for k in picks if k == "rust")
    div = None if same_order else explain_divergence(emb, lab, picks[rust_key], picks["running_min"])
    if div:
        print(f"first order divergence: {div}")
    result = {"load_average_before": load0, "n": args.n, "d": args.d, "k": args.k, "labeled": args.labeled, "rows": rows,
              "same_order_running_min": same_order, "same_order_reference": same_order_ref,
              "reference_vs_running_min_order": ref_vs_rm, "first_divergence": div, "same_set_reference": same_set_ref}

    if args.big:
        emb_b, lab_b = make_data(args.workdir, 100000, args.d, args.labeled)
        out = os.path.join(args.workdir, "picks_rust_big.json")
        res, rss = timed([args.bin, emb_b, lab_b, "5000", "1", "lazy", out])
        res["peak_rss_mb"] = rss
        result["big"] = res
        print(f"\nrust 100000 x {args.d}, k = 5000: {res['median_s']:.2f} s, peak RSS {rss:.0f} MB")

    result["torch_threads"] = int(os.environ.get("BENCH_THREADS", "2"))
    with open(args.results, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
