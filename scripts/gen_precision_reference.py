#!/usr/bin/env python3
"""Reference for lm-core's mixed precision: SmolLM2 evaluated by transformers in bf16 and f16.

How to run (from the repository root, once; the output is committed):

    . ~/.cache/pyref/venv/bin/activate          # see scripts/gen_reference_fixtures.py
    python scripts/gen_precision_reference.py

Input: the SmolLM2 GGUF (sha256-verified) and the prompts of
crates/lm-core/tests/fixtures/smollm2/reference.json (their token ids are reused as they are).

Output: crates/lm-core/tests/fixtures/smollm2/precision.json with, for each of bfloat16 and
float16, the per-token log-probs of every prompt computed by transformers with the whole model
cast to that dtype (`model.to(dtype)`, eager attention: softmax in float32, as transformers'
`eager_attention_forward`), and how far they are from the float32 log-probs of the same
prompts (max and mean absolute deviation, top-1 agreement of the next-token argmax).

The Rust test (crates/lm-core/tests/precision_smollm2.rs) holds openexpert's f16/bf16 to the
same distance from float32 as PyTorch's, which is the meaningful bar: bitwise agreement
between two bf16 implementations is not expected (different accumulation orders, and
openexpert keeps the norm weights in f32 where `model.to(dtype)` rounds them).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_reference_fixtures import (  # noqa: E402
    SMOLLM2_DIR_NAME,
    SMOLLM2_GGUF,
    SMOLLM2_SHA256,
    openexpert_home,
    round_list,
    verify_sha256,
    versions,
    write_json,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_DIR = REPO_ROOT / "crates/lm-core/tests/fixtures/smollm2"
DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


def logprobs_and_argmax(model, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(ids[t] | ids[<t]) for t = 1..n-1 (float32), and the argmax of every position."""
    x = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=x).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return logp[:-1].gather(1, x[0, 1:].unsqueeze(1)).squeeze(1), logits.argmax(-1)


def main() -> None:
    from transformers import AutoModelForCausalLM

    model_dir = openexpert_home() / "models" / SMOLLM2_DIR_NAME
    verify_sha256(model_dir / SMOLLM2_GGUF, SMOLLM2_SHA256)
    base = AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32, attn_implementation="eager"
    )
    base.eval()
    reference = json.loads((FIXTURE_DIR / "reference.json").read_text())
    prompts = reference["prompts"]

    f32 = []
    for p in prompts:
        lp, top = logprobs_and_argmax(base, p["ids"])
        drift = float((lp - torch.tensor(p["token_logprobs"])).abs().max())
        assert drift < 1e-4, f"{p['name']}: f32 log-probs drifted from reference.json by {drift}"
        f32.append((lp, top))

    out = {
        "generator": "scripts/gen_precision_reference.py, helpers from " + versions(),
        "model_file": SMOLLM2_GGUF,
        "model_sha256": SMOLLM2_SHA256,
        "method": "model.to(dtype), eager attention (softmax in float32), logits cast to float32 "
        "before log_softmax; deviations against the float32 model on the same ids",
        "dtypes": {},
    }
    for name, dtype in DTYPES.items():
        model = copy.deepcopy(base).to(dtype)
        rows, worst, total, count, agree, positions = [], 0.0, 0.0, 0, 0, 0
        for p, (lp32, top32) in zip(prompts, f32):
            lp, top = logprobs_and_argmax(model, p["ids"])
            dev = (lp - lp32).abs()
            worst = max(worst, float(dev.max()))
            total += float(dev.sum())
            count += dev.numel()
            agree += int((top == top32).sum())
            positions += top.numel()
            rows.append({"name": p["name"], "token_logprobs": round_list(lp.tolist())})
        summary = {
            "max_abs_vs_f32": worst,
            "mean_abs_vs_f32": total / count,
            "top1_agreement": agree / positions,
            "positions": positions,
        }
        print(f"{name}: {summary}")
        out["dtypes"][name] = {**summary, "prompts": rows}
    write_json(FIXTURE_DIR / "precision.json", out)


if __name__ == "__main__":
    main()
