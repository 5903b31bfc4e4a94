#!/usr/bin/env python3
"""Reference token ids for lm-core's tokenizers (crates/lm-core/src/tokenizer.rs).

Run (from the repository root, with the reference venv):

    . ~/.cache/pyref/venv/bin/activate
    python scripts/gen_tokenizer_fixtures.py

Needs the real assets under $OPENEXPERT_HOME (default ~/.cache/openexpert):
models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf and models/minilm-l6-v2/.

Writes crates/lm-core/tests/fixtures/tokenizer/smollm2_gguf.json and minilm.json.

SmolLM2: transformers builds the tokenizer from the GGUF (`AutoTokenizer.from_pretrained(dir,
gguf_file=...)`). For `tokenizer.ggml.pre = smollm` it has no split rule and keeps GPT-2's byte-level
regex, while SmolLM2's own tokenizer.json (and llama.cpp's `smollm`) first splits every digit
(`Digits(individual_digits=True)`) and then applies the byte-level regex. The reference ids
(`ids`) are those of the real tokenizer's shape, obtained by giving transformers' GGUF tokenizer
that pre-tokenizer; `ids_transformers_gguf` records what transformers' GGUF path gives, so the
fixture shows where (and whether) the two differ.
"""

import json
import os
from pathlib import Path

from tokenizers import Regex, normalizers, pre_tokenizers
from transformers import AutoTokenizer
from transformers.integrations.gguf.gguf_tokenizer_mapping import _LLAMA3_SPLIT
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_SPLIT

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "lm-core" / "tests" / "fixtures" / "tokenizer"
HOME = Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))

TEXTS = [
    "Hello, world!",
    "12345 and 3.14159",
    "héllo 世界 🚀",
    " leading space",
    "  two leading spaces",
    "trailing spaces   ",
    "whitespace   runs\t\ttabs  \n  and newlines",
    "line1\nline2\n\nline4\n",
    "\r\nwindows line\r\nendings\r\n",
    "def f(x):\n    return x**2  # square\n",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "I'm sure they'll say we've done it, didn't they? It's JOHN'S.",
    "a  1 and b   22",
    "Price: $1,234.56 (approx. 1e-5) or 10%",
    "emoji 👨\u200d👩\u200d👧\u200d👦 family 🎉🎉",
    "Ünïcödé ÀÉÎÕÜ ß ﬁ e\u0301",
    "日本語のテキストです。",
    "مرحبا بالعالم",
    "https://example.com/path?q=1&r=2#frag",
    "text<|endoftext|>more <repo_name>x",
    "",
    "   ",
    "<|im_start|",
    "٣ Arabic-Indic ٣٤ and ² superscript ½",
    "CamelCaseIdentifier_with_snake_case123",
    "\n\n\n",
    'JSON: {"key": [1, 2, 3], "b": null}',
    "x" * 40 + " " + "ab" * 10,
]

MINILM_TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "héllo 世界 🚀 12345",
    "  spaces\tand\nnewlines  ",
    "",
]


def smollm2():
    d = HOME / "models" / "smollm2-135m-instruct"
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(str(d), gguf_file=name)
    hf_pre = json.loads(tok.backend_tokenizer.to_str())["pre_tokenizer"]
    via_gguf = [tok(t, add_special_tokens=True)["input_ids"] for t in TEXTS]

    backend = tok.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    cases = []
    for text, ids_gguf in zip(TEXTS, via_gguf):
        ids = tok(text, add_special_tokens=True)["input_ids"]
        cases.append({
            "text": text,
            "ids": ids,
            "ids_transformers_gguf": ids_gguf,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    # The same vocabulary under the other pre-tokenizers lm-core supports, as the real Qwen2
    # tokenizer (NFC + Qwen2 split) and transformers' `llama-bpe` GGUF rule build them.
    for key, split, nfc in [("ids_pre_qwen2", QWEN2_SPLIT, True), ("ids_pre_llama_bpe", _LLAMA3_SPLIT, False)]:
        backend.normalizer = normalizers.NFC() if nfc else None
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        for case in cases:
            case[key] = tok(case["text"], add_special_tokens=True)["input_ids"]
    backend.normalizer = None
    differ = [c["text"] for c in cases if c["ids"] != c["ids_transformers_gguf"]]
    out = {
        "model": name,
        "transformers_gguf_pre_tokenizer": hf_pre,
        "reference_pre_tokenizer": "Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)]",
        "texts_where_transformers_gguf_differs": differ,
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "pad_token": tok.pad_token,
        "cases": cases,
    }
    write("smollm2_gguf.json", out)
    print(f"smollm2: {len(cases)} cases; transformers' GGUF path differs on {differ!r}")


def minilm():
    d = HOME / "models" / "minilm-l6-v2"
    tok = AutoTokenizer.from_pretrained(str(d))
    cases = []
    for text in MINILM_TEXTS:
        ids = tok(text, add_special_tokens=True)["input_ids"]
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True)})
    write("minilm.json", {"model": "all-MiniLM-L6-v2", "cases": cases})


def write(name, obj):
    OUT.mkdir(parents=True, exist_ok=True)
    p = OUT / name
    lines = ["{"]
    items = list(obj.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        if k == "cases":
            body = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in v)
            lines.append(f' "{k}": [\n{body}\n ]{comma}')
        else:
            lines.append(f' "{k}": {json.dumps(v, ensure_ascii=False)}{comma}')
    lines.append("}")
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    json.loads(p.read_text(encoding="utf-8"))
    print(f"wrote {p}")


if __name__ == "__main__":
    smollm2()
    minilm()
