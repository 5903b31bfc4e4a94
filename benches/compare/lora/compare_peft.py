#!/usr/bin/env python3
"""Side-by-side timings: lora-zoo (Rust) vs PEFT / a torch re-implementation of the Rocket criterion.

How to run (from the repository root):

    export CARGO_TARGET_DIR=~/.cache/oe-target-lz
    cargo build --release -p openexpert
    . ~/.cache/pyref/venv/bin/activate
    python benches/compare/lora/compare_peft.py [--bin $CARGO_TARGET_DIR/release/openexpert] \
        [--json benches/compare/lora/results.json]

Cases (random PEFT adapters written with numpy + safetensors in a temporary directory):
  1. combine: 8 adapters, rank 8, all 7 linear layers of the 30 SmolLM2-135M blocks (210 modules).
     PEFT: `add_weighted_adapter(..., combination_type="ties_svd", density=0.5, svd_rank=8)` and
     `"svd"` (svd_rank=8) on the GGUF model loaded in f32 (model loading not timed); ours:
     `lora combine --method ties|svd --rank 8` end to end (reading 8 adapters, writing the result).
  2. similarity: 64 adapters, rank 8, q_proj + v_proj on 30 layers. Reference: the Rocket criterion in
     torch (adapters loaded once, per-pair per-tensor cosine as in group_diversity.py, and a vectorised
     Gram version); ours: `lora similarity --mode rocket|delta` end to end (loading included).
Wall times are best of `--repeat` runs; the machine may be shared, so CPU times are reported too.
With `--skip-peft`, an existing `--json` file keeps its PEFT entries and gets everything else replaced
(the adapters are generated from the same seed, so the inputs are identical).
"""

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[3]
SHAPES = {  # module -> (d_in, d_out)
    "self_attn.q_proj": (576, 576),
    "self_attn.k_proj": (576, 192),
    "self_attn.v_proj": (576, 192),
    "self_attn.o_proj": (576, 576),
    "mlp.gate_proj": (576, 1536),
    "mlp.up_proj": (576, 1536),
    "mlp.down_proj": (1536, 576),
}


def write_adapter(d: Path, rng, modules, rank=8, alpha=16.0):
    d.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for l in range(30):
        for m in modules:
            d_in, d_out = SHAPES[m]
            key = f"base_model.model.model.layers.{l}.{m}"
            tensors[key + ".lora_A.weight"] = (rng.standard_normal((rank, d_in)) / np.sqrt(d_in)).astype(np.float32)
            tensors[key + ".lora_B.weight"] = (0.01 * rng.standard_normal((d_out, rank))).astype(np.float32)
    save_file(tensors, str(d / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = dict(peft_type="LORA", task_type="CAUSAL_LM", r=rank, lora_alpha=alpha, lora_dropout=0.0,
               target_modules=sorted({m.split(".")[-1] for m in modules}), bias="none",
               base_model_name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct", fan_in_fan_out=False,
               use_rslora=False, init_lora_weights=True, inference_mode=True)
    (d / "adapter_config.json").write_text(json.dumps(cfg))


def run_ours(bin_path, args, repeat):
    best, cpu = None, None
    for _ in range(repeat):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run([bin_path, "lora", *args], check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        if best is None or wall < best:
            best, cpu = wall, c
    return best, cpu


def timed(fn, repeat=1):
    best, cpu = None, None
    for _ in range(repeat):
        c0 = time.process_time()
        t = time.perf_counter()
        out = fn()
        wall = time.perf_counter() - t
        c = time.process_time() - c0
        if best is None or wall < best:
            best, cpu = wall, c
    return best, cpu, out


def rocket_pairwise(adapters):
    n = len(adapters)
    keys = sorted(adapters[0])
    sim = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            s = 0.0
            for k in keys:
                s += abs(torch.nn.functional.cosine_similarity(
                    adapters[i][k].flatten(), adapters[j][k].flatten(), dim=0, eps=1e-8).item())
            sim[i, j] = sim[j, i] = s
    return sim


def rocket_gram(adapters):
    n = len(adapters)
    sim = torch.zeros(n, n, dtype=torch.float64)
    for k in sorted(adapters[0]):
        x = torch.stack([a[k].flatten() for a in adapters])
        g = x @ x.T
        nrm = g.diagonal().sqrt()
        sim += (g / torch.clamp(nrm[:, None] * nrm[None, :], min=1e-8)).abs().double()
    sim.fill_diagonal_(float(len(adapters[0])))
    return sim


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    tgt = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    ap.add_argument("--bin", default=str(Path(tgt) / "release" / "openexpert"))
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-peft", action="store_true")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    results = {"threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        # --- combine ---------------------------------------------------------------------------
        names = [f"ad{i}" for i in range(8)]
        for n in names:
            write_adapter(tmp / "comb" / n, rng, list(SHAPES))
        dirs = ",".join(str(tmp / "comb" / n) for n in names)
        w = ",".join(["0.125"] * 8)
        for method in ["ties", "svd"]:
            wall, cpu = run_ours(args.bin, ["combine", "--method", method, "--adapter", dirs, "--adapter-weight", w,
                                           "--rank", "8", "--density", "0.5", "--output", str(tmp / f"out_{method}")],
                                 args.repeat)
            results[f"ours_combine_{method}_8x210"] = {"wall_s": wall, "cpu_s": cpu}
            print(f"ours  combine {method:4s} 8 adapters x 210 modules: wall {wall:.2f} s, cpu {cpu:.2f} s")
        if not args.skip_peft:
            from peft import PeftModel
            from transformers import AutoModelForCausalLM
            model_dir = Path(os.path.expanduser("~/.cache/openexpert/models/smollm2-135m-instruct"))
            base = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                                        dtype=torch.float32)
            pm = PeftModel.from_pretrained(base, tmp / "comb" / names[0], adapter_name=names[0])
            for n in names[1:]:
                pm.load_adapter(tmp / "comb" / n, adapter_name=n)
            for ctype in ["ties_svd", "svd"]:
                def go(ctype=ctype):
                    pm.add_weighted_adapter(names, [0.125] * 8, f"m_{ctype}", combination_type=ctype,
                                            svd_rank=8, density=0.5)
                    pm.delete_adapter(f"m_{ctype}")
                wall, cpu, _ = timed(go)
                results[f"peft_{ctype}_8x210"] = {"wall_s": wall, "cpu_s": cpu}
                print(f"peft  add_weighted_adapter {ctype}: wall {wall:.2f} s, cpu {cpu:.2f} s")
            del pm, base
        # --- similarity --------------------------------------------------------------------------
        for i in range(64):
            write_adapter(tmp / "bank" / f"ad{i:02d}", rng, ["self_attn.q_proj", "self_attn.v_proj"])
        for mode in ["delta", "rocket"]:
            wall, cpu = run_ours(args.bin, ["similarity", "--bank", str(tmp / "bank"), "--mode", mode,
                                           "--output", str(tmp / f"sim_{mode}.json")], args.repeat)
            results[f"ours_similarity_{mode}_64"] = {"wall_s": wall, "cpu_s": cpu}
            print(f"ours  similarity {mode:6s} 64 adapters (incl. loading): wall {wall:.2f} s, cpu {cpu:.2f} s")
        t0 = time.perf_counter()
        ads = [load_file(str(tmp / "bank" / f"ad{i:02d}" / "adapter_model.safetensors")) for i in range(64)]
        load_s = time.perf_counter() - t0
        wall, cpu, ref = timed(lambda: rocket_gram(ads))
        results["torch_rocket_gram_64"] = {"wall_s": wall + load_s, "cpu_s": cpu}
        print(f"torch rocket (vectorised Gram, load once): wall {wall + load_s:.2f} s (load {load_s:.2f} s)")
        wall, cpu, ref2 = timed(lambda: rocket_pairwise(ads[:16]))
        pairs64, pairs16 = 64 * 63 / 2, 16 * 15 / 2
        results["torch_rocket_pairwise_64_extrapolated"] = {"wall_s": wall * pairs64 / pairs16 + load_s}
        print(f"torch rocket (pairwise like group_diversity.py, 16 adapters {wall:.2f} s) -> 64: "
              f"~{wall * pairs64 / pairs16 + load_s:.1f} s")
        ours = json.loads((tmp / "sim_rocket.json").read_text())["matrix"]
        diff = float((torch.tensor(ours, dtype=torch.float64) - ref).abs().max())
        results["rocket_max_abs_diff_vs_torch"] = diff
        print(f"rocket matrix: max |ours - torch| = {diff:.2e}")
    if args.json:
        out = Path(args.json)
        if args.skip_peft and out.exists():
            # keep the (slow) PEFT timings of an earlier run, replace everything measured now
            old = json.loads(out.read_text())
            old.update(results)
            results = old
        out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
