#!/usr/bin/env python3
"""Generate the PEFT reference fixtures of the `lora-zoo` crate with the real `peft` library.

How to run (from the repository root, once; the outputs are committed):

    . ~/.cache/pyref/venv/bin/activate        # torch, transformers, gguf, safetensors, peft
    python scripts/gen_peft_fixtures.py [--model-dir ~/.cache/openexpert/models/smollm2-135m-instruct]

Base model: SmolLM2-135M-Instruct, loaded by transformers from the GGUF file (de-quantised to f32).
Writes under crates/lora-zoo/tests/fixtures/:

  adapters/a_qv_r4/        q_proj,v_proj, r=4, alpha=8, layers 0-1
  adapters/b_mlp_rslora/   q_proj + gate/up/down_proj, r=8, alpha=16, use_rslora, layer 1
  adapters/c_rank_pattern/ q_proj,v_proj,o_proj, r=2, alpha=4, rank_pattern {v_proj: 6},
                           alpha_pattern {o_proj: 1}, layer 0
  adapters/d_qv_r4/        like a (r=4) with alpha=16 and other weights (PEFT "linear" needs equal r)
      every adapter has random non-zero lora_B (init_lora_weights=False + fixed seeds).
  refs/combine_*.safetensors  PEFT add_weighted_adapter outputs (state dict of the new adapter, keys
                           without adapter name) for: cat(b,a), cat(c,a), cat(a,d), linear(a,d), svd(a,d,
                           rank 8 = exact), ties_svd(a,d), magnitude_prune_svd(a,d); weights and
                           options in refs/combine.json.
  refs/merged_delta.safetensors  (merge_and_unload weight - base weight)[:64] for two modules of b and
                           two of c, keys "<adapter>/<module>".
  refs/logits.safetensors  PEFT unmerged logits[:, :, :1024] of a fixed prompt for base and each
                           adapter (for the lm-core `AdaptedLinear` tests).
"""

import argparse
import json
import os
import shutil
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "lora-zoo" / "tests" / "fixtures"
BASE_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"

ADAPTERS = {
    "a_qv_r4": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 1]),
    "b_mlp_rslora": dict(
        r=8,
        lora_alpha=16,
        use_rslora=True,
        target_modules=["q_proj", "gate_proj", "up_proj", "down_proj"],
        layers_to_transform=[1],
    ),
    "c_rank_pattern": dict(
        r=2,
        lora_alpha=4,
        target_modules=["q_proj", "v_proj", "o_proj"],
        rank_pattern={"v_proj": 6},
        alpha_pattern={"o_proj": 1},
        layers_to_transform=[0],
    ),
    "d_qv_r4": dict(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 1]),
}

DELTA_ROWS = 64
PROMPT_IDS = [1, 504, 3458, 282, 4649, 314, 253, 2030]


def load_base(model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(
        model_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32
    ).eval()


def make_adapters(model_dir: Path):
    for i, (name, kw) in enumerate(ADAPTERS.items()):
        base = load_base(model_dir)
        torch.manual_seed(1000 + i)
        cfg = LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, lora_dropout=0.0, **kw)
        pm = get_peft_model(base, cfg)
        # kaiming-uniform A and B have similar norms; shrink B so that ΔW is a small perturbation.
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.mul_(0.05)
        pm.base_model.model.config._name_or_path = BASE_NAME
        pm.peft_config["default"].base_model_name_or_path = BASE_NAME
        d = OUT / "adapters" / name
        if d.exists():
            shutil.rmtree(d)
        pm.save_pretrained(d)
        readme = d / "README.md"
        if readme.exists():
            readme.unlink()
        print("wrote", d, sum(f.stat().st_size for f in d.iterdir()), "bytes")


def combine_refs(model_dir: Path):
    base = load_base(model_dir)
    names = list(ADAPTERS)
    pm = PeftModel.from_pretrained(base, OUT / "adapters" / names[0], adapter_name=names[0])
    for n in names[1:]:
        pm.load_adapter(OUT / "adapters" / n, adapter_name=n)
    jobs = {
        # PEFT's cat injects the new adapter with the first adapter's layers_to_transform and the union
        # of targets, and fails where no source adapter has a module: pick orders where that works.
        "cat_ba": dict(adapters=["b_mlp_rslora", "a_qv_r4"], weights=[-0.4, 0.7], combination_type="cat"),
        "cat_ca": dict(adapters=["c_rank_pattern", "a_qv_r4"], weights=[1.3, 0.7], combination_type="cat"),
        "cat_ad": dict(adapters=["a_qv_r4", "d_qv_r4"], weights=[0.7, -0.4], combination_type="cat"),
        "linear_ad": dict(adapters=["a_qv_r4", "d_qv_r4"], weights=[0.7, -0.4], combination_type="linear"),
        "svd_ad_r8": dict(adapters=["a_qv_r4", "d_qv_r4"], weights=[0.7, -0.4], combination_type="svd",
                          svd_rank=8),
        "ties_svd_ad": dict(adapters=["a_qv_r4", "d_qv_r4"], weights=[0.7, 0.4], combination_type="ties_svd",
                            density=0.5, svd_rank=4),
        "magnitude_prune_svd_ad": dict(adapters=["a_qv_r4", "d_qv_r4"], weights=[0.7, 0.4],
                                       combination_type="magnitude_prune_svd", density=0.3, svd_rank=4),
    }
    meta = {}
    refs = OUT / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    for out_name, kw in jobs.items():
        pm.add_weighted_adapter(adapter_name=out_name, **kw)
        sd = get_peft_model_state_dict(pm, adapter_name=out_name)
        sd = {k: v.detach().contiguous().clone() for k, v in sd.items()}
        # keep only modules some source adapter has (the new adapter is injected more widely, zero there)
        sd = {k: v for k, v in sd.items() if v.abs().sum() > 0}
        save_file(sd, refs / f"combine_{out_name}.safetensors")
        cfg = pm.peft_config[out_name]
        scaling = {}
        for mod_name, mod in pm.named_modules():
            if isinstance(getattr(mod, "scaling", None), dict) and out_name in mod.scaling:
                key = mod_name.removeprefix("base_model.model.")
                if any(k.startswith("base_model.model." + key + ".") for k in sd):
                    scaling[key] = float(mod.scaling[out_name])
        meta[out_name] = dict(kw, r=cfg.r, lora_alpha=cfg.lora_alpha, use_rslora=cfg.use_rslora, scaling=scaling)
        print("combined", out_name, len(sd), "tensors")
    (refs / "combine.json").write_text(json.dumps(meta, indent=1, sort_keys=True))


def merged_deltas(model_dir: Path):
    picks = {
        "b_mlp_rslora": ["model.layers.1.mlp.down_proj", "model.layers.1.self_attn.q_proj"],
        "c_rank_pattern": ["model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj"],
    }
    out = {}
    for name, modules in picks.items():
        base = load_base(model_dir)
        before = {m: base.get_submodule(m).weight.detach().clone() for m in modules}
        pm = PeftModel.from_pretrained(base, OUT / "adapters" / name)
        merged = pm.merge_and_unload()
        for m in modules:
            # the first DELTA_ROWS output rows only, to keep the committed file small
            delta = merged.get_submodule(m).weight.detach() - before[m]
            out[f"{name}/{m}"] = delta[:DELTA_ROWS].contiguous()
    save_file(out, OUT / "refs" / "merged_delta.safetensors")
    print("merged deltas", list(out))


@torch.no_grad()
def logits(model_dir: Path):
    ids = torch.tensor([PROMPT_IDS])
    out = {}
    base = load_base(model_dir)
    out["base"] = base(ids).logits[:, :, :1024].contiguous()
    for name in ADAPTERS:
        pm = PeftModel.from_pretrained(load_base(model_dir), OUT / "adapters" / name).eval()
        out[name] = pm(ids).logits[:, :, :1024].contiguous()
    out["input_ids"] = ids.to(torch.int64)
    save_file(out, OUT / "refs" / "logits.safetensors")
    print("logits", {k: tuple(v.shape) for k, v in out.items()})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=os.path.expanduser("~/.cache/openexpert/models/smollm2-135m-instruct"))
    ap.add_argument("--skip-adapters", action="store_true", help="reuse the committed adapters, redo the refs")
    ap.add_argument("--only", nargs="*", choices=["adapters", "combine", "merged", "logits"],
                    help="run only these steps (default: all)")
    args = ap.parse_args()
    model_dir = Path(args.model_dir)
    torch.set_grad_enabled(False)
    steps = args.only or ["adapters", "combine", "merged", "logits"]
    if "adapters" in steps and not args.skip_adapters:
        make_adapters(model_dir)
    if "combine" in steps:
        combine_refs(model_dir)
    if "merged" in steps:
        merged_deltas(model_dir)
    if "logits" in steps:
        logits(model_dir)


if __name__ == "__main__":
    main()
