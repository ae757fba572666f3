"""Score-ranking baselines: top-k on a score (GraNd, EL2N, or DEALRec without coverage) and random."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .base import SELECTORS, check_budget, combined_score, pool_size


@SELECTORS.register("topk")
@dataclass
class TopKSelector:
    """Keep the ``budget`` samples with the highest ``Σ w · minmax(column)``; ties by position."""

    weights: dict = field(default_factory=lambda: {"el2n": 1.0})
    name: ClassVar[str] = "topk"

    def columns(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def select(self, scores, budget, rng):
        score = combined_score(scores, self.weights)
        check_budget(budget, len(score))
        return np.argsort(-score, kind="stable")[:budget]


@SELECTORS.register("random")
@dataclass
class RandomSelector:
    """Uniform sample of ``budget`` positions without replacement; reads no score."""

    name: ClassVar[str] = "random"

    def columns(self) -> tuple[str, ...]:
        return ()

    def select(self, scores, budget, rng):
        n = pool_size(scores)
        check_budget(budget, n)
        return rng.choice(n, size=budget, replace=False)
