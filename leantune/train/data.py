"""Training data helpers. The tokenisation of prompt + response (the Alpaca-LoRA / BIGRec recipe)
lives in ``leantune.data.tokenize`` and is re-exported here; the effort and gradient scorers use
the same function, so they measure the loss that is trained."""
from __future__ import annotations

import hashlib
import json
from typing import Sequence

from ..data.tokenize import IGNORE_INDEX, tokenize_example, tokenize_examples  # noqa: F401  (the one tokenisation)
from ..tasks.base import TextExample


def examples_fingerprint(examples: Sequence[TextExample] | None) -> str:
    """Content hash of a list of examples, so a folder trained on other data is never reused."""
    digest = hashlib.sha256()
    for ex in examples or ():
        digest.update(json.dumps([ex.prompt, ex.response]).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def count_tokens(rows: Sequence[dict]) -> int:
    return sum(len(row["input_ids"]) for row in rows)
