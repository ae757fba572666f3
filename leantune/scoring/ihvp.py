"""Inverse-Hessian-vector products for influence functions: LiSSA and conjugate gradient.

Both solvers work on flat parameter vectors and take the Hessian only through a callback
(Hessian-vector products), so they know nothing about the model.

LiSSA (Agarwal et al. 2017), as DEALRec's ``influence_score.py`` runs it: starting from h = v,
repeat ``depth`` times h <- v + (1 - damp)·h - H_b·h / scale with H_b the Hessian of a random
mini-batch (one sample in the reference). Its fixed point is h = scale·(H + damp·scale·I)^-1 v, so
we return h / scale = (H + λI)^-1 v with the *effective* damping λ = damp·scale (0.25 with the
reference's damp 0.01 and scale 25). The reference returns h itself, 25 times larger; the factor
does not change any ranking. The iteration converges while the eigenvalues of H lie in
(-λ, 2·scale - λ); a diverging run raises an error naming ``scale``.

Conjugate gradient solves (H + λI)x = v on the full (or a fixed subsample's) Hessian: an
independent, deterministic check of LiSSA when given the same λ. With a literal λ = 0.01 it does not
converge on a trained SASRec, whose Hessian is indefinite; CG stops with an error when it meets a
direction of non-positive curvature.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import LeantuneError

HVP = Callable[[torch.Tensor], torch.Tensor]
BatchHVP = Callable[[torch.Tensor, np.ndarray], torch.Tensor]


@dataclass
class LissaConfig:
    depth: int = 5000  # recursion steps (reference: 5000)
    damp: float = 0.01  # reference: 0.01
    scale: float = 25.0  # reference: 25
    batch_size: int = 1  # samples per stochastic Hessian (reference: 1)
    repeats: int = 1  # independent recursions averaged (reference ``--iteration``: 1)

    @property
    def effective_damping(self) -> float:
        """The λ of the (H + λI)^-1 v that LiSSA converges to."""
        return self.damp * self.scale


@dataclass
class CGConfig:
    damping: float = 0.25  # λ; LissaConfig().effective_damping for a like-for-like check
    max_iter: int = 100
    tol: float = 1e-5  # stop when ||residual|| <= tol·||v||


def lissa(hvp: BatchHVP, v: torch.Tensor, num_samples: int, cfg: LissaConfig | None = None, seed: int = 0,
          progress: bool = False) -> torch.Tensor:
    """Stochastic estimate of (H + damp·scale·I)^-1 v; ``hvp(x, idx)`` = Hessian of the mean loss over
    sample positions ``idx``, times ``x``."""
    cfg = cfg or LissaConfig()
    rng = np.random.default_rng(seed)
    batch = min(cfg.batch_size, num_samples)
    total = torch.zeros_like(v)
    steps = range(cfg.depth * cfg.repeats)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="LiSSA", unit="step", mininterval=1.0)
    # The fixed point is at most ||v|| / (damp + λ_min/scale) long; a recursion 1e10 times longer diverged.
    limit = float(v.norm()) / cfg.damp
    h = v.clone()
    for step in steps:
        if step % cfg.depth == 0 and step:
            total += h
            h = v.clone()
        idx = rng.choice(num_samples, size=batch, replace=False) if batch > 1 else rng.integers(num_samples, size=1)
        h = v + (1.0 - cfg.damp) * h - hvp(h, idx) / cfg.scale
        if step % 100 == 99 and not float(h.norm()) < 1e10 * limit:  # also catches inf and nan
            raise LeantuneError(
                f"LiSSA diverged after {step + 1} steps (scale {cfg.scale}); raise the scale so that "
                "the Hessian's largest eigenvalue stays below 2·scale"
            )
    total += h
    if not torch.isfinite(total).all():
        raise LeantuneError(f"LiSSA diverged (scale {cfg.scale}); raise the scale")
    return total / (cfg.repeats * cfg.scale)


@dataclass
class CGResult:
    x: torch.Tensor
    iterations: int
    relative_residual: float
    converged: bool


def conjugate_gradient(hvp: HVP, v: torch.Tensor, cfg: CGConfig | None = None) -> CGResult:
    """Solve (H + damping·I) x = v with ``hvp(x)`` = H x (H symmetric)."""
    cfg = cfg or CGConfig()

    def apply(x: torch.Tensor) -> torch.Tensor:
        return hvp(x) + cfg.damping * x

    norm_v = float(v.norm())
    if norm_v == 0:
        return CGResult(torch.zeros_like(v), 0, 0.0, True)
    x = torch.zeros_like(v)
    r = v.clone()
    p = r.clone()
    rr = float(r @ r)
    for it in range(1, cfg.max_iter + 1):
        ap = apply(p)
        curvature = float(p @ ap)
        if curvature <= 0:
            raise LeantuneError(
                f"conjugate gradient met non-positive curvature at iteration {it}: H + {cfg.damping}·I is not "
                "positive definite; raise the damping"
            )
        alpha = rr / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = float(r @ r)
        if rr_new ** 0.5 <= cfg.tol * norm_v:
            return CGResult(x, it, rr_new ** 0.5 / norm_v, True)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return CGResult(x, cfg.max_iter, rr ** 0.5 / norm_v, False)
