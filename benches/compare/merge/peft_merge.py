#!/usr/bin/env python3
"""PEFT anchor of the merge benchmark (benches/compare/merge/run.sh runs it; see there).

    python benches/compare/merge/peft_merge.py gen   --base BASE_DIR_OR_GGUF --out ADAPTERS_DIR [--n 8]
    python benches/compare/merge/peft_merge.py merge --base BASE_DIR --adapters ADAPTERS_DIR \
        --out OUT_DIR --method ties [--density 0.5] [--json timings.json]

`gen` writes N random PEFT LoRA adapters (init_lora_weights=False, r=8, alpha=16, q/k/v/o + MLP
projections of every layer, B shrunk so ΔW is a small perturbation) with the real peft library.
`merge` is the PEFT way to merge them: load the base (`from_pretrained`, f32), load the adapters
(`PeftModel.from_pretrained` + `load_adapter`), `add_weighted_adapter(..., combination_type=method,
density=...)` with equal weights, `merge_and_unload`, `save_pretrained`. Phase timings go to --json;
the wall time and peak RSS of the whole process are measured by the caller.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

T_START = time.perf_counter()

import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

T_IMPORT = time.perf_counter() - T_START
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def load_base(base):
    """An HF directory, or a .gguf file (transformers de-quantises it)."""
    p = Path(base)
    if p.suffix == ".gguf":
        return AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)


def gen(args):
    out = Path(args.out)
    for i in range(args.n):
        base = load_base(args.base)
        torch.manual_seed(7000 + i)
        cfg = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False,
                         lora_dropout=0.0, task_type="CAUSAL_LM")
        pm = get_peft_model(base, cfg)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.mul_(0.05)
        d = out / f"adapter_{i}"
        if d.exists():
            shutil.rmtree(d)
        pm.save_pretrained(d)
        print("wrote", d)


@torch.no_grad()
def merge(args):
    t = {"import_s": T_IMPORT}
    t0 = time.perf_counter()
    base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    t["load_base_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dirs = sorted(p for p in Path(args.adapters).iterdir() if (p / "adapter_config.json").is_file())
    names = [d.name for d in dirs]
    pm = PeftModel.from_pretrained(base, dirs[0], adapter_name=names[0])
    for d, n in zip(dirs[1:], names[1:]):
        pm.load_adapter(d, adapter_name=n)
    t["load_adapters_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    kw = {"density": args.density} if args.method not in ("linear", "cat", "svd") else {}
    pm.add_weighted_adapter(names, [1.0] * len(names), "merged", combination_type=args.method, **kw)
    pm.set_adapter("merged")
    t["combine_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    merged = pm.merge_and_unload()
    t["merge_and_unload_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    merged.save_pretrained(args.out)
    t["save_s"] = time.perf_counter() - t0
    t["total_in_process_s"] = time.perf_counter() - T_START
    t["adapters"] = len(names)
    t["method"] = args.method
    t["threads"] = torch.get_num_threads()
    if args.json:
        Path(args.json).write_text(json.dumps(t, indent=1))
    print(json.dumps(t))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["gen", "merge"])
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--adapters")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--method", default="ties")
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--json")
    args = ap.parse_args()
    gen(args) if args.cmd == "gen" else merge(args)


if __name__ == "__main__":
    main()
