"""Top-K ranking metrics with several targets per user, as the DEALRec/BIGRec evaluation computes them.

Recall@K = (targets among the top K) / (number of targets).
NDCG@K   = DCG@K / IDCG@K, DCG summing 1/log2(rank + 1) over hits (rank from 1) and IDCG over
           the first min(number of targets, K) positions.
Both are averaged over users.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .units import mean_ranking_metrics, ranking_unit_rows

DEFAULT_KS = (5, 10, 20, 50)


def ranking_metrics(
    topk: Sequence[Sequence[int]] | np.ndarray,
    targets: Sequence[Sequence[int]],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Average Recall@K and NDCG@K. ``topk[u]`` lists item ids best first (at least max(ks) long)."""
    if len(topk) != len(targets):
        raise ValueError(f"{len(topk)} rankings but {len(targets)} target lists")
    if len(targets) == 0:
        raise ValueError("no users to evaluate")
    if any(len(t) == 0 for t in targets):
        raise ValueError("a user has no targets")
    return mean_ranking_metrics(ranking_unit_rows(range(len(targets)), topk, targets, ks), ks)


def topk_from_scores(scores, k: int, exclude: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Top-``k`` column indices per row of a (users x items) score matrix, best first.

    ``exclude[u]`` lists column indices to rank last (e.g. the padding column 0).
    """
    import torch

    scores = torch.as_tensor(scores).clone().float()
    if exclude is not None:
        for row, cols in enumerate(exclude):
            if len(cols):
                scores[row, torch.as_tensor(list(cols), dtype=torch.long)] = -math.inf
    return torch.topk(scores, k, dim=1).indices.numpy()


def format_metrics(metrics: dict[str, float], keys: Sequence[str] | None = None) -> str:
    keys = keys or list(metrics)
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)
