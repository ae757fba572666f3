"""Selection from sample embeddings: k-center greedy and TF-DCon-style clustering.

Both read a 2-D score column (default ``embedding``: one vector per sample, by default the
SASRec user representation of the sample's history; see ``leantune.scoring.embedding``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import SELECTORS, check_budget, column


def _sq_dist(x: np.ndarray, sq: np.ndarray, i: int) -> np.ndarray:
    """Squared distances from every row to row ``i`` (one mat-vec instead of an n×d temporary).

    einsum, not ``x @ x[i]``: a threaded BLAS mat-vec this small was 6-20x slower on a busy machine.
    """
    return np.maximum(sq - 2.0 * np.einsum("ij,j->i", x, x[i]) + sq[i], 0.0)


def kcenter_greedy(x: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Sener & Savarese's greedy 2-approximation: start anywhere, then add the farthest point."""
    x = np.asarray(x, dtype=np.float32)
    check_budget(budget, len(x))
    sq = (x * x).sum(axis=1)
    chosen = np.empty(budget, dtype=np.int64)
    chosen[0] = rng.integers(len(x))
    nearest = _sq_dist(x, sq, chosen[0])
    for i in range(1, budget):
        # Chosen points sit at distance 0; once all distances are 0 (duplicates), take unchosen ones.
        nearest[chosen[:i]] = -1.0
        chosen[i] = int(np.argmax(nearest))
        nearest = np.minimum(nearest, _sq_dist(x, sq, chosen[i]))
    return chosen


def kmeanspp_init(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding in O(k·n·d) (scipy's ``minit='++'`` recomputes all distances: O(k²·n·d))."""
    sq = (x * x).sum(axis=1)
    picks = [int(rng.integers(len(x)))]
    d2 = _sq_dist(x, sq, picks[0])
    for _ in range(1, k):
        total = float(d2.sum())
        picks.append(int(rng.choice(len(x), p=d2 / total)) if total > 0 else int(rng.integers(len(x))))
        d2 = np.minimum(d2, _sq_dist(x, sq, picks[-1]))
    return x[picks].copy()


def cluster_quotas(sizes: np.ndarray, budget: int) -> np.ndarray:
    """One sample per cluster (largest clusters first if the budget is short), the rest by size."""
    quotas = np.zeros(len(sizes), dtype=np.int64)
    by_size = np.argsort(-sizes, kind="stable")
    first = by_size[sizes[by_size] > 0][:budget]
    quotas[first] = 1
    remaining = budget - len(first)
    while remaining > 0:
        room = sizes - quotas
        share = room * remaining / room.sum()
        extra = np.minimum(np.floor(share).astype(np.int64), room)
        if extra.sum() == 0:  # hand the rest out by largest remainder
            order = np.argsort(-(share - np.floor(share)) - (room > 0), kind="stable")[:remaining]
            extra = np.zeros_like(quotas)
            extra[order] = 1
            extra = np.minimum(extra, room)
        quotas += extra
        remaining -= int(extra.sum())
    return quotas


@SELECTORS.register("kcenter")
@dataclass
class KCenterSelector:
    """k-center greedy on the embedding column (coverage of the representation space)."""

    column: str = "embedding"
    name: ClassVar[str] = "kcenter"

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def select(self, scores, budget, rng):
        return kcenter_greedy(column(scores, self.column, ndim=2), budget, rng)


@SELECTORS.register("cluster")
@dataclass
class ClusterSelector:
    """TF-DCon-style: k-means on embeddings, then the samples nearest each centroid.

    TF-DCon condenses each user cluster into one synthetic user; as a *selection* baseline we keep
    real samples instead: ``clusters`` (default: the budget) k-means clusters, at least one sample
    per cluster and the rest in proportion to cluster size, nearest to the centroid first.
    """

    column: str = "embedding"
    clusters: int = 0  # 0: as many clusters as the budget
    iterations: int = 10
    name: ClassVar[str] = "cluster"

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def select(self, scores, budget, rng):
        from scipy.cluster.vq import kmeans2

        x = column(scores, self.column, ndim=2).astype(np.float32)
        check_budget(budget, len(x))
        k = min(self.clusters or budget, len(x))
        with warnings.catch_warnings():  # empty clusters are fine: they get no quota
            warnings.simplefilter("ignore")
            centroids, labels = kmeans2(x, kmeanspp_init(x, k, rng), iter=self.iterations, minit="matrix")
        quotas = cluster_quotas(np.bincount(labels, minlength=k), budget)
        chosen = []
        for c in np.flatnonzero(quotas):
            members = np.flatnonzero(labels == c)
            dist = ((x[members] - centroids[c]) ** 2).sum(axis=1)
            chosen.append(members[np.argsort(dist, kind="stable")[: quotas[c]]])
        return np.concatenate(chosen)
