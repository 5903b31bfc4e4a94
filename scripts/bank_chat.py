"""Shared helpers of the bank scripts: the SmolLM2 tokenizer (fixed for digits) and the conversation
convention used to train and evaluate every adapter of the default LoRA bank.

Imported by scripts/gen_bank_datasets.py, scripts/train_peft_bank.py and
benches/compare/train/anchor_train.py; not run on its own.

The convention (also documented in assets/datasets/README.md, and used by the Rust side):

  prompt   = the model's own chat template applied to [{"role": "user", "content": question}]
             with add_generation_prompt=True (SmolLM2's ChatML template inserts its default system
             prompt when no system message is given)
  response = f"{rationale}\\nThe answer is {answer}." when the item has a rationale,
             f"The answer is {answer}." otherwise, followed by the end-of-turn token "<|im_end|>"

Prompt and response are tokenized separately (no BOS is added: the template starts with
<|im_start|>) and concatenated; the training loss is on the response tokens (including
<|im_end|>) only. Evaluation: greedy generation from the prompt until <|im_end|>, then
`extract_answer` and an exact match of stripped strings against `answer`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
END_OF_TURN = "<|im_end|>"
ANSWER_PREFIX = "The answer is "


def openexpert_home() -> Path:
    """$OPENEXPERT_HOME, default ~/.cache/openexpert."""
    return Path(os.environ.get("OPENEXPERT_HOME", Path.home() / ".cache" / "openexpert"))


def smollm2_dir() -> Path:
    """Folder holding the SmolLM2-135M-Instruct GGUF file."""
    return openexpert_home() / "models" / "smollm2-135m-instruct"


def load_tokenizer(model_dir: Path | None = None):
    """transformers' tokenizer built from the GGUF, with SmolLM2's real pre-tokenizer.

    transformers' GGUF path keeps GPT-2's byte-level regex for `tokenizer.ggml.pre = smollm`; the
    real SmolLM2 tokenizer first splits every digit (see scripts/gen_tokenizer_fixtures.py).
    """
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    model_dir = model_dir or smollm2_dir()
    tok = AutoTokenizer.from_pretrained(str(model_dir), gguf_file=SMOLLM2_GGUF)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    assert tok("2024", add_special_tokens=False)["input_ids"].__len__() == 4, "digit split not active"
    return tok


def load_model(model_dir: Path | None = None):
    """SmolLM2-135M-Instruct in f32, loaded by transformers from the Q4_1 GGUF (de-quantised)."""
    import torch
    from transformers import AutoModelForCausalLM

    model_dir = model_dir or smollm2_dir()
    return AutoModelForCausalLM.from_pretrained(str(model_dir), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)


def prompt_text(tok, question: str) -> str:
    """The chat prompt of one question (template default system prompt, generation prompt on)."""
    return tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def response_text(item: dict) -> str:
    """The assistant response of one item, without the end-of-turn token."""
    rationale = item.get("rationale")
    if rationale:
        return f"{rationale}\n{ANSWER_PREFIX}{item['answer']}."
    return f"{ANSWER_PREFIX}{item['answer']}."


def encode_pair(tok, item: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids ending with <|im_end|>) of one item."""
    p = tok(prompt_text(tok, item["question"]), add_special_tokens=False)["input_ids"]
    r = tok(response_text(item) + END_OF_TURN, add_special_tokens=False)["input_ids"]
    return p, r


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(text: str, fallback: bool = False) -> str:
    """The final answer in a generated response.

    The text after the last "The answer is " up to the end of that line, with one final '.' and
    surrounding whitespace removed. With `fallback` and no "The answer is ": the last number in the
    text if there is one, else the last non-empty line (stripped of a final '.').
    """
    text = text.replace(END_OF_TURN, "")
    i = text.rfind(ANSWER_PREFIX)
    if i >= 0:
        out = text[i + len(ANSWER_PREFIX):].strip()
        # the answer ends at the first line break (anything after it is not part of the answer)
        out = out.split("\n", 1)[0].strip()
        return out[:-1].strip() if out.endswith(".") else out
    if not fallback:
        return ""
    nums = _NUMBER.findall(text)
    if nums:
        return nums[-1]
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last[:-1].strip() if last.endswith(".") else last


def answer_candidates(text: str, fallback: bool = False) -> set[str]:
    """Predictions that count as the model's answer: the "The answer is " extraction and, with
    `fallback` (the base model), also the last number and the last non-empty line (final '.' removed)."""
    out = {extract_answer(text)}
    if fallback:
        body = text.replace(END_OF_TURN, "")
        nums = _NUMBER.findall(body)
        if nums:
            out.add(nums[-1])
        lines = [ln.strip() for ln in body.strip().splitlines() if ln.strip()]
        if lines:
            last = lines[-1]
            out.add(last[:-1].strip() if last.endswith(".") else last)
    out.discard("")
    return out
