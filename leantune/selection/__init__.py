"""Selectors by name (``SELECTORS``): coverage, stratified, topk, random, kcenter, cluster."""
from . import coverage, embedding, simple  # noqa: F401  (register the selectors)
from .base import SELECTORS, Selector

__all__ = ["SELECTORS", "Selector"]
