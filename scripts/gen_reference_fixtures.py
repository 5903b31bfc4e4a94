#!/usr/bin/env python3
"""Generate the PyTorch reference fixtures that the lm-core parity tests compare against.

How to run (from the repository root, once; the outputs are committed):

    python3 -m venv ~/.cache/pyref/venv
    . ~/.cache/pyref/venv/bin/activate
    pip install -r scripts/requirements-fixtures.txt
    python scripts/gen_reference_fixtures.py            # both models
    python scripts/gen_reference_fixtures.py --only smollm2
    python scripts/gen_reference_fixtures.py --only minilm

Inputs (verified by sha256 before use; nothing is downloaded):
    $OPENEXPERT_HOME/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
    $OPENEXPERT_HOME/models/minilm-l6-v2/  (Hugging Face dir: config.json, model.safetensors, tokenizer.json)
    OPENEXPERT_HOME defaults to ~/.cache/openexpert.

Outputs:
    crates/lm-core/tests/fixtures/smollm2/reference.json
    crates/lm-core/tests/fixtures/smollm2/last_logits.safetensors
    crates/lm-core/tests/fixtures/minilm/reference.json
The formats are documented in the README.md next to each file.

Everything runs on the CPU in float32, in eval mode, without gradients. transformers
de-quantises the GGUF matrices (Q4_1 / Q8_0) to f32, so the reference is "the quantised
model evaluated exactly in f32", which is what the Rust side computes too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_DIR_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MINILM_DIR_NAME = "minilm-l6-v2"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_MAX_SEQ_LEN = 256  # from sentence_bert_config.json
GREEDY_NEW_TOKENS = 20
CHAT_MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
EXPECTED_CHAT_ANSWER = "The capital of France is Paris."

LONG_TEXT = (
    "The history of the lighthouse is a story about how people learned to live with the sea. "
    "Long before electric lamps, coastal towns lit fires on hilltops so that returning fishermen "
    "could find the harbour after dark. The ancient lighthouse of Alexandria, built on the island "
    "of Pharos in the third century before the common era, stood for more than a thousand years "
    "and gave its name to the word for lighthouse in several languages. During the eighteenth and "
    "nineteenth centuries, engineers in Britain and France designed towers that could survive "
    "violent storms on exposed rocks. Augustin Fresnel invented a lens made of concentric glass "
    "rings that bent light into a narrow, powerful beam, which allowed a single oil lamp to be seen "
    "from more than twenty miles away. Keepers lived in the towers with their families, trimming "
    "wicks, polishing brass, and recording the weather in careful logbooks. Their work was lonely "
    "and sometimes dangerous, yet many of them stayed for decades. In the twentieth century, "
    "automation slowly replaced the keepers: timers, electric bulbs, and later solar panels made it "
    "possible to run a light without anyone on site. Today satellite navigation guides most ships, "
    "but lighthouses still serve as a backup, and many have become museums where visitors can climb "
    "the narrow stairs and look out over the water, imagining the long nights that the keepers once "
    "spent watching the horizon."
)

SMOLLM2_PROMPTS = [
    ("plain", "The quick brown fox jumps over the lazy dog, and then it runs into the forest."),
    ("chat", None),  # filled with the rendered chat template
    ("digits", "Compute 12345 + 67890 = 80235. Then 3.14159 * 2"),
    ("unicode", "Café, naïve, 東京, Москва, emoji 🚀🎉"),
    (
        "code",
        "def fibonacci(n: int) -> int:\n"
        '    """Return the n-th Fibonacci number."""\n'
        "    a, b = 0, 1\n"
        "    for _ in range(n):\n"
        "        a, b = b, a + b\n"
        "    return a\n\n"
        "print(fibonacci(10))  # prints 55\n",
    ),
    ("long", LONG_TEXT),
]

SMOLLM2_PAIRS = [
    ("The capital of France is", " Paris."),
    ("Question: What is 2 + 2?\nAnswer:", " 4"),
    (
        "<|im_start|>user\nTranslate the word 'cat' into French.<|im_end|>\n<|im_start|>assistant\n",
        "The French word for cat is \"chat\".<|im_end|>",
    ),
    ("Water boils at a temperature of", " 100 degrees Celsius at sea level."),
]

MINILM_SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "Café, naïve, 東京, Москва, emoji 🚀🎉 — ÀÉÎÕÜ",
    "The new movie is awesome!",
    # > 128 tokens, < 256: exercises long attention without truncation.
    " ".join(LONG_TEXT.split()[:140]),
    # > 256 tokens: exercises truncation to max_seq_length = 256 (257+ word pieces before truncation).
    LONG_TEXT + " " + LONG_TEXT,
]
EXPECTED_MINILM_COSINE = 0.7553  # "A man is eating food." vs "A man is eating a piece of bread."


def round7(x: float) -> float:
    """Round to 7 significant digits (enough for f32, keeps the JSON small)."""
    if not math.isfinite(x):
        raise ValueError(f"non-finite value {x} in a fixture")
    return float(f"{x:.7g}")


def round_list(xs) -> list[float]:
    return [round7(float(x)) for x in xs]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    if not path.is_file():
        sys.exit(f"error: expected model file {path}, found nothing; fetch the assets first")
    got = sha256_of(path)
    if got != expected:
        sys.exit(f"error: {path} has sha256 {got}, expected {expected}; re-fetch the file")


def openexpert_home() -> Path:
    return Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))


def versions() -> str:
    import gguf  # noqa: F401  (imported for its version only)
    from importlib.metadata import version

    return (
        f"scripts/gen_reference_fixtures.py; python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, tokenizers {version('tokenizers')}, "
        f"gguf {version('gguf')}, safetensors {version('safetensors')}, numpy {np.__version__}"
    )


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, indent=1)
    path.write_text(text + "\n", encoding="utf-8")
    size = path.stat().st_size
    print(f"wrote {path} ({size / 1024:.1f} KiB)")
    assert size < 1.5 * 1024 * 1024, f"{path} is {size} bytes, over the 1.5 MB budget"


# ----------------------------------------------------------------------------- SmolLM2


def token_logprobs(model, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (log P(ids[t] | ids[<t]) for t = 1..n-1, logits at the last position)."""
    x = torch.tensor([ids], dtype=torch.long)
    logits = model(input_ids=x).logits[0].float()  # [n, vocab]
    logp = torch.log_softmax(logits, dim=-1)
    gathered = logp[:-1].gather(1, x[0, 1:].unsqueeze(1)).squeeze(1)
    return gathered, logits[-1]


def greedy(model, ids: list[int], n_new: int, eos_id: int) -> tuple[list[int], list[float], bool]:
    """Exactly `n_new` argmax steps with full recomputation (no KV cache, no EOS stop).

    Returns the new ids, the top-1 minus top-2 logit margin at each step, and whether EOS appeared.
    """
    seq = list(ids)
    new, margins = [], []
    for _ in range(n_new):
        logits = model(input_ids=torch.tensor([seq], dtype=torch.long)).logits[0, -1].float()
        top2 = torch.topk(logits, 2)
        nxt = int(top2.indices[0])
        margins.append(float(top2.values[0] - top2.values[1]))
        new.append(nxt)
        seq.append(nxt)
    return new, margins, eos_id in new


def batched_check(model, all_ids: list[list[int]], ref: list[torch.Tensor], pad_id: int) -> float:
    """Run all prompts as one right-padded batch and compare per-token logprobs to `ref`."""
    n = max(len(i) for i in all_ids)
    x = torch.full((len(all_ids), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(all_ids), n), dtype=torch.long)
    for b, ids in enumerate(all_ids):
        x[b, : len(ids)] = torch.tensor(ids)
        mask[b, : len(ids)] = 1
    logits = model(input_ids=x, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    worst = 0.0
    for b, ids in enumerate(all_ids):
        k = len(ids)
        got = logp[b, : k - 1].gather(1, x[b, 1:k].unsqueeze(1)).squeeze(1)
        worst = max(worst, float((got - ref[b]).abs().max()))
    return worst


def gen_smollm2(out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = openexpert_home() / "models" / SMOLLM2_DIR_NAME
    verify_sha256(model_dir / SMOLLM2_GGUF, SMOLLM2_SHA256)
    tok = AutoTokenizer.from_pretrained(model_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    model.eval()
    eos_id = tok.eos_token_id
    assert model.config.vocab_size == 49152, model.config.vocab_size

    # The tokenizer's own default for add_special_tokens is True; SmolLM2 adds nothing with it.
    add_special_tokens = True
    probe = "Hello world"
    adds_nothing = tok(probe)["input_ids"] == tok(probe, add_special_tokens=False)["input_ids"]
    assert adds_nothing, "expected SmolLM2's tokenizer to add no special tokens"

    rendered = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)

    # Sanity: the chat answer, greedy, stopping at EOS.
    chat_ids = tok(rendered, add_special_tokens=add_special_tokens)["input_ids"]
    out = model.generate(
        torch.tensor([chat_ids]), max_new_tokens=30, do_sample=False, eos_token_id=eos_id, pad_token_id=eos_id
    )
    answer_ids = out[0, len(chat_ids) :].tolist()
    answer = tok.decode(answer_ids, skip_special_tokens=True).strip()
    print(f"chat sanity: {answer!r}")
    assert answer == EXPECTED_CHAT_ANSWER, f"expected {EXPECTED_CHAT_ANSWER!r}, model said {answer!r}"

    prompts, all_ids, all_lp, last_logits = [], [], [], []
    for name, text in SMOLLM2_PROMPTS:
        if text is None:
            text = rendered
        ids = tok(text, add_special_tokens=add_special_tokens)["input_ids"]
        lp, last = token_logprobs(model, ids)
        new_ids, margins, eos_seen = greedy(model, ids, GREEDY_NEW_TOKENS, eos_id)
        greedy_text = tok.decode(new_ids, skip_special_tokens=False)
        print(f"{name}: {len(ids)} tokens, mean logprob {float(lp.mean()):.4f}, greedy {greedy_text!r}")
        prompts.append(
            {
                "name": name,
                "text": text,
                "ids": ids,
                "token_logprobs": round_list(lp.tolist()),
                "greedy_new_ids": new_ids,
                "greedy_text": greedy_text,
                "greedy_eos_appeared": eos_seen,
                "greedy_top2_margins": round_list(margins),
            }
        )
        all_ids.append(ids)
        all_lp.append(lp)
        last_logits.append(last)
    assert any(len(p["ids"]) >= 200 for p in prompts), "the long prompt must have 200+ tokens"

    worst = batched_check(model, all_ids, all_lp, pad_id=eos_id)
    print(f"batched (right-padded) vs unbatched logprobs: max abs diff {worst:.3e}")
    assert worst < 1e-4, f"batched logprobs differ from unbatched by {worst}"

    pairs = []
    for prompt, target in SMOLLM2_PAIRS:
        p_ids = tok(prompt, add_special_tokens=add_special_tokens)["input_ids"]
        t_ids = tok(target, add_special_tokens=False)["input_ids"]
        lp, _ = token_logprobs(model, p_ids + t_ids)
        target_lp = lp[len(p_ids) - 1 :]
        assert target_lp.numel() == len(t_ids)
        pairs.append(
            {
                "prompt": prompt,
                "target": target,
                "prompt_ids": p_ids,
                "target_ids": t_ids,
                "target_logprobs": round_list(target_lp.tolist()),
                "target_logprob_sum": round7(float(target_lp.double().sum())),
            }
        )
        print(f"pair {prompt[:30]!r} -> {target!r}: sum logprob {pairs[-1]['target_logprob_sum']}")

    ref = {
        "generator": versions(),
        "model_file": SMOLLM2_GGUF,
        "model_sha256": SMOLLM2_SHA256,
        "dtype": "float32 (GGUF matrices de-quantised by transformers)",
        "add_special_tokens": add_special_tokens,
        "tokenizer_adds_special_tokens": not adds_nothing,
        "eos_token_id": eos_id,
        "vocab_size": model.config.vocab_size,
        "batched_right_padded_max_abs_diff": round7(worst),
        "prompts": prompts,
        "chat": {
            "messages": CHAT_MESSAGES,
            "add_generation_prompt": True,
            "rendered": rendered,
            "rendered_ids": chat_ids,
            "greedy_answer": answer,
            "greedy_answer_ids": answer_ids,
        },
        "pairs": pairs,
    }
    write_json(out_dir / "reference.json", ref)
    tensor = torch.stack(last_logits).contiguous().float()
    meta = {"prompt_names": ",".join(p["name"] for p in prompts), "generator": versions()}
    path = out_dir / "last_logits.safetensors"
    save_file({"logits": tensor}, str(path), metadata=meta)
    print(f"wrote {path} shape {list(tensor.shape)} ({path.stat().st_size / 1024:.1f} KiB)")


# ----------------------------------------------------------------------------- MiniLM


def minilm_embed(model, tok, sentences: list[str]) -> tuple[torch.Tensor, list[list[int]]]:
    """Mean pooling over the attention mask, then L2 normalisation (sentence-transformers' recipe)."""
    enc = tok(sentences, padding=True, truncation=True, max_length=MINILM_MAX_SEQ_LEN, return_tensors="pt")
    hidden = model(**enc).last_hidden_state.float()  # [b, n, 384]
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(pooled, p=2, dim=1)
    ids = [row[: int(m.sum())].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    return emb, ids


def gen_minilm(out_dir: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    model_dir = openexpert_home() / "models" / MINILM_DIR_NAME
    verify_sha256(model_dir / "model.safetensors", MINILM_SHA256)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()

    emb, ids = minilm_embed(model, tok, MINILM_SENTENCES)
    # The same sentences one by one must give the same vectors (padding must not leak).
    worst = 0.0
    for i, s in enumerate(MINILM_SENTENCES):
        e1, ids1 = minilm_embed(model, tok, [s])
        assert ids1[0] == ids[i]
        worst = max(worst, float((e1[0] - emb[i]).abs().max()))
    print(f"MiniLM batched vs single max abs diff {worst:.3e}")
    assert worst < 1e-5, worst

    cos = float(emb[0] @ emb[1])
    print(f"MiniLM cosine('{MINILM_SENTENCES[0]}', '{MINILM_SENTENCES[1]}') = {cos:.4f}")
    assert abs(cos - EXPECTED_MINILM_COSINE) < 5e-4, cos
    lens = [len(i) for i in ids]
    print(f"MiniLM token counts {lens}")
    assert any(128 < n < MINILM_MAX_SEQ_LEN for n in lens), "need one sentence with > 128 tokens"
    assert max(lens) == MINILM_MAX_SEQ_LEN, "need one sentence truncated to max_seq_length"

    st_check = None
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(model_dir), device="cpu")
        st_emb = torch.tensor(st.encode(MINILM_SENTENCES, normalize_embeddings=False))
        st_check = float((st_emb - emb).abs().max())
        print(f"sentence-transformers vs this script: max abs diff {st_check:.3e}")
        assert st_check < 1e-5, st_check
    except ImportError:
        print("sentence-transformers not installed; skipping the cross-check")

    ref = {
        "generator": versions(),
        "model_file": "model.safetensors",
        "model_sha256": MINILM_SHA256,
        "pooling": "mean over attention mask, then L2 normalise",
        "max_seq_length": MINILM_MAX_SEQ_LEN,
        "truncation": True,
        "cosine_0_1": round7(cos),
        "batched_vs_single_max_abs_diff": round7(worst),
        "sentence_transformers_max_abs_diff": None if st_check is None else round7(st_check),
        "sentences": MINILM_SENTENCES,
        "ids": ids,
        "embeddings": [round_list(e.tolist()) for e in emb],
    }
    write_json(out_dir / "reference.json", ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["smollm2", "minilm"], help="generate one model's fixtures only")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fixtures = REPO_ROOT / "crates" / "lm-core" / "tests" / "fixtures"
    with torch.inference_mode():
        if args.only in (None, "smollm2"):
            gen_smollm2(fixtures / "smollm2")
        if args.only in (None, "minilm"):
            gen_minilm(fixtures / "minilm")


if __name__ == "__main__":
    main()
