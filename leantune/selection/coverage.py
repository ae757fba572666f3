"""Coverage-enhanced selection (DEALRec) and stratified selection (CCS).

Both follow the same recipe, from CCS (Zheng et al., ICLR 2023) as adopted by DEALRec:

1. drop the ``hard_prune`` fraction with the highest score (``floor(hard_prune * n)`` samples;
   high influence/effort/difficulty = hard or noisy),
2. split the remaining score range into ``ranges`` equal-width intervals (upper edges inclusive,
   the first interval also takes the minimum),
3. visit the non-empty intervals from the smallest to the largest; from each take
   ``min(its size, floor(remaining budget / intervals left))`` samples uniformly at random.

Small intervals are used up first, and the floor leaves the remainder to the larger intervals
that follow, so the budget is always filled exactly when the pool is large enough. Ties in the
score are broken by position so the hard-pruned set is deterministic.

The two selectors differ only in the score they stratify: DEALRec's ``minmax(influence) + λ ·
minmax(effort)`` (``coverage``), or a single difficulty score such as EL2N (``stratified``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ..errors import ParameterError
from .base import SELECTORS, check_budget, combined_score


def equal_width_ranges(score: np.ndarray, ranges: int) -> np.ndarray:
    """Interval index (0..ranges-1) of each score; intervals are (lo, hi] except the first."""
    lo, hi = float(score.min()), float(score.max())
    if hi == lo:
        return np.zeros(len(score), dtype=np.int64)
    edges = lo + (hi - lo) * np.arange(1, ranges + 1) / ranges
    edges[-1] = hi  # rounding must not push the maximum past the last edge
    return np.searchsorted(edges, score, side="left").astype(np.int64)


def coverage_sample(
    score: np.ndarray, budget: int, rng: np.random.Generator, hard_prune: float = 0.1, ranges: int = 50
) -> np.ndarray:
    """Positions chosen by hard pruning + equal-width ranges + smallest-range-first sampling."""
    score = np.asarray(score, dtype=np.float64)
    if not 0.0 <= hard_prune < 1.0:
        raise ParameterError("hard_prune", hard_prune, "must be in [0, 1)")
    if ranges < 1:
        raise ParameterError("ranges", ranges, "must be at least 1")
    check_budget(budget, len(score))
    n_hard = int(np.floor(hard_prune * len(score)))
    order = np.argsort(-score, kind="stable")  # highest first, ties by position
    kept = np.sort(order[n_hard:])
    check_budget(budget, len(kept), where=f"pool left after hard_prune {hard_prune:g} drops {n_hard}")

    bins = equal_width_ranges(score[kept], ranges)
    groups = [kept[bins == b] for b in range(ranges)]
    groups = sorted((g for g in groups if len(g)), key=len)  # stable: equal sizes keep score order
    chosen, remaining = [], budget
    for i, group in enumerate(groups):
        take = min(len(group), remaining // (len(groups) - i))
        chosen.append(rng.choice(group, size=take, replace=False))
        remaining -= take
    chosen = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    # Holds whenever the pool is large enough (the last range absorbs the remainder).
    assert remaining == 0 and len(chosen) == budget, (remaining, len(chosen), budget)
    return chosen


@SELECTORS.register("coverage")
@dataclass
class CoverageSelector:
    """DEALRec: stratify ``Σ w · minmax(column)`` (default influence + 0.3 · effort)."""

    weights: dict = field(default_factory=lambda: {"influence": 1.0, "effort": 0.3})
    hard_prune: float = 0.1
    ranges: int = 50
    name: ClassVar[str] = "coverage"

    def columns(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def select(self, scores, budget, rng):
        return coverage_sample(combined_score(scores, self.weights), budget, rng, self.hard_prune, self.ranges)


@SELECTORS.register("stratified")
@dataclass
class StratifiedSelector(CoverageSelector):
    """CCS: stratify one difficulty score (default EL2N) after pruning the hardest."""

    weights: dict = field(default_factory=lambda: {"el2n": 1.0})
    name: ClassVar[str] = "stratified"
