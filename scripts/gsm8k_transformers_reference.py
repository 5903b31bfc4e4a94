#!/usr/bin/env python3
"""GSM8K exact-match reference for kshot-eval: base SmolLM2-135M-Instruct in transformers.

Run (from the repository root, with the reference venv; 15-60 min on a shared 2-core CPU):

    . ~/.cache/pyref/venv/bin/activate
    python scripts/gsm8k_transformers_reference.py            # first 200 test items
    python scripts/gsm8k_transformers_reference.py --n 8      # a quick look

Needs the real assets under $OPENEXPERT_HOME (default ~/.cache/openexpert):
models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf and data/gsm8k-test/test.jsonl
(`cargo run --release -p openexpert -- fetch gsm8k-test`).

Writes crates/kshot-eval/tests/fixtures/gsm8k_smollm2_transformers.json: per item the generated
text, the extracted answer, the gold answer and whether they match, plus the accuracy.

The protocol is the one kshot-eval's `GenerativeTask::chat_default()` uses (docs/kshot-eval.md):
- 0-shot chat: messages `[{"role": "user", "content": question}]` rendered with the model's own
  chat template (from the GGUF), `add_generation_prompt=True`, tokenized with special tokens as
  lm-core's `LanguageModel::encode` does;
- greedy decoding, at most 128 new tokens (kept modest for CPU time), stop at the end-of-turn token;
- extraction: the text after the last "The answer is " up to a trailing '.', else the last number
  in the text; normalisation strips ',', '$', spaces and a trailing '.'; numbers compare by value;
- gold: the number after "####" in the GSM8K answer.

transformers' GGUF tokenizer for SmolLM2 lacks SmolLM2's digit split (see
scripts/gen_tokenizer_fixtures.py); it is given the real pre-tokenizer here, so both sides see the
same token ids. Generation is batched (left padding with an attention mask; rows sorted by prompt
length) to keep the CPU time bearable.
"""

import argparse
import json
import os
import re
import time
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "kshot-eval" / "tests" / "fixtures" / "gsm8k_smollm2_transformers.json"
HOME = Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")


def normalise(s):
    s = s.strip().replace(",", "").replace("$", "").strip()
    while s.endswith("."):
        s = s[:-1].strip()
    return s


def extract(text):
    """The kshot-eval default chat extractor: 'The answer is X.' else the last number."""
    marker = "The answer is "
    pos = text.rfind(marker)
    if pos >= 0:
        rest = text[pos + len(marker):]
        line = rest.split("\n", 1)[0].strip()
        if line.endswith("."):
            line = line[:-1]
        line = line.strip()
        if line:
            return line
    nums = NUMBER.findall(text)
    return nums[-1] if nums else None


def same_answer(pred, gold):
    if pred is None:
        return False
    p, g = normalise(pred), normalise(gold)
    try:
        return abs(float(p) - float(g)) <= 1e-9 * max(1.0, abs(float(g)))
    except ValueError:
        return p.lower() == g.lower()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model_dir = HOME / "models" / "smollm2-135m-instruct"
    tok = AutoTokenizer.from_pretrained(str(model_dir), gguf_file=GGUF)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), gguf_file=GGUF, dtype=torch.float32).eval()

    rows = []
    with open(HOME / "data" / "gsm8k-test" / "test.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if len(rows) == args.n:
                break

    eos_ids = sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {None})
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
    prompts = []
    for r in rows:
        text = tok.apply_chat_template([{"role": "user", "content": r["question"]}],
                                       add_generation_prompt=True, tokenize=False)
        prompts.append(tok(text, add_special_tokens=True)["input_ids"])

    order = sorted(range(len(rows)), key=lambda i: -len(prompts[i]))
    outputs = [None] * len(rows)
    t0 = time.time()
    for start in range(0, len(order), args.batch_size):
        chunk = order[start:start + args.batch_size]
        longest = max(len(prompts[i]) for i in chunk)
        ids = torch.full((len(chunk), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), longest), dtype=torch.long)
        for j, i in enumerate(chunk):
            p = prompts[i]
            ids[j, longest - len(p):] = torch.tensor(p)
            mask[j, longest - len(p):] = 1
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_new_tokens,
                                 do_sample=False, temperature=None, top_p=None, top_k=None,
                                 repetition_penalty=None, eos_token_id=eos_ids, pad_token_id=pad_id)
        for j, i in enumerate(chunk):
            new = gen[j, longest:].tolist()
            cut = next((k for k, t in enumerate(new) if t in eos_ids), len(new))
            outputs[i] = (new[:cut], "eos" if cut < len(new) else "length")
        print(f"{start + len(chunk)}/{len(rows)} items, {time.time() - t0:.0f} s", flush=True)

    items = []
    correct = 0
    for i, r in enumerate(rows):
        new, reason = outputs[i]
        text = tok.decode(new, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        gold = normalise(r["answer"].split("####")[-1])
        pred = extract(text)
        ok = same_answer(pred, gold)
        correct += ok
        items.append({"index": i, "question": r["question"], "prompt_tokens": len(prompts[i]), "generated_tokens": len(new),
                      "finish_reason": reason, "text": text, "extracted": pred, "gold": gold, "correct": ok})
    result = {
        "model": GGUF,
        "runtime": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, float32, CPU",
        "protocol": "gsm8k test, first n items; 0-shot chat (user turn = question, model's chat template, "
                    "generation prompt); greedy; max_new_tokens; stop at end of turn; extractor: last "
                    "'The answer is X' else last number; numbers compared by value",
        "n": len(rows),
        "max_new_tokens": args.max_new_tokens,
        "correct": correct,
        "accuracy": correct / len(rows),
        "seconds": round(time.time() - t0, 1),
        "items": items,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"accuracy {correct}/{len(rows)} = {correct / len(rows):.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
