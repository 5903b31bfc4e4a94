#!/usr/bin/env python3
"""SentencePiece tokenizer fixtures for lm-core (run by hand, never at test time).

1. Trains a tiny SentencePiece BPE model (the `sentencepiece` package, byte fallback on, one
   user-defined and one control symbol) on a small built-in corpus, writes its vocabulary into a
   tiny Llama-style GGUF (the `gguf` package) and lets transformers build its tokenizer from that
   GGUF (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`): the reference ids and decoded texts.
   Output: crates/lm-core/tests/fixtures/sentencepiece/tiny_vocab.json (tokens, scores, token
   types, special ids and the cases). The Rust test writes the same vocabulary into a GGUF with
   lm-core's test writer and must give the same ids and texts.
2. When the optional asset gemma3-270m is fetched (`openexpert fetch gemma3-270m`), the same texts
   through transformers' tokenizer of the Gemma 3 GGUF:
   crates/lm-core/tests/fixtures/gemma3/tokenizer.json.

    . ~/.cache/pyref/venv/bin/activate   # sentencepiece, gguf, transformers, protobuf
    python scripts/gen_sentencepiece_fixtures.py
"""
import json
import os
import tempfile
from pathlib import Path

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates/lm-core/tests/fixtures"
HOME = Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))
GEMMA_DIR = HOME / "models" / "gemma3-270m"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A tokenizer splits text into pieces; pieces map to ids.",
    "Numbers like 12, 345 and 6789 appear in text too.",
    "She sells sea shells by the sea shore, and the shells she sells are sea shells.",
    "Hello world! Hello again, world. Goodbye, world.",
    "Language models predict the next token from the previous tokens.",
    "café naïve résumé",
    "Tokens, tokens, tokens: the model reads tokens and writes tokens.",
    "In 2024 there were 365 days; in 2025 there were 365 days as well.",
    "Question: what is two plus two? Answer: four.",
] * 20

# Texts covering unicode, digits, whitespace runs, byte-fallback characters and special tokens.
TEXTS = [
    "Hello world",
    "The capital of France is",
    " leading space",
    "  two leading spaces and trailing  ",
    "multiple   spaces\tand\ttabs\n\nnew lines\n",
    "Digits: 0123456789, 3.14159 and 1,000,000.",
    "Unicode: café, naïve, Ünïcödé, 日本語のテキスト, Ελληνικά, русский",
    "Emoji 🦀🚀 and rare 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<s>inline <sep> special </s> tokens <ctrl> <bos> <eos>",
    "a",
    " ",
    "",
]


def train_tiny(workdir: Path) -> Path:
    corpus = workdir / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    prefix = workdir / "tiny"
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        model_type="bpe",
        vocab_size=420,
        byte_fallback=True,
        character_coverage=0.98,
        user_defined_symbols=["<sep>"],
        control_symbols=["<ctrl>"],
        num_threads=1,
        minloglevel=2,
    )
    return Path(str(prefix) + ".model")


def write_gguf(path: Path, tokens, scores, types, bos, eos, unk):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    # Shape keys transformers reads for a llama config; no tensors are needed for a tokenizer.
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_block_count(1)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cases(tok, texts):
    out = []
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with_special = tok(text)["input_ids"]
        out.append({
            "text": text,
            "ids": ids,
            "ids_with_special_tokens": with_special,
            "pieces": tok.convert_ids_to_tokens(ids),
            "decoded": tok.decode(ids),
        })
    return out


def main():
    import transformers
    from transformers import AutoTokenizer

    generator = (f"scripts/gen_sentencepiece_fixtures.py; transformers {transformers.__version__}, "
                 f"sentencepiece {spm.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_file = train_tiny(tmp)
        proto = sp_pb2.ModelProto()
        proto.ParseFromString(model_file.read_bytes())
        tokens = [p.piece for p in proto.pieces]
        scores = [p.score for p in proto.pieces]
        # SentencePiece's piece types are llama.cpp's token types: 1 normal, 2 unknown,
        # 3 control, 4 user-defined, 5 unused, 6 byte.
        types = [int(p.type) for p in proto.pieces]
        sp = spm.SentencePieceProcessor(model_file=str(model_file))
        bos, eos, unk = sp.bos_id(), sp.eos_id(), sp.unk_id()
        write_gguf(tmp / "tiny.gguf", tokens, scores, types, bos, eos, unk)
        tok = AutoTokenizer.from_pretrained(str(tmp), gguf_file="tiny.gguf")
        rows = cases(tok, TEXTS)
        for row in rows:
            # For information: the sentencepiece library's own ids (no BOS).
            row["sentencepiece_ids"] = sp.encode(row["text"])
        out = FIXTURES / "sentencepiece" / "tiny_vocab.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "generator": generator,
            "tokens": tokens,
            "scores": scores,
            "token_types": types,
            "bos_id": bos,
            "eos_id": eos,
            "unk_id": unk,
            "cases": rows,
        }, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", out, len(tokens), "tokens")

    gemma = GEMMA_DIR / GEMMA_FILE
    if not gemma.is_file():
        print(f"{gemma} absent: run `openexpert fetch gemma3-270m` for the Gemma fixture")
        return
    tok = AutoTokenizer.from_pretrained(str(GEMMA_DIR), gguf_file=GEMMA_FILE)
    out = FIXTURES / "gemma3" / "tokenizer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"generator": generator, "model_file": GEMMA_FILE,
                               "cases": cases(tok, TEXTS)}, indent=1, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    print("wrote", out)


if __name__ == "__main__":
    main()
