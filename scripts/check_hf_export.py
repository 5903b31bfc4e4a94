#!/usr/bin/env python3
"""Checks lm-core's HF export with the real `transformers` / `peft` libraries.

How to run (from the repository root):

    export CARGO_TARGET_DIR=...   # any release target dir
    cargo run --release -p lora-zoo --example export_check -- /tmp/oe-export-check
    . ~/.cache/pyref/venv/bin/activate
    python scripts/check_hf_export.py /tmp/oe-export-check \
        --json benches/compare/results/hf_export_check.json

The example writes `base/` (SmolLM2-135M-Instruct from the Q4_1 GGUF, exported as an HF directory),
`merged/` (the same with the fixture adapter `b_mlp_rslora` merged) and lm-core's token ids and
logits for four prompts on both directories (`lmcore.safetensors`). This script:

1. loads both directories with `AutoModelForCausalLM.from_pretrained(dir)` and
   `AutoTokenizer.from_pretrained(dir)` (no warnings about missing / unexpected keys allowed);
2. compares token ids: the exported tokenizer vs lm-core's ids vs the real SmolLM2 tokenizer's shape
   (transformers' GGUF tokenizer given SmolLM2's digit-splitting pre-tokenizer, as
   scripts/gen_tokenizer_fixtures.py does; transformers' GGUF tokenizer alone is wrong on digit runs);
3. compares the transformers logits of each exported directory with lm-core's on the same ids;
4. compares the exported base weights with transformers' own GGUF loading (de-quantised), and the
   merged directory's logits with PEFT's unmerged model (transformers' GGUF base + PeftModel).

Writes a JSON summary (max |diff| per check and pass/fail at the tolerances below).
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch
import transformers
import peft
from peft import PeftModel
from safetensors.torch import load_file
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
GGUF_DIR = Path.home() / ".cache/openexpert/models/smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER = ROOT / "crates/lora-zoo/tests/fixtures/adapters/b_mlp_rslora"
LOGIT_TOL = 1e-3
WEIGHT_TOL = 1e-6


def real_tokenizer():
    tok = AutoTokenizer.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return tok


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    meta = json.loads((args.dir / "prompts.json").read_text())
    prompts = meta["prompts"]
    lm = load_file(args.dir / "lmcore.safetensors")
    result = {"versions": {"transformers": transformers.__version__, "peft": peft.__version__,
                           "torch": torch.__version__},
              "prompts": prompts, "tolerances": {"logits": LOGIT_TOL, "weights": WEIGHT_TOL}}

    models = {}
    for name in ["base", "merged"]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = AutoModelForCausalLM.from_pretrained(
                args.dir / name, dtype=torch.float32, output_loading_info=True)
        models[name] = model.eval()
        result[f"{name}_loading_info"] = {k: sorted(map(str, v)) for k, v in info.items()}
        result[f"{name}_class"] = type(model).__name__
        tok = AutoTokenizer.from_pretrained(args.dir / name)
        result[f"{name}_tokenizer_class"] = type(tok).__name__
        models[name + "_tok"] = tok

    # 2. token ids
    ref_tok = real_tokenizer()
    ids_rows = []
    for i, p in enumerate(prompts):
        ours = lm[f"ids.{i}"].tolist()
        exported = models["base_tok"](p, add_special_tokens=True)["input_ids"]
        real = ref_tok(p, add_special_tokens=False)["input_ids"]
        ids_rows.append({"prompt": p, "lmcore": ours, "exported_equal_lmcore": exported == ours,
                         "real_equal_lmcore": real == ours,
                         "chat_template_equal": True})
    # chat template round trip
    msgs = [{"role": "user", "content": "Hi there, 2+2?"}]
    rendered = models["base_tok"].apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ref_rendered = ref_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    result["chat_template_equal_gguf"] = rendered == ref_rendered
    result["special_tokens"] = {k: getattr(models["base_tok"], k) for k in
                                ["bos_token", "eos_token", "pad_token", "unk_token"]}
    result["token_ids"] = ids_rows

    # 3. logits vs lm-core
    logit_rows = []
    for name in ["base", "merged"]:
        for i in range(len(prompts)):
            ids = lm[f"ids.{i}"].long().unsqueeze(0)
            got = models[name](ids).logits[0]
            want = lm[f"{name}.{i}"]
            logit_rows.append({"model": name, "prompt": i, "tokens": ids.shape[1],
                               "max_abs_diff": float((got - want).abs().max()),
                               "max_abs_logit": float(want.abs().max()),
                               "argmax_equal": bool((got.argmax(-1) == want.argmax(-1)).all())})
    result["logits_transformers_vs_lmcore"] = logit_rows

    # 4. weights vs transformers' GGUF loading, merged vs PEFT unmerged
    gguf_model = AutoModelForCausalLM.from_pretrained(GGUF_DIR, gguf_file=GGUF_FILE, dtype=torch.float32).eval()
    ours_sd = load_file(args.dir / "base" / "model.safetensors")
    ref_sd = gguf_model.state_dict()
    weight_diff = max(float((ours_sd[k] - ref_sd[k]).abs().max()) for k in ours_sd)
    result["base_weights_vs_transformers_gguf"] = {
        "tensors": len(ours_sd), "max_abs_diff": weight_diff,
        "keys_equal": sorted(ours_sd) == sorted(k for k in ref_sd if k != "lm_head.weight"),
    }
    pm = PeftModel.from_pretrained(gguf_model, ADAPTER).eval()
    peft_rows = []
    for i in range(len(prompts)):
        ids = lm[f"ids.{i}"].long().unsqueeze(0)
        want = pm(ids).logits[0]
        got = models["merged"](ids).logits[0]
        peft_rows.append({"prompt": i, "max_abs_diff": float((got - want).abs().max()),
                          "lmcore_merged_vs_peft": float((lm[f"merged.{i}"] - want).abs().max())})
    result["merged_vs_peft_unmerged"] = peft_rows

    checks = {
        "no_missing_or_unexpected_keys": all(
            not result[f"{n}_loading_info"].get(k) for n in ["base", "merged"]
            for k in ["missing_keys", "unexpected_keys", "mismatched_keys"]),
        "token_ids_exported_equal_lmcore": all(r["exported_equal_lmcore"] for r in ids_rows),
        "token_ids_real_equal_lmcore": all(r["real_equal_lmcore"] for r in ids_rows),
        "chat_template_equal": result["chat_template_equal_gguf"],
        "logits_within_tol": all(r["max_abs_diff"] < LOGIT_TOL for r in logit_rows),
        "weights_within_tol": weight_diff < WEIGHT_TOL,
        "merged_vs_peft_within_tol": all(r["max_abs_diff"] < LOGIT_TOL for r in peft_rows),
    }
    result["checks"] = checks
    result["pass"] = all(checks.values())
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(json.dumps({"checks": checks,
                      "max_logit_diff": max(r["max_abs_diff"] for r in logit_rows),
                      "max_peft_diff": max(r["max_abs_diff"] for r in peft_rows),
                      "weight_diff": weight_diff}, indent=1))
    sys.exit(0 if result["pass"] else 1)


if __name__ == "__main__":
    main()
