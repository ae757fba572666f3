"""The selector interface: scores + budget + rng -> the chosen sample positions.

A selector is a dataclass whose fields are its settings (hard-prune fraction, number of ranges,
which score columns and with which weights), registered by name in ``SELECTORS``. Scores come as
the columns of the score file: 1-D arrays (one float per sample) or 2-D arrays (one embedding per
sample), all aligned with the same pool of samples.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from ..errors import LeantuneError, ParameterError
from ..registry import Registry


class Selector(Protocol):
    name: str

    def select(self, scores: dict[str, np.ndarray], budget: int, rng: np.random.Generator) -> np.ndarray:
        """Return ``budget`` distinct positions into the score arrays."""
        ...

    def columns(self) -> tuple[str, ...]:
        """The score columns this selector reads (each produced by the scorer of the same name)."""
        ...


SELECTORS: Registry[type] = Registry("selector")


def check_budget(budget: int, pool: int, where: str = "pool") -> None:
    """Budget must be a positive number of samples that the (possibly hard-pruned) pool can supply."""
    if budget <= 0:
        raise ParameterError("budget", budget, "must be a positive number of samples")
    if budget > pool:
        raise ParameterError("budget", budget, f"larger than the {where} ({pool} samples)")


def minmax(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1]; a constant column maps to zeros (no information, no division by zero)."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = values.min(), values.max()
    if hi == lo:
        return np.zeros_like(values)
    return (values - lo) / (hi - lo)


def column(scores: Mapping[str, np.ndarray], name: str, ndim: int = 1) -> np.ndarray:
    """Fetch a score column, checking it exists, has the right shape and only finite values."""
    if name not in scores:
        have = ", ".join(sorted(scores)) or "none"
        raise LeantuneError(f"score column {name!r} is missing (have: {have})")
    values = np.asarray(scores[name])
    if values.ndim != ndim:
        kind = "one value per sample" if ndim == 1 else "one vector per sample"
        raise LeantuneError(f"score column {name!r} has shape {values.shape}; expected {kind}")
    bad = ~np.isfinite(values) if ndim == 1 else ~np.isfinite(values).all(axis=1)
    if bad.any():
        first = ", ".join(map(str, np.flatnonzero(bad)[:5]))
        raise LeantuneError(f"score column {name!r} has {int(bad.sum())} non-finite values (positions {first}...)")
    return values


def combined_score(scores: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """DEALRec's overall score: sum of weight * minmax(column) over the weighted columns."""
    if not weights:
        raise LeantuneError("this selector needs at least one scalar score column (weights are empty)")
    total = None
    for name, weight in weights.items():
        part = weight * minmax(column(scores, name))
        total = part if total is None else total + part
    return total


def pool_size(scores: Mapping[str, np.ndarray]) -> int:
    sizes = {len(np.asarray(v)) for v in scores.values()}
    if len(sizes) != 1:
        raise LeantuneError(f"score columns have different lengths: {sorted(sizes)}")
    return sizes.pop()
