#!/usr/bin/env python3
"""Reference fixture for the Gemma 3 path of lm-core (run by hand, never at test time).

Loads gemma3-270m (the optional asset: `openexpert fetch gemma3-270m`) with transformers from its
GGUF (tokenizer and weights, f32 on CPU, eager attention) and writes
crates/lm-core/tests/fixtures/gemma3/reference.json: for each prompt the token ids (BOS first, as
the model's tokenizer adds it), the per-token log-probs of the prompt, the 32 largest logits of
the last position (ids and values) with that position's log-sum-exp, and 20 greedy tokens. One
prompt is longer than the 512-token sliding window, so local and global layers differ on it.

    . ~/.cache/pyref/venv/bin/activate   # torch, transformers, gguf (scripts/requirements-fixtures.txt)
    python scripts/gen_gemma3_reference.py
"""
import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

HOME = Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))
DIR = HOME / "models" / "gemma3-270m"
FILE = "gemma-3-270m-q4_k_m.gguf"
OUT = Path(__file__).resolve().parent.parent / "crates/lm-core/tests/fixtures/gemma3/reference.json"
TOP_K = 32
NEW_TOKENS = 20


def long_prompt():
    """A text of well over 512 tokens: a made-up travel log with numbers and names."""
    towns = ["Aldermoor", "Brackenfield", "Coldwater", "Dunmere", "Eastwick", "Fernhollow",
             "Greystone", "Hartsford", "Ivybridge", "Juniper Vale", "Kestrel Point", "Larkspur"]
    lines = ["Travel log of a surveyor crossing the northern provinces, kept day by day.\n"]
    for day, town in enumerate(towns * 3, start=1):
        miles = 7 + (day * 13) % 23
        lines.append(
            f"Day {day}: walked {miles} miles to {town}; the road was "
            f"{'muddy' if day % 3 else 'dry'}, the inn charged {day % 5 + 2} shillings, "
            f"and the innkeeper spoke of a bridge {miles * 2} yards long.\n")
    lines.append("Summing up the journey, the surveyor wrote that the longest day was")
    return "".join(lines)


PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Photosynthesis is the process by which green plants",
    "Ein kleiner Hund läuft über die Straße, und",
    "<start_of_turn>user\nName three primary colours.<end_of_turn>\n<start_of_turn>model\n",
    long_prompt(),
]


@torch.no_grad()
def main():
    tok = AutoTokenizer.from_pretrained(DIR, gguf_file=FILE)
    model = AutoModelForCausalLM.from_pretrained(
        DIR, gguf_file=FILE, dtype=torch.float32, attn_implementation="eager").eval()
    cfg = model.config
    rows = []
    for text in PROMPTS:
        ids = tok(text)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        token_logprobs = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
        last = logits[-1]
        top = torch.topk(last, TOP_K)
        out = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             min_new_tokens=NEW_TOKENS)
        greedy = out[0, len(ids):].tolist()
        rows.append({
            "text": text,
            "ids": ids,
            "token_logprobs": [round(v, 6) for v in token_logprobs],
            "last_top_ids": top.indices.tolist(),
            "last_top_logits": [round(float(v), 5) for v in top.values],
            "last_logsumexp": round(float(torch.logsumexp(last, -1)), 5),
            "greedy_new_ids": greedy,
            "greedy_text": tok.decode(greedy),
        })
        print(len(ids), repr(tok.decode(greedy)))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "generator": "scripts/gen_gemma3_reference.py; transformers "
                     + __import__("transformers").__version__ + ", torch " + torch.__version__,
        "model_file": FILE,
        "config": {"sliding_window": cfg.sliding_window, "layer_types": cfg.layer_types,
                   "rope_parameters": cfg.rope_parameters,
                   "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
                   "final_logit_softcapping": cfg.final_logit_softcapping,
                   "attn_logit_softcapping": cfg.attn_logit_softcapping},
        "prompts": rows}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
