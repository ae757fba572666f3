"""Prompts and target answers for attribute extraction, per product (JSON) or per question.

Prompts go through the tokenizer's chat template when it has one (SmolLM2-Instruct does), so the
zero-shot baseline sees the format the instruct model was tuned on and fine-tuning keeps it.
"""
from __future__ import annotations

import json

from .attributes_data import Product
from .attributes_scoring import NA

SYSTEM = "You extract product attribute values from product titles."
PRODUCT_INSTRUCTION = 'Fill in this JSON object: copy each value from the title, or write "n/a" if the title does not state it.'

QUESTION_INSTRUCTION = 'Answer with the value copied from the title, or "n/a" if the title does not state it.'


def _chat(user: str, tokenizer) -> str:
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return f"{SYSTEM}\n\n{user}\nAnswer: "


def product_user_text(product: Product) -> str:
    """The user message of a product prompt (before any chat template)."""
    # A key skeleton rather than a list of names: the zero-shot model then sees the answer's shape.
    skeleton = json.dumps({a: "?" for a in product.attributes}, ensure_ascii=False)
    return f"Product category: {product.category}\nTitle: {product.text}\n{PRODUCT_INSTRUCTION}\n{skeleton}"


def product_prompt(product: Product, tokenizer=None) -> str:
    return _chat(product_user_text(product), tokenizer)


def product_answer(product: Product) -> str:
    return json.dumps({a: NA if v is None else v for a, v in product.attributes.items()}, ensure_ascii=False)


def question_prompt(product: Product, attribute: str, tokenizer=None) -> str:
    user = (
        f"Product category: {product.category}\nTitle: {product.text}\n"
        f"What is the {attribute} of this product? {QUESTION_INSTRUCTION}"
    )
    return _chat(user, tokenizer)


def question_answer(product: Product, attribute: str) -> str:
    value = product.attributes[attribute]
    return NA if value is None else value
