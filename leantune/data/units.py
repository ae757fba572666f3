"""One rule for "N units, seed s": the same units in every task and command.

``seeded_sample(items, n, seed)`` draws ``n`` of ``items`` with ``random.Random(seed)`` and keeps
them in input order. Test users of BIGRec and TIGER, test products of attribute extraction and
evaluation subsets of curves and tuning all go through it, so two runs with the same ``seed`` and
count evaluate the same units and can be compared unit by unit.

``training_subset(pool, n, seed)`` is the same rule for *training* units: the first ``n`` of one
seeded permutation of the pool, so smaller subsets nest in larger ones (``nested_subsets``). A
random subset of N training units with seed s is the same in `finetune --budget`, `attributes
finetune --train-limit`, a learning curve's size-N run and a tuning study's `--train-size`.
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


def nested_subsets(pool: Sequence[T], sizes: Sequence[int], seed: int) -> dict[int, list[T]]:
    """``{n: the first n units of one seeded permutation of pool}``: each subset inside the larger ones."""
    import numpy as np

    too_big = [n for n in sizes if n > len(pool)]
    if too_big:
        raise LeantuneError(f"size {too_big[0]} is larger than the training pool ({len(pool)} units)")
    order = np.random.default_rng(seed).permutation(len(pool))
    return {n: [pool[i] for i in order[:n]] for n in sizes}


def training_subset(pool: Sequence[T], n: int | None, seed: int) -> list[T]:
    """``n`` training units for ``seed`` (``nested_subsets``' rule); the whole pool when ``n`` is None."""
    if n is None:
        return list(pool)
    return nested_subsets(pool, [n], seed)[n]
