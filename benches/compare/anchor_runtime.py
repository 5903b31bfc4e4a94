#!/usr/bin/env python3
"""PyTorch anchor for the side-by-side runtime benchmark (the "theirs" column).

How to run (from the repository root; usually via benches/compare/run.sh):

    . ~/.cache/pyref/venv/bin/activate          # see scripts/requirements-fixtures.txt
    python benches/compare/anchor_runtime.py --threads 2 --json /tmp/anchor.json

It measures, with torch.set_num_threads(N), torch.set_num_interop_threads(1), transformers in
float32 on the CPU (the same models the Rust side uses):

  score   teacher-forced scoring: one forward pass over a batch of 8 x 256 token ids, then
          log_softmax over the vocabulary and a gather of the next-token log-probabilities.
          Reported as tokens/s = 8 * 256 / seconds.  Median of --score-runs (>= 5) after 1 warm-up.
  decode  greedy decoding, batch 1: a 32-token prompt, exactly 64 new tokens with the KV cache
          (model.generate, do_sample=False, min_new_tokens = max_new_tokens = 64). The timed region
          includes the prompt prefill. Reported as new tokens/s = 64 / seconds. Median of --decode-runs.
  embed   all-MiniLM-L6-v2 sentence embeddings: 256 sentences of ~32 word pieces each (including
          [CLS]/[SEP]), in batches of 64; tokenization + forward + mean pooling + L2 normalisation
          are all timed. Reported as sentences/s. Median of --embed-runs after 1 warm-up.

The inputs are deterministic and are written to benches/compare/inputs.json (committed) so that
the Rust side (`openexpert bench-runtime`) can use the very same ids and sentences:
  score_ids[b][t]   = ((b * 256 + t) * 7919 + 13) % 49152           (b < 8, t < 256)
  decode_prompt_ids = first 32 SmolLM2 tokens of DECODE_PROMPT_TEXT
  embed_sentences   = 256 sentences built by embed_sentences() below

Output JSON keys (shared with the Rust side): score_tokens_per_s, decode_tokens_per_s,
embed_sentences_per_s, threads, runs {score_tokens_per_s: [...], decode_tokens_per_s: [...],
embed_sentences_per_s: [...]}, plus descriptive extras (impl, shapes, versions, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
VOCAB = 49152
SCORE_BATCH, SCORE_LEN = 8, 256
DECODE_PROMPT_LEN, DECODE_NEW = 32, 64
EMBED_SENTENCES, EMBED_BATCH = 256, 64
DECODE_PROMPT_TEXT = (
    "Write a short story about a small robot who lives in a lighthouse by the sea and learns to "
    "paint the waves, the boats and the changing colours of the evening sky."
)
WORDS = (
    "the a small large red blue green old new quick slow happy quiet bright dark river mountain city "
    "garden house window road bridge forest ocean cloud morning evening teacher student doctor farmer "
    "child dog cat bird horse walks runs reads writes paints builds watches finds opens carries "
    "under over near behind across through with without after before during and but because while"
).split()


def score_ids() -> list[list[int]]:
    return [[((b * SCORE_LEN + t) * 7919 + 13) % VOCAB for t in range(SCORE_LEN)] for b in range(SCORE_BATCH)]


def embed_sentences() -> list[str]:
    """256 deterministic sentences of 26 words (+ a full stop): ~30 word pieces with [CLS]/[SEP]."""
    out = []
    n = len(WORDS)
    for i in range(EMBED_SENTENCES):
        words = [WORDS[(i * 31 + j * 17 + (i * j) % 7) % n] for j in range(26)]
        s = " ".join(words)
        out.append(s[0].upper() + s[1:] + ".")
    return out


def openexpert_home() -> Path:
    return Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, required=True, help="torch intra-op threads")
    ap.add_argument("--json", type=Path, required=True, help="where to write the results")
    ap.add_argument("--score-runs", type=int, default=5)
    ap.add_argument("--decode-runs", type=int, default=3)
    ap.add_argument("--embed-runs", type=int, default=3)
    ap.add_argument("--write-inputs", type=Path, default=HERE / "inputs.json", help="where to record the inputs")
    args = ap.parse_args()
    if args.threads < 1:
        sys.exit(f"error: --threads must be >= 1, got {args.threads}")
    if args.score_runs < 5 or args.decode_runs < 3 or args.embed_runs < 3:
        sys.exit("error: need at least 5 score runs, 3 decode runs and 3 embed runs")

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    home = openexpert_home()
    lm_dir = home / "models" / "smollm2-135m-instruct"
    emb_dir = home / "models" / "minilm-l6-v2"
    for p in (lm_dir / SMOLLM2_GGUF, emb_dir / "model.safetensors"):
        if not p.is_file():
            sys.exit(f"error: expected model file {p}, found nothing; fetch the assets first")

    lm_tok = AutoTokenizer.from_pretrained(lm_dir, gguf_file=SMOLLM2_GGUF)
    lm = AutoModelForCausalLM.from_pretrained(lm_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32).eval()
    emb_tok = AutoTokenizer.from_pretrained(emb_dir)
    emb = AutoModel.from_pretrained(emb_dir, dtype=torch.float32).eval()

    s_ids = score_ids()
    d_ids = lm_tok(DECODE_PROMPT_TEXT)["input_ids"][:DECODE_PROMPT_LEN]
    assert len(d_ids) == DECODE_PROMPT_LEN, len(d_ids)
    sentences = embed_sentences()
    piece_counts = [len(x) for x in emb_tok(sentences)["input_ids"]]
    inputs = {
        "score_ids": s_ids,
        "score_ids_formula": "((b * 256 + t) * 7919 + 13) % 49152",
        "decode_prompt_text": DECODE_PROMPT_TEXT,
        "decode_prompt_ids": d_ids,
        "decode_new_tokens": DECODE_NEW,
        "embed_sentences": sentences,
        "embed_batch": EMBED_BATCH,
        "embed_token_counts": piece_counts,
    }
    args.write_inputs.write_text(json.dumps(inputs) + "\n")

    x_score = torch.tensor(s_ids, dtype=torch.long)
    x_decode = torch.tensor([d_ids], dtype=torch.long)

    def score():
        logits = lm(input_ids=x_score).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        got = logp.gather(2, x_score[:, 1:].unsqueeze(-1)).squeeze(-1)
        assert got.shape == (SCORE_BATCH, SCORE_LEN - 1)
        return got

    def decode():
        out = lm.generate(
            x_decode,
            attention_mask=torch.ones_like(x_decode),
            do_sample=False,
            min_new_tokens=DECODE_NEW,
            max_new_tokens=DECODE_NEW,
            use_cache=True,
            pad_token_id=lm_tok.eos_token_id,
        )
        assert out.shape[1] == DECODE_PROMPT_LEN + DECODE_NEW, out.shape

    def embed():
        vecs = []
        for i in range(0, len(sentences), EMBED_BATCH):
            enc = emb_tok(
                sentences[i : i + EMBED_BATCH], padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
            h = emb(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            vecs.append(torch.nn.functional.normalize(pooled, p=2, dim=1))
        assert torch.cat(vecs).shape == (EMBED_SENTENCES, 384)

    secs: dict[str, list[float]] = {}
    with torch.inference_mode():
        for name, fn, runs in (
            ("score", score, args.score_runs),
            ("decode", decode, args.decode_runs),
            ("embed", embed, args.embed_runs),
        ):
            fn()  # warm-up
            secs[name] = [timed(fn) for _ in range(runs)]
            print(f"{name}: seconds {[round(s, 3) for s in secs[name]]}", file=sys.stderr)

    runs = {
        "score_tokens_per_s": [SCORE_BATCH * SCORE_LEN / s for s in secs["score"]],
        "decode_tokens_per_s": [DECODE_NEW / s for s in secs["decode"]],
        "embed_sentences_per_s": [EMBED_SENTENCES / s for s in secs["embed"]],
    }
    from importlib.metadata import version

    result = {
        "implementation": "pytorch",
        "score_tokens_per_s": statistics.median(runs["score_tokens_per_s"]),
        "decode_tokens_per_s": statistics.median(runs["decode_tokens_per_s"]),
        "embed_sentences_per_s": statistics.median(runs["embed_sentences_per_s"]),
        "threads": args.threads,
        "runs": runs,
        "seconds": secs,
        "shapes": {
            "score": {"batch": SCORE_BATCH, "seq_len": SCORE_LEN, "tokens": SCORE_BATCH * SCORE_LEN},
            "decode": {"batch": 1, "prompt_len": DECODE_PROMPT_LEN, "new_tokens": DECODE_NEW},
            "embed": {
                "sentences": EMBED_SENTENCES,
                "batch": EMBED_BATCH,
                "tokens_min": min(piece_counts),
                "tokens_max": max(piece_counts),
                "tokens_mean": sum(piece_counts) / len(piece_counts),
            },
        },
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": version("tokenizers"),
        },
        "dtype": "float32",
        "device": "cpu",
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "loadavg_at_end": os.getloadavg(),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"score {result['score_tokens_per_s']:.1f} tok/s, decode {result['decode_tokens_per_s']:.2f} tok/s, "
        f"embed {result['embed_sentences_per_s']:.1f} sent/s (threads={args.threads})"
    )


if __name__ == "__main__":
    main()
