#!/usr/bin/env python3
"""PyTorch + PEFT anchor for LoRA training throughput (the "theirs" column of the training bench).

How to run (from the repository root):

    . ~/.cache/pyref/venv/bin/activate          # see scripts/requirements-fixtures.txt
    python benches/compare/train/anchor_train.py [--threads 2] [--steps 10] [--warmup 2] \
        [--json benches/compare/results/train_peft.json]

Workload: SmolLM2-135M-Instruct (transformers, from the Q4_1 GGUF de-quantised to f32, CPU) with a
PEFT LoRA adapter r=8, lora_alpha=16, lora_dropout=0.0, on q_proj and v_proj of every layer (the
base weights frozen). One training step = forward over a batch of 4 x 128 token ids + causal-LM
cross-entropy over all 4 x 127 next-token targets (mean) + backward + AdamW step (lr 1e-4) +
zero_grad. The ids are deterministic:

    ids[b][t] = ((b * 128 + t) * 7919 + 13) % 49152        (b < 4, t < 128)

--warmup steps (default 2) are run and discarded, then --steps (default 10) are timed one by one
with time.perf_counter. tokens_per_s = 4 * 128 / median(step_seconds) (input tokens per second).
peak_rss_mb = the process's peak resident set size (getrusage ru_maxrss) at the end, which
includes loading the model. torch.set_num_threads(--threads), set_num_interop_threads(1).

Output JSON: {tokens_per_s, peak_rss_mb, step_seconds: [...], threads, batch, seq_len, lora: {...},
losses: [...], load_avg_before, env, versions, impl}. Run on an idle machine (see
benches/compare/README.md on OMP busy-waiting under load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import bank_chat  # noqa: E402

BATCH, SEQ, VOCAB = 4, 128, 49152
R, ALPHA, TARGETS = 8, 16, ["q_proj", "v_proj"]


def batch_ids() -> torch.Tensor:
    return torch.tensor([[((b * SEQ + t) * 7919 + 13) % VOCAB for t in range(SEQ)] for b in range(BATCH)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "benches" / "compare" / "results" / "train_peft.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    from peft import LoraConfig, get_peft_model

    load_before = os.getloadavg()[0]
    model = get_peft_model(
        bank_chat.load_model(),
        LoraConfig(task_type="CAUSAL_LM", r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=TARGETS),
    )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = batch_ids()

    def step() -> float:
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    for _ in range(args.warmup):
        step()
    seconds, losses = [], []
    for i in range(args.steps):
        t0 = time.perf_counter()
        losses.append(step())
        seconds.append(time.perf_counter() - t0)
        print(f"step {i}: {seconds[-1]:.3f} s, loss {losses[-1]:.4f}", flush=True)
    med = statistics.median(seconds)
    out = {
        "impl": "pytorch+peft",
        "tokens_per_s": BATCH * SEQ / med,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "step_seconds": seconds,
        "median_step_seconds": med,
        "threads": args.threads,
        "batch": BATCH,
        "seq_len": SEQ,
        "warmup_steps": args.warmup,
        "lora": {"r": R, "lora_alpha": ALPHA, "lora_dropout": 0.0, "target_modules": TARGETS,
                 "trainable_params": sum(p.numel() for p in params)},
        "optimizer": "AdamW lr 1e-4",
        "losses": losses,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg()[0],
        "env": {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS") if k in os.environ},
        "versions": {"torch": torch.__version__, "transformers": version("transformers"), "peft": version("peft")},
        "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"),
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)
    print(json.dumps({k: out[k] for k in ("tokens_per_s", "peak_rss_mb", "median_step_seconds")}))


if __name__ == "__main__":
    main()
