#!/usr/bin/env python3
"""Reference fixtures for lm-core's GGUF dequantisation (crates/lm-core/src/io/dequant.rs).

Run (from the repository root, with the reference venv):

    . ~/.cache/pyref/venv/bin/activate
    python scripts/gen_gguf_fixtures.py

Writes, under crates/lm-core/tests/fixtures/gguf/:

* ``dequant_reference.gguf``: for every supported ggml type T, a tensor ``<t>.random`` made of
  random but valid blocks (random bytes with sane f16 scales) and, where the ``gguf`` package can
  quantise, ``<t>.quantized`` from ``gguf.quants.quantize`` of Gaussian data; next to each, an F32
  tensor ``<name>.ref`` holding ``gguf.quants.dequantize`` of those bytes. The Rust test
  ``tests/gguf_dequant.rs`` asserts bit equality.
* ``smollm2_reference.json``: for a few tensors of the real SmolLM2-135M-Instruct Q4_1 GGUF
  (``$OPENEXPERT_HOME/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf``, default
  ``~/.cache/openexpert``): shape, sha256 of the dequantised f32 little-endian bytes, the bit
  patterns of the first 64 values, and the same for q/k weights un-permuted with transformers'
  own ``_reverse_permute_weights``. Skipped (with a note) when the model file is absent.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "lm-core" / "tests" / "fixtures" / "gguf"

# Byte offsets of the f16 scale fields inside one block of each block-quantised type.
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q4_K: [0, 2],
    T.Q5_K: [0, 2],
    T.Q6_K: [208],
}
QUANTIZABLE = [T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]


def sane_f16(rng, n):
    """Finite f16 scales: mostly normal magnitudes, both signs, some tiny/subnormal and zero."""
    mag = np.exp(rng.uniform(np.log(1e-4), np.log(4.0), n))
    sign = rng.choice([-1.0, 1.0], n)
    vals = (mag * sign).astype(np.float16)
    vals[rng.random(n) < 0.05] = np.float16(0.0)
    sub = rng.random(n) < 0.05
    vals[sub] = (rng.integers(1, 1024, sub.sum()).astype(np.uint16)).view(np.float16)
    return vals


def random_blocks(rng, qtype, n_blocks):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:
        return rng.standard_normal(n_blocks).astype(np.float32).view(np.uint8)
    if qtype == T.F16:
        return sane_f16(rng, n_blocks).view(np.uint8)
    if qtype == T.BF16:
        x = rng.standard_normal(n_blocks).astype(np.float32) * 3
        return (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    blocks = rng.integers(0, 256, (n_blocks, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        blocks[:, off:off + 2] = sane_f16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(-1)


def main():
    rng = np.random.default_rng(20261121)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "dequant_reference.gguf"
    w = gguf.GGUFWriter(str(path), arch="reference")
    w.add_description("random blocks and their gguf.quants.dequantize reference; see scripts/gen_gguf_fixtures.py")
    types = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]
    for qtype in types:
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        rows = 3
        row_elems = 512 if block_size <= 32 else 2 * block_size
        n_blocks = rows * row_elems // block_size
        raw = random_blocks(rng, qtype, n_blocks).reshape(rows, -1)
        cases = [("random", raw)]
        if qtype in QUANTIZABLE:
            x = (rng.standard_normal((rows, row_elems)) * rng.uniform(0.01, 2.0, (rows, 1))).astype(np.float32)
            cases.append(("quantized", gguf.quants.quantize(x, qtype).view(np.uint8).reshape(rows, -1)))
        for label, data in cases:
            name = f"{qtype.name.lower()}.{label}"
            ref = gguf.quants.dequantize(data, qtype).astype(np.float32).reshape(rows, row_elems)
            assert np.isfinite(ref).all(), name
            if qtype == T.F32:
                w.add_tensor(name, data.view(np.float32))
            elif qtype == T.F16:
                w.add_tensor(name, data.view(np.float16))
            else:
                # raw_shape is the byte shape for quantised data.
                w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
            w.add_tensor(name + ".ref", ref)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({path.stat().st_size} bytes)")
    smollm2_reference()


def describe(arr):
    flat = np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)
    return {
        "shape": list(arr.shape),
        "sha256": hashlib.sha256(flat.astype("<f4").tobytes()).hexdigest(),
        "first64_bits": [int(b) for b in flat[:64].view(np.uint32)],
        "sum": float(flat.astype(np.float64).sum()),
    }


def smollm2_reference():
    home = Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))
    model = home / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not model.exists():
        print(f"note: {model} absent, smollm2_reference.json not regenerated", file=sys.stderr)
        return
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    processor = LlamaTensorProcessor(config={})

    reader = gguf.GGUFReader(str(model))
    tensors = {t.name: t for t in reader.tensors}
    n_head = int(reader.fields["llama.attention.head_count"].contents())
    n_kv = int(reader.fields["llama.attention.head_count_kv"].contents())
    out = {"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "tensors": {}}
    for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
                 "blk.29.ffn_down.weight", "blk.0.attn_norm.weight", "output_norm.weight"]:
        t = tensors[name]
        shape = [int(d) for d in reversed(t.shape)]
        deq = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape)
        entry = {"ggml_type": t.tensor_type.name, **describe(deq)}
        if name.endswith("attn_q.weight") or name.endswith("attn_k.weight"):
            heads = n_head if "attn_q" in name else n_kv
            entry["n_head"] = heads
            entry["unpermuted"] = describe(processor._reverse_permute_weights(deq, heads))
        out["tensors"][name] = entry
    p = OUT / "smollm2_reference.json"
    p.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {p}")


if __name__ == "__main__":
    main()
