#!/usr/bin/env python3
"""Reference fixture for the Qwen2 path of lm-core (run by hand, never at test time).

Loads qwen2.5-0.5b-instruct (the optional asset: `openexpert fetch qwen2.5-0.5b-instruct`) with
transformers from its GGUF, f32 on CPU, and writes crates/lm-core/tests/fixtures/qwen2/reference.json:
token ids (from transformers' GGUF tokenizer), per-token log-probs and 10 greedy tokens for a few prompts.

    . ~/.cache/pyref/venv/bin/activate   # torch, transformers, gguf (scripts/requirements-fixtures.txt)
    python scripts/gen_qwen2_reference.py
"""
import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HOME = Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))
DIR = HOME / "models" / "qwen2.5-0.5b-instruct"
FILE = "qwen2.5-0.5b-instruct.gguf"
OUT = Path(__file__).resolve().parent.parent / "crates/lm-core/tests/fixtures/qwen2/reference.json"
PROMPTS = [
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The quick brown fox jumps over the lazy dog. Then it",
]


@torch.no_grad()
def main():
    tok = AutoTokenizer.from_pretrained(DIR, gguf_file=FILE)
    model = AutoModelForCausalLM.from_pretrained(DIR, gguf_file=FILE, torch_dtype=torch.float32).eval()
    rows = []
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids])
        logp = torch.log_softmax(model(x).logits[0].float(), -1)
        token_logprobs = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
        seq = list(ids)
        greedy = []
        for _ in range(10):
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
            greedy.append(nxt)
            seq.append(nxt)
        rows.append({"text": text, "ids": ids, "token_logprobs": [round(v, 6) for v in token_logprobs],
                     "greedy_new_ids": greedy})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"generator": "scripts/gen_qwen2_reference.py; transformers "
                               + __import__("transformers").__version__ + ", torch " + torch.__version__,
                               "model_file": FILE, "prompts": rows}, indent=1))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
