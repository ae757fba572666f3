"""Prompts and target answers for attribute extraction, per product (JSON) or per question.

Prompts go through the tokenizer's chat template when it has one (SmolLM2-Instruct does), so the
zero-shot baseline sees the format the instruct model was tuned on and fine-tuning keeps it.

Few-shot prompts (``shots``: evaluation without training) put solved examples before the question:
as earlier user/assistant turns in a chat template, or as earlier "Answer:" blocks without one.

Without a chat template a prompt ends in the cue ``"Answer: "``. Tokenizers that merge a space into
the next word (Gemma's: ``"▁{"``) then end the prompt on a lone ``"▁"`` token, while every solved
example's answer starts with the merged token. ``cue_space=False`` ends it in ``"Answer:"`` instead,
so the model writes the space itself, as in the examples (answers are parsed with surrounding
whitespace stripped). Chat-template prompts are not affected. ``leantune attributes evaluate``
chooses it per run: prompting a base model without an adapter (zero- or few-shot) ends without the
space, adapters keep it (``leantune.pipelines.attributes.default_cue_space``).
"""
from __future__ import annotations

import json
from typing import Sequence

from .attributes_data import Product
from .attributes_scoring import NA

SYSTEM = "You extract product attribute values from product titles."
PRODUCT_INSTRUCTION = 'Fill in this JSON object: copy each value from the title, or write "n/a" if the title does not state it.'

QUESTION_INSTRUCTION = 'Answer with the value copied from the title, or "n/a" if the title does not state it.'


def _chat(user: str, tokenizer, demos: Sequence[tuple[str, str]] = (), cue_space: bool = True) -> str:
    """The prompt for ``user``, after ``demos`` ((user, answer) pairs shown as solved examples);
    ``cue_space``: a plain prompt ends in "Answer: " (True) or "Answer:" (module docstring)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM}]
        for demo_user, demo_answer in demos:
            messages += [{"role": "user", "content": demo_user}, {"role": "assistant", "content": demo_answer}]
        messages.append({"role": "user", "content": user})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    shown = "".join(f"{demo_user}\nAnswer: {demo_answer}\n\n" for demo_user, demo_answer in demos)
    return f"{SYSTEM}\n\n{shown}{user}\nAnswer:" + (" " if cue_space else "")


def product_user_text(product: Product) -> str:
    """The user message of a product prompt (before any chat template)."""
    # A key skeleton rather than a list of names: the zero-shot model then sees the answer's shape.
    skeleton = json.dumps({a: "?" for a in product.attributes}, ensure_ascii=False)
    return f"Product category: {product.category}\nTitle: {product.text}\n{PRODUCT_INSTRUCTION}\n{skeleton}"


def product_prompt(product: Product, tokenizer=None, demos: Sequence[Product] = (), cue_space: bool = True) -> str:
    """The prompt for one product (``demos``: solved training products shown first, for few-shot)."""
    shown = [(product_user_text(d), product_answer(d)) for d in demos]
    return _chat(product_user_text(product), tokenizer, shown, cue_space)


def product_answer(product: Product) -> str:
    return json.dumps({a: NA if v is None else v for a, v in product.attributes.items()}, ensure_ascii=False)


def question_user_text(product: Product, attribute: str) -> str:
    """The user message of a question prompt (before any chat template)."""
    return (
        f"Product category: {product.category}\nTitle: {product.text}\n"
        f"What is the {attribute} of this product? {QUESTION_INSTRUCTION}"
    )


def question_prompt(product: Product, attribute: str, tokenizer=None, demos: Sequence[Product] = (), cue_space: bool = True) -> str:
    """The prompt for one (product, attribute) question (``demos``: solved products asked the same attribute)."""
    shown = [(question_user_text(d, attribute), question_answer(d, attribute)) for d in demos if attribute in d.attributes]
    return _chat(question_user_text(product, attribute), tokenizer, shown, cue_space)


def question_answer(product: Product, attribute: str) -> str:
    value = product.attributes[attribute]
    return NA if value is None else value
