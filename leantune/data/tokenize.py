"""The one tokenisation of prompt + response, used by training, evaluation and the text scorers.

The full text (prompt + response) is tokenised with the tokenizer's own special tokens, cut at
``cutoff_len``, and the end-of-sequence token is appended when there is room, so the model learns
to stop after the response. With ``train_on_inputs=False`` the prompt tokens get label -100 and
only the response (and EOS) carries loss.
"""
from __future__ import annotations

from typing import Sequence

from ..tasks.base import TextExample

IGNORE_INDEX = -100


def tokenize_example(tokenizer, example: TextExample, cutoff_len: int, train_on_inputs: bool = True) -> dict:
    full = tokenizer(example.prompt + example.response, truncation=True, max_length=cutoff_len)
    input_ids = list(full["input_ids"])
    if input_ids and input_ids[-1] != tokenizer.eos_token_id and len(input_ids) < cutoff_len:
        input_ids.append(tokenizer.eos_token_id)
    labels = list(input_ids)
    if not train_on_inputs:
        prompt_len = len(tokenizer(example.prompt, truncation=True, max_length=cutoff_len)["input_ids"])
        labels[:prompt_len] = [IGNORE_INDEX] * min(prompt_len, len(labels))
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def tokenize_examples(tokenizer, examples: Sequence[TextExample], cutoff_len: int, train_on_inputs: bool = True) -> list[dict]:
    return [tokenize_example(tokenizer, ex, cutoff_len, train_on_inputs) for ex in examples]


def answer_cut_off(tokenizer, example: TextExample, cutoff_len: int) -> bool:
    """True when cutting at ``cutoff_len`` leaves no answer token (the prompt fills the cut): with the
    loss on answers only such an example carries no loss at all."""
    labels = tokenize_example(tokenizer, example, cutoff_len, train_on_inputs=False)["labels"]
    return all(label == IGNORE_INDEX for label in labels)
