"""One rule for "N units, seed s": the same units in every task and command.

``seeded_sample(items, n, seed)`` draws ``n`` of ``items`` with ``random.Random(seed)`` and keeps
them in input order. Test users of BIGRec and TIGER, test products of attribute extraction and
evaluation subsets of curves and tuning all go through it, so two runs with the same ``seed`` and
count evaluate the same units and can be compared unit by unit.
"""
from __future__ import annotations

import random
from typing import Sequence, TypeVar

from ..errors import LeantuneError

T = TypeVar("T")


def seeded_sample(items: Sequence[T], n: int | None, seed: int, name: str = "n") -> list[T]:
    """``n`` items drawn with ``seed``, in input order; all of them when ``n`` is None or ≥ len(items)."""
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise LeantuneError(f"{name} {n}: must be at least 1")
    chosen = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in chosen]
