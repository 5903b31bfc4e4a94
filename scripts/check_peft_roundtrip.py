#!/usr/bin/env python3
"""Check that adapter directories written by `lora-zoo` load in the real `peft` library unchanged.

How to run (from the repository root):

    export CARGO_TARGET_DIR=~/.cache/oe-target-lz
    LORA_ZOO_EXPORT_DIR=/tmp/lz_export cargo test --release -p lora-zoo --test peft_fixtures \
        written_adapters_reload_identically_and_export_for_peft
    . ~/.cache/pyref/venv/bin/activate
    python scripts/check_peft_roundtrip.py /tmp/lz_export

The Rust test writes one PEFT directory per case plus `expected.json` ({case: {source, scales}}).
For every case this script, on SmolLM2-135M-Instruct (GGUF, f32):
  1. loads the directory with `PeftModel.load_adapter` and requires no missing / unexpected keys;
  2. requires PEFT's lora_A / lora_B weights to equal the file's tensors bit for bit, and PEFT's
     per-module `scaling` (from r, lora_alpha, rank_pattern, alpha_pattern, use_rslora) to equal the
     scale lora-zoo holds for that module (within 1e-6 relative);
  3. for round-trip copies of a fixture (`source` set), requires PEFT's logits with the written copy
     to equal those with the original fixture (max |diff| <= 1e-5).
Exits with status 1 on any failure.
"""

import json
import os
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "lora-zoo" / "tests" / "fixtures" / "adapters"
PROMPT_IDS = [1, 504, 3458, 282, 4649, 314, 253, 2030]


def main():
    export = Path(sys.argv[1])
    model_dir = Path(os.path.expanduser("~/.cache/openexpert/models/smollm2-135m-instruct"))
    expected = json.loads((export / "expected.json").read_text())
    torch.set_grad_enabled(False)
    base = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32
    ).eval()
    names = list(expected)
    pm = None
    failures = []
    for name in names:
        d = export / name
        if pm is None:
            pm = PeftModel.from_pretrained(base, d, adapter_name=name)
            res = None
        else:
            res = pm.load_adapter(d, adapter_name=name)
        if res is not None:
            missing = [k for k in res.missing_keys if f".{name}." in k and "lora_" in k]
            if missing or res.unexpected_keys:
                failures.append(f"{name}: missing {missing[:3]} unexpected {res.unexpected_keys[:3]}")
        tensors = load_file(d / "adapter_model.safetensors")
        scales = expected[name]["scales"]
        seen = 0
        worst_w, worst_s = 0.0, 0.0
        for mod_name, mod in pm.named_modules():
            if not hasattr(mod, "lora_A") or name not in mod.lora_A:
                continue
            key = mod_name.removeprefix("base_model.model.")
            if key not in scales:
                failures.append(f"{name}: peft put an adapter on {key}, which lora-zoo did not write")
                continue
            seen += 1
            a = tensors[f"base_model.model.{key}.lora_A.weight"]
            b = tensors[f"base_model.model.{key}.lora_B.weight"]
            worst_w = max(worst_w, (mod.lora_A[name].weight - a).abs().max().item(),
                          (mod.lora_B[name].weight - b).abs().max().item())
            s = mod.scaling[name]
            worst_s = max(worst_s, abs(s - scales[key]) / max(abs(scales[key]), 1e-12))
        if seen != len(scales):
            failures.append(f"{name}: peft adapted {seen} modules, lora-zoo wrote {len(scales)}")
        if worst_w != 0.0 or worst_s > 1e-6:
            failures.append(f"{name}: weight diff {worst_w}, relative scale diff {worst_s}")
        line = f"{name}: {seen} modules, weights max|diff| {worst_w:.1e}, scale rel diff {worst_s:.1e}"
        src = expected[name].get("source")
        if src:
            ids = torch.tensor([PROMPT_IDS])
            pm.set_adapter(name)
            ours = pm(ids).logits
            pm.load_adapter(FIXTURES / src, adapter_name="src_" + src)
            pm.set_adapter("src_" + src)
            theirs = pm(ids).logits
            diff = (ours - theirs).abs().max().item()
            line += f", logits vs original fixture max|diff| {diff:.1e}"
            if diff > 1e-5:
                failures.append(f"{name}: logits differ from {src} by {diff}")
        print(line)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"OK: {len(names)} adapter directories load in peft with identical weights and scales")


if __name__ == "__main__":
    main()
