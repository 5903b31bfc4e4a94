#!/usr/bin/env python3
"""Check that an adapter written by `openexpert train` loads in the real `peft` library and gives
the same logits as openexpert's own (unmerged) forward.

How to run (from the repository root; needs the release binary and the reference venv):

    cargo build --release -p openexpert
    . ~/.cache/pyref/venv/bin/activate
    python scripts/check_trained_adapter_peft.py ADAPTER_DIR [ADAPTER_DIR ...] [--out RESULT.json]

For every directory, on SmolLM2-135M-Instruct (GGUF, de-quantised to f32 by transformers):
  1. `PeftModel.from_pretrained` must load it with no missing or unexpected LoRA keys;
  2. for a few digit-free prompts (transformers' GGUF tokenizer differs from SmolLM2's real one only
     on digit runs) the last-position logits of peft are compared with those of
     `openexpert score --adapter DIR --dump-logits` on the same text; max |diff| must be <= 1e-3.
Writes a JSON summary (default benches/compare/results/trained_adapter_peft.json); exit 1 on failure.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))
MODEL_DIR = HOME / "models" / "smollm2-135m-instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BINARY = TARGET / "release" / "openexpert"
PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nReverse the words: red blue green<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea,",
]


def ours(adapter: Path) -> torch.Tensor:
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.jsonl"
        inp.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS))
        logits = Path(tmp) / "logits.safetensors"
        subprocess.run(
            [str(BINARY), "score", "--input", str(inp), "--output", str(Path(tmp) / "out.jsonl"),
             "--adapter", str(adapter), "--dump-logits", str(logits)],
            check=True,
        )
        return load_file(str(logits))["logits"]


def main():
    args = sys.argv[1:]
    out = ROOT / "benches" / "compare" / "results" / "trained_adapter_peft.json"
    if "--out" in args:
        i = args.index("--out")
        out = Path(args[i + 1])
        del args[i : i + 2]
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=GGUF)
    results = {}
    ok = True
    for d in map(Path, args):
        base = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=GGUF, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(d))
        model.eval()
        n_lora = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
        theirs = []
        with torch.no_grad():
            for p in PROMPTS:
                ids = tok(p, return_tensors="pt", add_special_tokens=False).input_ids
                theirs.append(model(ids).logits[0, -1].float())
        theirs = torch.stack(theirs)
        mine = ours(d)
        diff = (theirs - mine).abs().max().item()
        same_top = bool((theirs.argmax(-1) == mine.argmax(-1)).all())
        results[str(d)] = {"lora_tensors_loaded": n_lora, "max_abs_logit_diff": diff, "same_argmax": same_top}
        print(f"{d}: {n_lora} LoRA tensors loaded by peft, max |logit diff| {diff:.2e}, same argmax {same_top}")
        ok &= diff <= 1e-3 and n_lora > 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"prompts": PROMPTS, "adapters": results, "ok": ok}, indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
