"""Top-K ranking metrics with several targets per user, as the DEALRec/BIGRec evaluation computes them.

Pure functions of rankings and targets, so every layer may compute them: SASRec's and TIGER's
training loops validate with them (``models/``), the evaluation layer reports them per unit
(``evaluation/units.py``) and on average.

Recall@K = (targets among the top K) / (number of targets).
NDCG@K   = DCG@K / IDCG@K, DCG summing 1/log2(rank + 1) over hits (rank from 1) and IDCG over
           the first min(number of targets, K) positions.
Both are averaged over users.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

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



def ranking_unit_rows(unit_ids: Sequence, topk, targets: Sequence[Sequence[int]], ks: Sequence[int]) -> list[dict]:
    """Per-user hits, Recall@K and NDCG@K (the terms that ``ranking_metrics`` averages)."""
    if len(unit_ids) != len(topk) or len(topk) != len(targets):
        raise ValueError(f"{len(unit_ids)} units, {len(topk)} rankings, {len(targets)} target lists")
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    idcg_prefix = np.cumsum(discounts)
    rows = []
    for uid, ranking, tgt in zip(unit_ids, topk, targets):
        tgt_set = {int(t) for t in tgt}
        if not tgt_set:
            raise ValueError(f"unit {uid}: no targets")
        hits = np.array([int(i) in tgt_set for i in list(ranking)[: max(ks)]], dtype=float)
        row = {"unit": str(uid), "cluster": str(uid), "n_targets": len(tgt_set)}
        for k in ks:
            h = hits[:k]
            row[f"hits@{k}"] = int(h.sum())
            row[f"recall@{k}"] = float(h.sum()) / len(tgt_set)
            row[f"ndcg@{k}"] = float((h * discounts[: len(h)]).sum()) / float(idcg_prefix[min(len(tgt_set), k) - 1])
        rows.append(row)
    return rows


def mean_ranking_metrics(rows: Sequence[dict], ks: Sequence[int]) -> dict[str, float]:
    """Recall@K and NDCG@K averaged over the per-user rows of ``ranking_unit_rows``."""
    return {f"{m}@{k}": float(np.mean([r[f"{m}@{k}"] for r in rows])) for k in ks for m in ("recall", "ndcg")}
