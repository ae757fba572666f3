"""Scorers by name (``SCORERS``); importing this package registers every scorer module present.

Scorer modules may import torch, so light modules (``leantune.pruning``) import this package
only when they score.
"""
import importlib

from .base import SCORERS, Scorer, ScoringContext

for _module in ("random_score", "embedding", "influence", "surrogate_scores", "effort", "ccs", "tiger_effort"):
    try:
        importlib.import_module(f"{__name__}.{_module}")
    except ModuleNotFoundError as _exc:  # a scorer module not written yet
        if _exc.name != f"{__name__}.{_module}":
            raise

__all__ = ["SCORERS", "Scorer", "ScoringContext"]
