"""Alpaca-style recommendation prompts as in BIGRec/DEALRec.

Titles are listed oldest to newest, joined by "; ". When the whole text does not fit the token
limit, the oldest titles are dropped first, because the newest interactions say most about the
next one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

ALPACA_HEADER = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
)


class Tokenizer(Protocol):
    def __call__(self, text: str, add_special_tokens: bool = ...) -> dict: ...


@dataclass(frozen=True)
class RecPrompt:
    prompt: str  # everything up to and including "### Response:\n"
    response: str  # the target title ("" at inference)
    kept_titles: int  # how many history titles survived the token limit


def instruction_text(item_noun: str) -> str:
    return (
        f"Given the {item_noun} that the user purchased before, please recommend "
        f"a new {_singular(item_noun)} that the user likes to the user."
    )


def _singular(noun: str) -> str:
    if noun.endswith("products"):
        return noun[: -len("products")] + "product"
    return noun[:-1] if noun.endswith("s") else noun


def user_input(titles: Sequence[str], item_noun: str) -> str:
    """The prompt's input section: the user's past titles."""
    return f"The user has purchased the following {item_noun} before, with titles as: " + "; ".join(titles)


def render(titles: Sequence[str], item_noun: str, response: str = "") -> str:
    user_input_text = user_input(titles, item_noun)
    return (
        f"{ALPACA_HEADER}### Instruction:\n{instruction_text(item_noun)}\n\n"
        f"### Input:\n{user_input_text}\n\n### Response:\n{response}"
    )


def build_prompt(
    titles: Sequence[str],
    item_noun: str,
    response: str = "",
    tokenizer=None,
    max_tokens: int = 512,
    reserve_tokens: int = 1,
) -> RecPrompt:
    """Render the prompt, dropping the oldest titles until prompt + response fit ``max_tokens``.

    ``reserve_tokens`` leaves room for the end-of-sequence token appended in training. Without a
    tokenizer no titles are dropped.
    """
    titles = list(titles)

    def length(start: int) -> int:
        text = render(titles[start:], item_noun, response)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + reserve_tokens

    start = 0
    if tokenizer is not None and titles and length(0) > max_tokens:
        # Smallest start index that fits: length(start) decreases as start grows.
        lo, hi = 1, len(titles)
        while lo < hi:
            mid = (lo + hi) // 2
            if length(mid) <= max_tokens:
                hi = mid
            else:
                lo = mid + 1
        start = lo
    prompt = render(titles[start:], item_noun)
    return RecPrompt(prompt=prompt, response=response, kept_titles=len(titles) - start)


def sample_prompt(dataset, sample, tokenizer=None, max_tokens: int = 512, with_response: bool = True) -> RecPrompt:
    titles = [dataset.title(i) for i in sample.history]
    response = dataset.title(sample.targets[0]) if with_response else ""
    return build_prompt(titles, dataset.item_noun, response, tokenizer, max_tokens)
