"""Evaluation: ranking metrics, generation, grounding."""
from .metrics import DEFAULT_KS, format_metrics, ranking_metrics, topk_from_scores

__all__ = ["DEFAULT_KS", "format_metrics", "ranking_metrics", "topk_from_scores"]
