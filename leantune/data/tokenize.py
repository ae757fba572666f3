"""The one tokenisation of prompt + response, used by training, evaluation and the text scorers.

The full text (prompt + response) is tokenised with the tokenizer's own special tokens, cut at
``cutoff_len``, and the end-of-sequence token is appended when there is room, so the model learns
to stop after the response. With ``train_on_inputs=False`` the prompt tokens get label -100 and
only the response (and EOS) carries loss.

The prompt's own tokens always come first, as generation sees them. When the tokenizer merges the
prompt's last token into the response's first (a prompt ending in a space, "Answer: " + "Alpine" ->
"▁Alpine", as Gemma's tokenizer does for the plain prompt without a chat template), the full text's
tokens would start the answer inside the masked prompt and train on a prefix that generation never
sees; such an example is the prompt's tokens followed by the response's, tokenised on its own.
"""
from __future__ import annotations

from typing import Sequence

from ..tasks.base import TextExample

IGNORE_INDEX = -100


def tokenize_example(tokenizer, example: TextExample, cutoff_len: int, train_on_inputs: bool = True) -> dict:
    prompt_ids = list(tokenizer(example.prompt, truncation=True, max_length=cutoff_len)["input_ids"])
    input_ids = list(tokenizer(example.prompt + example.response, truncation=True, max_length=cutoff_len)["input_ids"])
    if input_ids[: len(prompt_ids)] != prompt_ids:  # the boundary token merged: keep the prompt's tokens (module docstring)
        input_ids = (prompt_ids + list(tokenizer(example.response, add_special_tokens=False)["input_ids"]))[:cutoff_len]
    if input_ids and input_ids[-1] != tokenizer.eos_token_id and len(input_ids) < cutoff_len:
        input_ids.append(tokenizer.eos_token_id)
    labels = list(input_ids)
    if not train_on_inputs:
        prompt_len = len(prompt_ids)
        labels[:prompt_len] = [IGNORE_INDEX] * min(prompt_len, len(labels))
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def tokenize_examples(tokenizer, examples: Sequence[TextExample], cutoff_len: int, train_on_inputs: bool = True) -> list[dict]:
    return [tokenize_example(tokenizer, ex, cutoff_len, train_on_inputs) for ex in examples]


def answer_cut_off(tokenizer, example: TextExample, cutoff_len: int) -> bool:
    """True when cutting at ``cutoff_len`` leaves no answer token (the prompt fills the cut): with the
    loss on answers only such an example carries no loss at all."""
    labels = tokenize_example(tokenizer, example, cutoff_len, train_on_inputs=False)["labels"]
    return all(label == IGNORE_INDEX for label in labels)
