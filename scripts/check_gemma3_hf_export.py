#!/usr/bin/env python3
"""Checks a Gemma 3 checkpoint written by `openexpert lora merge` with the real transformers / peft.

How to run (from the repository root; gemma3-270m fetched, an adapter trained on it):

    openexpert train --model gemma3-270m --format plain --data D/train.jsonl --max-steps 4 --output A
    openexpert lora merge --model gemma3-270m --adapter A --output MERGED
    . ~/.cache/pyref/venv/bin/activate
    python scripts/check_gemma3_hf_export.py MERGED A [--json RESULT.json]

1. `AutoTokenizer.from_pretrained(MERGED)` (lm-core's SentencePiece tokenizer, serialised) gives the
   ids of transformers' own GGUF tokenizer on the texts of tests/fixtures/gemma3/tokenizer.json
   (BOS added by the exported post-processor) and decodes them back to the same text;
2. `AutoModelForCausalLM.from_pretrained(MERGED)` (config.json `Gemma3ForCausalLM`, HF names,
   norms without llama.cpp's +1) gives the same last-position logits as transformers' GGUF base with
   the adapter applied unmerged by `PeftModel`, within 1e-3.
Writes a JSON summary (default benches/compare/results/hf_export_gemma3.json); exit 1 on failure.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))
DIR = HOME / "models" / "gemma3-270m"
FILE = "gemma-3-270m-q4_k_m.gguf"
PROMPTS = ["The capital of France is", "Ein kleiner Hund läuft über die Straße, und",
           "State the final answer to the following arithmetic problem: 12 + 30 ="]


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("merged")
    ap.add_argument("adapter")
    ap.add_argument("--json", default=str(ROOT / "benches/compare/results/hf_export_gemma3.json"))
    a = ap.parse_args()

    fx = json.loads((ROOT / "crates/lm-core/tests/fixtures/gemma3/tokenizer.json").read_text())
    tok = AutoTokenizer.from_pretrained(a.merged)
    bad_ids = [c["text"] for c in fx["cases"] if tok(c["text"])["input_ids"] != c["ids_with_special_tokens"]]
    bad_text = [c["text"] for c in fx["cases"] if tok.decode(c["ids"]) != c["decoded"]]

    merged = AutoModelForCausalLM.from_pretrained(a.merged, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(DIR, gguf_file=FILE, dtype=torch.float32).eval()
    peft = PeftModel.from_pretrained(base, a.adapter).eval()
    gtok = AutoTokenizer.from_pretrained(DIR, gguf_file=FILE)
    diff = 0.0
    for p in PROMPTS:
        ids = gtok(p, return_tensors="pt").input_ids
        diff = max(diff, (merged(ids).logits[0, -1] - peft(ids).logits[0, -1]).abs().max().item())
    ok = not bad_ids and not bad_text and diff <= 1e-3
    result = {"merged": a.merged, "adapter": a.adapter, "model_class": type(merged).__name__,
              "tokenizer_cases": len(fx["cases"]), "tokenizer_id_mismatches": bad_ids,
              "tokenizer_decode_mismatches": bad_text,
              "max_abs_logit_diff_merged_vs_peft_unmerged": diff, "ok": ok}
    print(json.dumps(result, indent=2))
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
