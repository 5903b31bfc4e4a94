#!/usr/bin/env python3
"""Generate the train / held-out sets of the default LoRA bank (assets/datasets/).

How to run (from the repository root; the outputs are committed):

    . ~/.cache/pyref/venv/bin/activate        # pip install -r scripts/requirements-fixtures.txt
    python scripts/gen_bank_datasets.py [--check-tokens]

Source: reasoning-gym==0.1.25 (Apache-2.0), `reasoning_gym.create_dataset(name, seed=S, size=N,
**config)`. Every task uses a small generator config so that a prompt (chat template included)
plus the response stays short for SmolLM2-135M. For each task it writes

    assets/datasets/<task>/train.jsonl   TRAIN_SIZE items (train seed)
    assets/datasets/<task>/eval.jsonl    EVAL_SIZE items (eval seed)

one JSON object per line:
    {"id": "<task>-<split>-<n>", "task": "<task>", "question": str, "answer": str,
     "rationale": str (only where the task has one), "choices": [str] (only multiple choice)}

and assets/datasets/README.md (tables, convention, sha256 of every file). Items are de-duplicated
by question inside each split and no eval question appears in train (asserted). Rationales are
built deterministically from the generator's metadata, and every rationale is checked by
recomputing the answer from it (see `check_*`). `--check-tokens` tokenizes every item with the
real SmolLM2 tokenizer (scripts/bank_chat.py) and records the maximum length per task in the
README (needs the GGUF under $OPENEXPERT_HOME).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import json
import math
import operator
import re
from pathlib import Path

import reasoning_gym
from reasoning_gym.arithmetic.leg_counting import ANIMALS

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "datasets"
TRAIN_SIZE = 400
EVAL_SIZE = 100
TRAIN_SEED_BASE = 1_000_000
EVAL_SEED_BASE = 9_000_000
RG_VERSION = "0.1.25"


# --------------------------------------------------------------------------------------------
# rationales (each returns the rationale text; `answer` is asserted against a recomputation)
# --------------------------------------------------------------------------------------------

def chain_sum_rationale(item: dict) -> str:
    toks = item["metadata"]["expression"].split()
    acc = int(toks[0])
    lines = []
    for op, num in zip(toks[1::2], toks[2::2]):
        n = int(num)
        new = acc + n if op == "+" else acc - n
        lines.append(f"{acc} {op} {n} = {new}")
        acc = new
    assert str(acc) == item["answer"], (item, acc)
    return "\n".join(lines)


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _const(node) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _const(node.operand)
        return None if inner is None else -inner
    return None


def _reduce_once(node):
    """Evaluate the first binary operation (in Python's evaluation order) whose operands are
    numbers; returns (new node, done?)."""
    if _const(node) is not None:
        return node, False
    if isinstance(node, ast.UnaryOp):
        new, done = _reduce_once(node.operand)
        node.operand = new
        return node, done
    assert isinstance(node, ast.BinOp), ast.dump(node)
    left, right = _const(node.left), _const(node.right)
    if left is not None and right is not None:
        return ast.Constant(_OPS[type(node.op)](left, right)), True
    new, done = _reduce_once(node.left)
    node.left = new
    if done:
        return node, True
    new, done = _reduce_once(node.right)
    node.right = new
    return node, done


def basic_arithmetic_rationale(item: dict) -> str:
    expr = item["metadata"]["expression"]
    tree = ast.parse(expr, mode="eval").body
    shown = [ast.unparse(tree)]
    while _const(tree) is None:
        tree, done = _reduce_once(tree)
        assert done
        shown.append(ast.unparse(tree))
    assert str(_const(tree)) == item["answer"], (item, shown)
    # one line of successive rewrites: "5 + 3 * 4 = 5 + 12 = 17"
    return " = ".join(shown)


def products_rationale(item: dict) -> str:
    a, b = (int(x) for x in item["metadata"]["expression"].split(" * "))
    prod = a * b
    assert str(prod) == item["answer"]
    # split the factor with two digits (the second one if both) into tens and units
    if abs(b) >= 10 and b % 10 != 0:
        t, u = b - b % 10, b % 10
        return f"{a} * {b} = {a} * {t} + {a} * {u} = {a * t} + {a * u} = {prod}"
    if abs(a) >= 10 and a % 10 != 0:
        t, u = a - a % 10, a % 10
        return f"{a} * {b} = {t} * {b} + {u} * {b} = {t * b} + {u * b} = {prod}"
    return f"{a} * {b} = {prod}"


def leg_counting_rationale(item: dict) -> str:
    animals = item["metadata"]["animals"]
    lines, parts = [], []
    for animal, count in animals.items():
        legs = ANIMALS[animal]
        name = f"{animal}{'s' if count > 1 else ''}"
        lines.append(f"{count} {name}: {count} * {legs} = {count * legs} legs")
        parts.append(count * legs)
    total = sum(parts)
    assert str(total) == item["answer"]
    lines.append(f"Total: {' + '.join(map(str, parts))} = {total}")
    return "\n".join(lines)


def letter_counting_rationale(item: dict) -> str:
    letter = item["metadata"]["target_letter"]
    counts = [(w, w.lower().count(letter)) for w in item["metadata"]["span"]]
    hits = [(w, c) for w, c in counts if c > 0]
    total = sum(c for _, c in hits)
    assert str(total) == item["answer"] and hits
    lines = [f'"{w}" has {c}' for w, c in hits]
    if len(hits) > 1:
        lines.append(f"Total: {' + '.join(str(c) for _, c in hits)} = {total}")
    return f'Words with the letter "{letter}":\n' + "\n".join(lines)


def spell_backward_rationale(item: dict) -> str:
    word = item["metadata"]["word"]
    assert word[::-1] == item["answer"]
    return f"{word} = {'-'.join(word)}\nReversed: {'-'.join(word[::-1])}"


def gcd_rationale(item: dict) -> str:
    a, b = item["metadata"]["numbers"]
    a, b = max(a, b), min(a, b)
    lines = []
    while b:
        q, r = divmod(a, b)
        lines.append(f"{a} = {q} * {b} + {r}")
        a, b = b, r
    assert str(a) == item["answer"]
    lines.append(f"The last non-zero remainder is {a}")
    return "\n".join(lines)


def lcm_rationale(item: dict) -> str:
    a, b = item["metadata"]["numbers"]
    g = math.gcd(a, b)
    lcm = a * b // g
    assert str(lcm) == item["answer"]
    return f"GCD({a}, {b}) = {g}\nLCM = {a} * {b} / {g} = {a * b} / {g} = {lcm}"


DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def base_conversion_rationale(item: dict) -> str:
    m = item["metadata"]
    src, dst, rep = m["source_base"], m["target_base"], m["source_repr"]
    value = int(rep, src)
    assert value == m["decimal_value"]
    lines = []
    if src != 10:
        n = len(rep)
        terms = [f"{DIGITS.index(d)} * {src ** (n - 1 - i)}" for i, d in enumerate(rep)]
        lines.append(f"{rep} in base {src} = {' + '.join(terms)} = {value}")
    if dst != 10:
        v, rems = value, []
        if v == 0:
            rems.append(0)
            lines.append(f"0 / {dst} = 0 remainder 0")
        while v:
            q, r = divmod(v, dst)
            lines.append(f"{v} / {dst} = {q} remainder {r}")
            rems.append(r)
            v = q
        out = "".join(DIGITS[r] for r in reversed(rems))
        lines.append(f"Remainders from last to first: {out}")
    else:
        out = str(value)
    assert out == item["answer"], (item, out)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# tasks
# --------------------------------------------------------------------------------------------

TASKS = {
    # name: (family, generator config, rationale builder or None)
    "chain_sum": ("arithmetic", dict(min_terms=2, max_terms=4, min_digits=1, max_digits=2), chain_sum_rationale),
    "basic_arithmetic": (
        "arithmetic",
        dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2, operators=["+", "-", "*"],
             allow_parentheses=True, allow_negation=False, format_style="simple", whitespace="single"),
        basic_arithmetic_rationale,
    ),
    "products": ("arithmetic", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=2), products_rationale),
    "leg_counting": (
        "arithmetic",
        dict(min_animals=2, max_animals=3, min_instances=1, max_instances=6),
        leg_counting_rationale,
    ),
    "letter_counting": ("string", dict(min_words=3, max_words=6), letter_counting_rationale),
    "spell_backward": ("string", dict(min_word_len=3, max_word_len=7), spell_backward_rationale),
    "word_sequence_reversal": ("ordering", dict(min_words=3, max_words=5), None),
    "word_sorting": (
        "ordering",
        dict(min_words=3, max_words=5, min_word_length=3, max_word_length=8),
        None,
    ),
    "gcd": ("number_theory", dict(min_numbers=2, max_numbers=2, min_value=2, max_value=60), gcd_rationale),
    "lcm": ("number_theory", dict(min_numbers=2, max_numbers=2, min_value=2, max_value=30), lcm_rationale),
    "base_conversion": (
        "number_theory",
        dict(min_base=3, max_base=9, min_value=1, max_value=60),
        base_conversion_rationale,
    ),
    "syllogism": ("logic", dict(), None),
    "family_relationships": ("logic", dict(min_family_size=4, max_family_size=5), None),
}


def generate(task: str, split: str, index: int, size: int) -> tuple[int, list[dict]]:
    """`size` items of unique questions; returns (seed, items)."""
    _, cfg, rationale = TASKS[task]
    seed = (TRAIN_SEED_BASE if split == "train" else EVAL_SEED_BASE) + 1000 * index
    # generate more than needed: small configs repeat questions
    ds = reasoning_gym.create_dataset(task, seed=seed, size=size * 4, **cfg)
    seen, out = set(), []
    for raw in ds:
        q = raw["question"].strip()
        if q in seen:
            continue
        seen.add(q)
        ans = str(raw["answer"]).strip()
        assert ans and not ans.endswith(".") and "\n" not in ans, (task, ans)
        item = {"id": f"{task}-{split}-{len(out)}", "task": task, "question": q, "answer": ans}
        if rationale is not None:
            item["rationale"] = rationale(raw)
            assert "The answer is" not in item["rationale"]
        # the generator's own scorer must accept the canonical answer
        assert ds.score_answer(ans, raw) == 1.0, (task, raw)
        out.append(item)
        if len(out) == size:
            return seed, out
    raise SystemExit(f"{task}/{split}: only {len(out)} unique questions of {size} wanted; widen the config")


def write_jsonl(path: Path, items: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    tmp.replace(path)


def token_lengths(items: list[dict]) -> list[int]:
    import bank_chat

    tok = token_lengths.tok = getattr(token_lengths, "tok", None) or bank_chat.load_tokenizer()
    out = []
    for it in items:
        p, r = bank_chat.encode_pair(tok, it)
        out.append(len(p) + len(r))
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def readme(rows: list[dict], check_tokens: bool) -> str:
    lines = [
        "# Datasets of the default LoRA bank",
        "",
        "Small train and held-out sets, one per task, used to train the adapters of `assets/bank/` and",
        "to evaluate them (and as K-shot target tasks). Generated by `scripts/gen_bank_datasets.py` from",
        f"[reasoning-gym](https://pypi.org/project/reasoning-gym/) `=={RG_VERSION}` (Apache-2.0; its word",
        "lists and texts are public-domain or permissively licensed), so the items carry the Apache-2.0 licence.",
        "",
        "## Regenerating",
        "",
        "```sh",
        ". ~/.cache/pyref/venv/bin/activate     # pip install -r scripts/requirements-fixtures.txt",
        "python scripts/gen_bank_datasets.py --check-tokens",
        "```",
        "",
        "The output is deterministic (fixed seeds, reasoning-gym pinned); the sha256 sums below must not change.",
        "",
        "## Format",
        "",
        "`<task>/train.jsonl` and `<task>/eval.jsonl`, one JSON object per line (UTF-8):",
        "",
        "```json",
        '{"id": "<task>-<split>-<n>", "task": "<task>", "question": "...", "answer": "...", "rationale": "..."}',
        "```",
        "",
        "- `answer`: the canonical short final answer, the exact-match target (never ends with `.`,",
        "  never contains a line break). reasoning-gym's own scorer gives it 1.0 (checked).",
        "- `rationale` (only some tasks): a short, correct step-by-step derivation built from the",
        "  generator's metadata, ending right before the answer; the script recomputes the answer from it.",
        "- `choices` (only multiple-choice tasks; none at present).",
        "",
        "Questions are unique within a split and no `eval.jsonl` question appears in `train.jsonl` (asserted).",
        f"Seeds: train = {TRAIN_SEED_BASE} + 1000 * i, eval = {EVAL_SEED_BASE} + 1000 * i (i = task row below);",
        "the generator is asked for 4x the items and the first unique questions are kept.",
        "",
        "## Conversation convention (training and evaluation)",
        "",
        "Both the Rust trainer/evaluator and `scripts/train_peft_bank.py` use exactly this:",
        "",
        "1. prompt: the model's own chat template applied to `[{\"role\": \"user\", \"content\": question}]`",
        "   with `add_generation_prompt=True`. For SmolLM2 (ChatML) with no system message the template inserts",
        "   its default system prompt:",
        "   `<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n<|im_start|>user\\n{question}<|im_end|>\\n<|im_start|>assistant\\n`",
        "2. response: `f\"{rationale}\\nThe answer is {answer}.\"` when the item has a rationale, else",
        "   `f\"The answer is {answer}.\"`, followed by the end-of-turn token `<|im_end|>`.",
        "3. tokenization: prompt and response (with `<|im_end|>`) are tokenized separately with SmolLM2's",
        "   tokenizer (digits split one by one; special tokens matched whole; no extra BOS) and concatenated.",
        "   The training loss is on the response tokens only (prompt positions are masked).",
        "   `scripts/bank_chat.py` implements this convention for the Python scripts.",
        "4. evaluation: greedy decoding from the prompt until `<|im_end|>` (at most 96 new tokens); the",
        "   prediction is the text after the last `The answer is ` up to the end of that line, with one final",
        "   `.` and surrounding whitespace removed; correct iff it equals `answer` (both stripped).",
        "",
        "## Tasks",
        "",
        "| # | task | family | generator config (reasoning-gym " + RG_VERSION + ") | train | eval | train seed | eval seed | rationale | max tokens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows):
        cfg = ", ".join(f"{k}={v}" for k, v in r["config"].items()) or "(defaults)"
        maxtok = str(r["max_tokens"]) if check_tokens else "n/a"
        lines.append(
            f"| {i} | `{r['task']}` | {r['family']} | `{r['task']}` {cfg} | {r['train']} | {r['eval']} | "
            f"{r['train_seed']} | {r['eval_seed']} | {'yes' if r['rationale'] else 'no'} | {maxtok} |"
        )
    lines += [
        "",
        "`max tokens`: the longest prompt + response (with `<|im_end|>`) over both splits, in SmolLM2 tokens.",
        "",
        "Families group related tasks so that a K-shot target task has helpful (same family) and unhelpful",
        "(other family) experts in the bank. All items: licence Apache-2.0 (reasoning-gym).",
        "",
        "Considered and left out: `gsm_symbolic` (prompts and rationales of 150-300 tokens, too long for a few",
        "minutes of CPU LoRA training of a 135M model), `propositional_logic` (open-ended conclusions, some",
        "answers are `None`), `caesar_cipher` (long answers), `decimal_arithmetic` (12 significant digits),",
        "`number_sorting` (its fixed instructions make prompts of ~230 tokens).",
        "",
        "## sha256",
        "",
        "```",
    ]
    for r in rows:
        for split in ("train", "eval"):
            p = OUT / r["task"] / f"{split}.jsonl"
            lines.append(f"{sha256(p)}  {p.relative_to(OUT)}")
    lines += ["```", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-tokens", action="store_true", help="measure lengths with the real SmolLM2 tokenizer")
    ap.add_argument("--max-tokens", type=int, default=200, help="fail when an item is longer (with --check-tokens)")
    args = ap.parse_args()
    # (reasoning_gym.__version__ says 0.1.19 in the 0.1.25 wheel: ask the installed distribution)
    installed = importlib.metadata.version("reasoning-gym")
    if installed != RG_VERSION:
        raise SystemExit(f"expected reasoning-gym=={RG_VERSION}, found {installed}: pip install reasoning-gym=={RG_VERSION}")
    rows = []
    for i, (task, (family, cfg, rationale)) in enumerate(TASKS.items()):
        train_seed, train = generate(task, "train", i, TRAIN_SIZE)
        eval_seed, held = generate(task, "eval", i, EVAL_SIZE)
        train_q = {it["question"] for it in train}
        overlap = [it["question"] for it in held if it["question"] in train_q]
        if overlap:
            # drop overlapping train items (eval is fixed first) and top train up again
            _, extra = generate(task, "train", i, TRAIN_SIZE + len(overlap) * 2 + 10)
            held_q = {it["question"] for it in held}
            train = [it for it in extra if it["question"] not in held_q][:TRAIN_SIZE]
            for n, it in enumerate(train):
                it["id"] = f"{task}-train-{n}"
        assert len(train) == TRAIN_SIZE and len(held) == EVAL_SIZE
        assert not ({it["question"] for it in train} & {it["question"] for it in held}), task
        write_jsonl(OUT / task / "train.jsonl", train)
        write_jsonl(OUT / task / "eval.jsonl", held)
        row = dict(task=task, family=family, config=cfg, train=len(train), eval=len(held),
                   train_seed=train_seed, eval_seed=eval_seed, rationale=rationale is not None,
                   overlap_dropped=len(overlap))
        if args.check_tokens:
            lens = token_lengths(train + held)
            row["max_tokens"] = max(lens)
            row["mean_tokens"] = sum(lens) / len(lens)
            assert max(lens) <= args.max_tokens, (task, max(lens))
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "config"}))
    text = readme(rows, args.check_tokens)
    tmp = OUT / "README.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(OUT / "README.md")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
