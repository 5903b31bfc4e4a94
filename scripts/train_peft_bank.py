#!/usr/bin/env python3
"""Train the PEFT-made adapters of the default LoRA bank with the real `peft` library.

How to run (from the repository root; the outputs are committed):

    . ~/.cache/pyref/venv/bin/activate        # pip install -r scripts/requirements-fixtures.txt
    python scripts/gen_bank_datasets.py       # only if assets/datasets/ is missing
    python scripts/train_peft_bank.py [--tasks chain_sum word_sequence_reversal] [--check-items 50]

For each task it trains a LoRA adapter on assets/datasets/<task>/train.jsonl on the CPU
(torch.set_num_threads(2)) and writes assets/bank/<task>-peft/:

    adapter_config.json, adapter_model.safetensors   PEFT save_pretrained (base_model_name_or_path
                                                     "HuggingFaceTB/SmolLM2-135M-Instruct")
    card.json                                        what it is, data, training settings and losses,
                                                     "eval": null (filled in by the Rust build_bank
                                                     example) and "python_check" (below)

Base model: SmolLM2-135M-Instruct loaded by transformers from the Q4_1 GGUF (de-quantised to f32);
tokenizer: transformers' GGUF tokenizer with SmolLM2's digit pre-tokenizer (scripts/bank_chat.py).
Conversation convention: assets/datasets/README.md (prompt = chat template with the default system
prompt, response = "{rationale}\\nThe answer is {answer}.<|im_end|>"; loss on response tokens only).

Training: LoRA r=8, alpha=16, dropout 0.05 on q_proj and v_proj of every layer; AdamW (lr 1e-3,
no weight decay), linear warm-up (10% of the steps) then cosine decay to 0, batch 8, EPOCHS passes over
the shuffled train set, seed 0. (spell_backward was tried and dropped: the adapter reached only
2/50, as a 135M model barely knows how its word tokens are spelt.) Losses: `final_train_loss` = mean of the last 20 steps' batch losses,
`final_eval_loss` = token-mean response loss over the whole eval.jsonl; `train_seconds` is wall
time of the training loop, with the machine's load average and OMP_WAIT_POLICY recorded beside it
(on a shared 2-core machine run it with OMP_WAIT_POLICY=PASSIVE).

python_check: greedy generation (at most 96 new tokens, stop at <|im_end|>) on the first
--check-items eval items for the base model and the adapter; the prediction is the text after
the last "The answer is " (bank_chat.extract_answer); for the base model, which does not know the
convention, the last number or the last line also counts (bank_chat.answer_candidates).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bank_chat  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "assets" / "datasets"
BANK = ROOT / "assets" / "bank"

FAMILIES = {
    "chain_sum": ("arithmetic", "Chains of 2-4 additions/subtractions of 1-2 digit integers, with partial sums."),
    "spell_backward": ("string", "Spell a 3-7 letter word backward, letter by letter."),
    "basic_arithmetic": ("arithmetic", "Expressions of 2-3 integers with +, -, * and parentheses, step by step."),
    "letter_counting": ("string", "Count a letter in a short text, word by word."),
    "word_sequence_reversal": ("ordering", "Reverse a comma-separated list of 3-5 words."),
}
GENERATOR_CONFIG = None  # read from scripts/gen_bank_datasets.py (single source of truth)

R, ALPHA, DROPOUT, TARGETS = 8, 16, 0.05, ["q_proj", "v_proj"]
BATCH, LR, SEED, WARMUP_FRAC = 8, 1e-3, 0, 0.1


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def encode(tok, items: list[dict]) -> list[tuple[list[int], list[int]]]:
    return [bank_chat.encode_pair(tok, it) for it in items]


def collate(pairs, pad_id: int):
    """Right-padded input ids, attention mask and labels (-100 on prompt and padding)."""
    n = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(pairs), n), dtype=torch.long)
    labels = torch.full((len(pairs), n), -100, dtype=torch.long)
    for i, (p, r) in enumerate(pairs):
        seq = p + r
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = 1
        labels[i, len(p): len(seq)] = torch.tensor(r)
    return ids, mask, labels


def batch_loss(model, pairs, pad_id: int) -> tuple[torch.Tensor, int]:
    """(sum of response-token NLL, number of response tokens)."""
    ids, mask, labels = collate(pairs, pad_id)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    tgt = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return nll, int((tgt != -100).sum())


@torch.no_grad()
def eval_loss(model, pairs, pad_id: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(pairs), 16):
        nll, n = batch_loss(model, pairs[i: i + 16], pad_id)
        total += float(nll)
        count += n
    return total / count


@torch.no_grad()
def generate(model, tok, items: list[dict], max_new: int = 96, batch: int = 25) -> list[str]:
    """Greedy completions (left-padded batches), decoded without special tokens after <|im_end|>."""
    model.eval()
    end_id = tok.convert_tokens_to_ids(bank_chat.END_OF_TURN)
    outs = []
    for i in range(0, len(items), batch):
        chunk = items[i: i + batch]
        prompts = [tok(bank_chat.prompt_text(tok, it["question"]), add_special_tokens=False)["input_ids"]
                   for it in chunk]
        n = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), n), end_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), n), dtype=torch.long)
        for j, p in enumerate(prompts):
            ids[j, n - len(p):] = torch.tensor(p)
            mask[j, n - len(p):] = 1
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             eos_token_id=end_id, pad_token_id=end_id)
        for j in range(len(prompts)):
            new = gen[j, n:].tolist()
            if end_id in new:
                new = new[: new.index(end_id)]
            outs.append(tok.decode(new, skip_special_tokens=False))
        print(f"  generated {len(outs)}/{len(items)}", flush=True)
    return outs


def accuracy(texts: list[str], items: list[dict], fallback: bool) -> float:
    ok = sum(it["answer"].strip() in bank_chat.answer_candidates(t, fallback) for t, it in zip(texts, items))
    return ok / len(items)


def generator_source(task: str) -> str:
    import gen_bank_datasets as g

    cfg = g.TASKS[task][1]
    return f"reasoning-gym=={g.RG_VERSION} {task} ({', '.join(f'{k}={v}' for k, v in cfg.items()) or 'defaults'})"


def train_one(task: str, args) -> dict:
    torch.manual_seed(SEED)
    random.seed(SEED)
    from peft import LoraConfig, get_peft_model
    from transformers import get_cosine_schedule_with_warmup

    tok = bank_chat.load_tokenizer()
    pad_id = tok.convert_tokens_to_ids(bank_chat.END_OF_TURN)
    train_items = read_jsonl(DATA / task / "train.jsonl")
    eval_items = read_jsonl(DATA / task / "eval.jsonl")
    train_pairs, eval_pairs = encode(tok, train_items), encode(tok, eval_items)
    max_len = max(len(p) + len(r) for p, r in train_pairs + eval_pairs)
    check = eval_items[: args.check_items]

    base = bank_chat.load_model()
    t0 = time.time()
    base_texts = generate(base, tok, check)
    base_acc = accuracy(base_texts, check, fallback=True)
    print(f"[{task}] base accuracy {base_acc:.2f} on {len(check)} items ({time.time() - t0:.0f} s)", flush=True)

    cfg = LoraConfig(task_type="CAUSAL_LM", r=R, lora_alpha=ALPHA, lora_dropout=DROPOUT, target_modules=TARGETS)
    model = get_peft_model(base, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    steps_per_epoch = math.ceil(len(train_pairs) / BATCH)
    steps = steps_per_epoch * args.epochs
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, int(WARMUP_FRAC * steps), steps)
    rng = random.Random(SEED)
    losses = []
    load_start = os.getloadavg()[0]
    t0 = time.time()
    step = 0
    for epoch in range(args.epochs):
        order = list(range(len(train_pairs)))
        rng.shuffle(order)
        model.train()
        for b in range(0, len(order), BATCH):
            pairs = [train_pairs[k] for k in order[b: b + BATCH]]
            nll, n = batch_loss(model, pairs, pad_id)
            loss = nll / n
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss))
            step += 1
            if step % 10 == 0 or step == steps:
                print(f"[{task}] step {step}/{steps} loss {sum(losses[-10:]) / len(losses[-10:]):.4f} "
                      f"({time.time() - t0:.0f} s)", flush=True)
    train_seconds = time.time() - t0
    final_eval = eval_loss(model, eval_pairs, pad_id)
    print(f"[{task}] trained {steps} steps in {train_seconds:.0f} s; eval loss {final_eval:.4f}", flush=True)

    t0 = time.time()
    adapter_texts = generate(model, tok, check)
    adapter_acc = accuracy(adapter_texts, check, fallback=False)
    print(f"[{task}] adapter accuracy {adapter_acc:.2f} ({time.time() - t0:.0f} s)", flush=True)
    for it, bt, at in list(zip(check, base_texts, adapter_texts))[:3]:
        print(f"  Q: {it['question'][-80:]!r}\n  gold {it['answer']!r}\n  base {bt[-120:]!r}\n  lora {at!r}")

    out = BANK / f"{task}-peft"
    tmp = BANK / f".{task}-peft.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.peft_config["default"].base_model_name_or_path = bank_chat.BASE_NAME
    model.save_pretrained(tmp)
    readme = tmp / "README.md"
    if readme.exists():
        readme.unlink()
    family, description = FAMILIES[task]
    card = {
        "name": f"{task}-peft",
        "task": task,
        "family": family,
        "description": description,
        "base_model": "smollm2-135m-instruct",
        "data": {
            "source": generator_source(task),
            "licence": "Apache-2.0",
            "train_file": f"assets/datasets/{task}/train.jsonl",
            "train_examples": len(train_items),
            "eval_file": f"assets/datasets/{task}/eval.jsonl",
            "eval_examples": len(eval_items),
        },
        "training": {
            "trained_by": f"peft {version('peft')} + transformers {version('transformers')} + torch "
                          f"{torch.__version__.split('+')[0]} (scripts/train_peft_bank.py)",
            "r": R, "lora_alpha": ALPHA, "lora_dropout": DROPOUT, "target_modules": TARGETS,
            "epochs": args.epochs, "steps": steps, "batch_size": BATCH, "lr": args.lr, "seed": SEED,
            "max_len": max_len, "optimizer": "AdamW (weight_decay 0, grad-norm clip 1.0)",
            "schedule": f"linear warm-up {int(WARMUP_FRAC * steps)} steps, cosine to 0",
            "final_train_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
            "final_eval_loss": round(final_eval, 4),
            "train_seconds": round(train_seconds, 1),
            "threads": torch.get_num_threads(),
            "machine": {
                "load_avg_1min_start": round(load_start, 2),
                "load_avg_1min_end": round(os.getloadavg()[0], 2),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "cpus": os.cpu_count(),
            },
        },
        "eval": None,
        "python_check": {
            "items": len(check), "base_accuracy": base_acc, "adapter_accuracy": adapter_acc,
            "how": "greedy, max 96 new tokens, exact match of the text after the last 'The answer is ' "
                   "(base: also the last number / last line); first items of eval_file",
        },
    }
    (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.replace(out)
    print(f"[{task}] wrote {out}: {sorted(p.name for p in out.iterdir())}", flush=True)
    return card


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["chain_sum", "word_sequence_reversal"], choices=sorted(FAMILIES))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--check-items", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for task in args.tasks:
        card = train_one(task, args)
        pc = card["python_check"]
        if pc["adapter_accuracy"] <= pc["base_accuracy"]:
            raise SystemExit(f"{task}: the adapter ({pc['adapter_accuracy']}) does not beat the base model "
                             f"({pc['base_accuracy']}); change the hyper-parameters")


if __name__ == "__main__":
    main()
