#!/usr/bin/env python3
"""Check that an adapter written by `openexpert train` loads in the real `peft` library and gives
the same logits as openexpert's own (unmerged) forward.

How to run (from the repository root; needs the release binary and the reference venv):

    cargo build --release -p openexpert
    . ~/.cache/pyref/venv/bin/activate
    python scripts/check_trained_adapter_peft.py ADAPTER_DIR [ADAPTER_DIR ...] [--out RESULT.json]
        [--model smollm2-135m-instruct|gemma3-270m]

For every directory, on the base model (default SmolLM2-135M-Instruct; `--model gemma3-270m` for
Gemma 3 270M), loaded from its GGUF and de-quantised to f32 by transformers:
  1. `PeftModel.from_pretrained` must load it with no missing or unexpected LoRA keys;
  2. for a few digit-free prompts (transformers' GGUF tokenizer differs from SmolLM2's real one only
     on digit runs) the last-position logits of peft are compared with those of
     `openexpert score --model M --adapter DIR --dump-logits` on the same text (with the BOS the
     model's tokenizer adds, as openexpert does); max |diff| must be <= 1e-3.
Writes a JSON summary (default benches/compare/results/trained_adapter_peft.json, or
trained_adapter_peft_gemma3.json for Gemma); exit 1 on failure.
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
MODELS = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3-270m": "gemma-3-270m-q4_k_m.gguf",
}
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
BINARY = TARGET / "release" / "openexpert"
PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nReverse the words: red blue green<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village by the sea,",
]


def ours(model: str, adapter: Path) -> torch.Tensor:
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in.jsonl"
        inp.write_text("".join(json.dumps({"text": p}) + "\n" for p in PROMPTS))
        logits = Path(tmp) / "logits.safetensors"
        subprocess.run(
            [str(BINARY), "score", "--model", model, "--input", str(inp),
             "--output", str(Path(tmp) / "out.jsonl"),
             "--adapter", str(adapter), "--dump-logits", str(logits)],
            check=True,
        )
        return load_file(str(logits))["logits"]


def main():
    args = sys.argv[1:]
    model_name = "smollm2-135m-instruct"
    if "--model" in args:
        i = args.index("--model")
        model_name = args[i + 1]
        del args[i : i + 2]
    model_dir, gguf = HOME / "models" / model_name, MODELS[model_name]
    suffix = "" if model_name == "smollm2-135m-instruct" else "_" + model_name.split("-")[0]
    out = ROOT / "benches" / "compare" / "results" / f"trained_adapter_peft{suffix}.json"
    if "--out" in args:
        i = args.index("--out")
        out = Path(args[i + 1])
        del args[i : i + 2]
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=gguf)
    add_bos = model_name == "gemma3-270m"
    results = {}
    ok = True
    for d in map(Path, args):
        base = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=gguf, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(d))
        model.eval()
        n_lora = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
        theirs = []
        with torch.no_grad():
            for p in PROMPTS:
                # The model's own special-token rule, as `openexpert score`: Gemma adds BOS.
                ids = tok(p, return_tensors="pt", add_special_tokens=add_bos).input_ids
                theirs.append(model(ids).logits[0, -1].float())
        theirs = torch.stack(theirs)
        # How far the adapter moves the base, so a near-zero adapter cannot pass unnoticed.
        with torch.no_grad(), model.disable_adapter():
            base_logits = torch.stack([
                model(tok(p, return_tensors="pt", add_special_tokens=add_bos).input_ids).logits[0, -1].float()
                for p in PROMPTS])
        moved = (theirs - base_logits).abs().max().item()
        mine = ours(model_name, d)
        diff = (theirs - mine).abs().max().item()
        same_top = bool((theirs.argmax(-1) == mine.argmax(-1)).all())
        results[str(d)] = {"lora_tensors_loaded": n_lora, "max_abs_logit_diff": diff, "same_argmax": same_top,
                           "max_abs_adapter_effect": moved}
        print(f"{d}: {n_lora} LoRA tensors loaded by peft, max |logit diff| {diff:.2e}, same argmax {same_top}, "
              f"the adapter moves logits by up to {moved:.3f}")
        ok &= diff <= 1e-3 and n_lora > 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": model_name, "prompts": PROMPTS, "adapters": results, "ok": ok},
                              indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
