"""Gradient influence from the LLM itself (LESS, Xia et al., ICML 2024), for any text dataset.

Each training example's gradient of its mean answer loss with respect to the chosen LoRA-B
matrices (the same per-sample gradients whose norm is DEALRec's effort,
``EffortModel.batch_gradients``) is projected to ``dim`` dimensions with a seeded random
Rademacher matrix (Johnson–Lindenstrauss: inner products and norms are kept up to about
1/sqrt(dim)), normalised, and scored by its mean cosine similarity with the projected gradients of
a target set (the validation records, or ``--target FILE``): a high score means a step on that
example lowers the target loss. LESS takes the gradients at checkpoints of a short warm-up
training on a small random part of the data; ``warmup_steps`` does the same (0 = the base model
with a freshly initialised LoRA, which is cheaper but ranks less well in LESS's ablations).

When ``dim`` is at least the number of gradient entries no projection is needed and the exact
gradients are used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import LeantuneError


@dataclass
class GradientInfluenceConfig:
    """Settings of the ``gradient-influence`` scorer (``--opt gi_<field>=...``)."""

    dim: int = 8192  # projection dimension (>= the gradient size: no projection)
    warmup_steps: int = 0  # LoRA warm-up steps on a seeded part of the training data before taking gradients (LESS)
    warmup_fraction: float = 0.05  # that part (LESS: 5%)
    batch_size: int = 4  # examples per gradient batch

    def validate(self) -> None:
        if self.dim < 1:
            raise LeantuneError(f"gi_dim {self.dim}: must be at least 1")
        if self.warmup_steps < 0:
            raise LeantuneError(f"gi_warmup_steps {self.warmup_steps}: must be 0 or more")
        if not 0 < self.warmup_fraction <= 1:
            raise LeantuneError(f"gi_warmup_fraction {self.warmup_fraction}: must be in (0, 1]")
        if self.batch_size < 1:
            raise LeantuneError(f"gi_batch_size {self.batch_size}: must be at least 1")

    @classmethod
    def from_options(cls, options: dict) -> "GradientInfluenceConfig":
        from dataclasses import fields

        cfg = cls(**{f.name: options[f"gi_{f.name}"] for f in fields(cls) if f"gi_{f.name}" in options})
        cfg.validate()
        return cfg


def projection(n_params: int, dim: int, seed: int) -> np.ndarray | None:
    """A seeded (n_params, dim) Rademacher matrix scaled by 1/sqrt(dim); ``None`` when ``dim >= n_params``
    (the exact gradients are then used). The same seed gives the same matrix on every machine."""
    if dim >= n_params:
        return None
    rng = np.random.default_rng([seed, 11])
    signs = rng.integers(0, 2, size=(n_params, dim), dtype=np.int8)
    return (signs.astype(np.float32) * 2 - 1) / np.float32(np.sqrt(dim))


def gradient_features(model, encoded: Sequence, dim: int, seed: int, batch_size: int = 4, progress: bool = False) -> np.ndarray:
    """Projected, unit-normalised per-example gradients (len(encoded), min(dim, n_params)); an example
    without answer tokens gets a zero row. Batches are length-sorted; rows come back in input order."""
    from tqdm.auto import tqdm

    proj = projection(model.gradient_size(), dim, seed)
    width = model.gradient_size() if proj is None else dim
    out = np.zeros((len(encoded), width), dtype=np.float32)
    order = np.argsort([len(e.ids) for e in encoded], kind="stable")
    with tqdm(total=len(encoded), desc="gradients", unit="example", disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            part = order[start:start + batch_size]
            grads = model.batch_gradients([encoded[i] for i in part])
            feats = grads if proj is None else grads @ proj
            norms = np.linalg.norm(feats, axis=1, keepdims=True)
            out[part] = np.divide(feats, norms, out=np.zeros_like(feats), where=norms > 0)
            bar.update(len(part))
    return out


def influence_scores(train_features: np.ndarray, target_features: np.ndarray) -> np.ndarray:
    """Mean cosine similarity of each (unit-normalised) training row with the target rows."""
    if len(target_features) == 0:
        raise LeantuneError("gradient influence needs at least one target example")
    return (train_features @ target_features.mean(axis=0)).astype(np.float64)
