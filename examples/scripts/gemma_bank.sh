#!/usr/bin/env bash
# A small LoRA bank on a second model family, Gemma 3 270M (SentencePiece tokenizer, sliding-window
# layers), through the same commands as SmolLM2. Run from an empty working directory after
# `cargo build --release -p openexpert`; the first line fetches the model (253 MB, Gemma terms).
# Gemma 3 270M is a base model without a chat template, so every command uses --format plain.
#
# 1. three adapters (chain_sum, letter_counting, spell_backward), trained briefly;
# 2. Rocket's ranking of that bank on the K-shot of a task it has no adapter for (basic_arithmetic);
# 3. each adapter and the base evaluated on held-out chain_sum items;
# 4. generate / score / embed with an adapter, a merged HF checkpoint and a GGUF -> HF export.
#
# STEPS (default 30) sets the optimiser steps per adapter; ~1 minute per 10 steps on 2 free cores.
set -euo pipefail
R=$(cd "$(dirname "$0")/../.." && pwd)
B="${OPENEXPERT_BIN:-${CARGO_TARGET_DIR:-$R/target}/release/openexpert}"
M=gemma3-270m
STEPS="${STEPS:-30}"
D=$R/assets/datasets
$B fetch $M
for T in chain_sum letter_counting spell_backward; do
  [ -d bank/$T ] || $B train --model $M --format plain --data $D/$T/train.jsonl \
    --max-steps "$STEPS" --batch-size 4 --max-len 96 --lr 1e-3 --lora-r 8 --lora-alpha 16 \
    --output bank/$T
done
head -n 8 $D/basic_arithmetic/train.jsonl > kshot.jsonl
$B rank-bank --model $M --format plain --bank bank --kshot kshot.jsonl --experts 2 --output rank.json
$B eval --model $M --format plain --task $D/chain_sum/eval.jsonl --limit 20 --shots 2 \
  --each-adapter bank/chain_sum --each-adapter bank/letter_counting --with-base --output eval.json
$B generate --model $M --format plain --adapter bank/chain_sum \
  --prompt "State the final answer to the following arithmetic problem: 12 + 30 ="
printf '{"text": "Gemma is a family of open models."}\n{"text": "A tokenizer splits text into pieces."}\n' > texts.jsonl
$B score --model $M --input texts.jsonl --output scored.jsonl --adapter bank/spell_backward
$B embed --model $M --input texts.jsonl --output emb.npy
$B lora merge --model $M --adapter bank/chain_sum --output merged
$B lora export --model $M --output gemma3-hf --dtype bf16
echo done
