"""Ranking metrics (``leantune.metrics``, re-exported here) and their one-line printout."""
from __future__ import annotations

from typing import Sequence

from ..metrics import DEFAULT_KS, ranking_metrics, topk_from_scores  # noqa: F401  (the evaluation layer's names)


def format_metrics(metrics: dict[str, float], keys: Sequence[str] | None = None) -> str:
    keys = keys or list(metrics)
    return "  ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics)
