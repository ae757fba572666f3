"""``random``: a uniform score per sample, a sanity baseline for every selector.

The value depends only on (seed, sample id), never on chunking or pool order, so resumed or
sharded scoring gives the same numbers.
"""
from __future__ import annotations

import numpy as np

from .base import SCORERS


@SCORERS.register("random")
class RandomScorer:
    name = "random"

    def score(self, samples, ctx) -> dict[str, np.ndarray]:
        values = [np.random.default_rng([ctx.seed, s.sample_id]).random() for s in samples]
        return {"random": np.asarray(values, dtype=np.float64)}
