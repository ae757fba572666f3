"""Inverse-Hessian-vector products for influence functions: LiSSA and conjugate gradient.

Both solvers work on flat parameter vectors and take the Hessian only through a callback
(Hessian-vector products), so they know nothing about the model.

LiSSA (Agarwal et al. 2017), as DEALRec's ``influence_score.py`` runs it: starting from h = v,
repeat ``depth`` times h <- v + (1 - damp)·h - H_b·h / scale with H_b the Hessian of a random
mini-batch (one sample in the reference). Its fixed point is h = scale·(H + damp·scale·I)^-1 v, so
we return h / scale = (H + λI)^-1 v with the *effective* damping λ = damp·scale (0.25 with the
reference's damp 0.01 and scale 25). The reference returns h itself, 25 times larger; the factor
does not change any ranking.

The recursion is stable only while every mini-batch Hessian's eigenvalues stay below
2·scale - λ. The reference differentiates one 64×64 matrix of a BCE-trained SASRec; over all
parameters of our full-softmax surrogate, single-sample Hessians on Games reach top eigenvalues of
76-139 (power iteration, measured), so scale 25 diverges. The defaults therefore keep the
reference's depth, mini-batch and effective damping λ = 0.25 but use scale 100, damp 0.0025
(5000 steps are still 12 e-folds of the slowest mode, 1/damp = 400 steps each). A run that
diverges anyway restarts with the scale doubled and damp halved (λ unchanged), up to
``max_restarts`` times; ``lissa_info`` records what was used.

Conjugate gradient solves (H + λI)x = v on the full (or a fixed subsample's) Hessian: an
independent, deterministic check of LiSSA when given the same λ. With a literal λ = 0.01 it does not
converge on a trained SASRec, whose Hessian is indefinite; CG stops with an error when it meets a
direction of non-positive curvature.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from ..errors import LeantuneError

HVP = Callable[[torch.Tensor], torch.Tensor]
BatchHVP = Callable[[torch.Tensor, np.ndarray], torch.Tensor]


@dataclass
class LissaConfig:
    depth: int = 5000  # recursion steps (reference: 5000)
    damp: float = 0.0025  # reference: 0.01 (with scale 25: the same λ = 0.25)
    scale: float = 100.0  # reference: 25, which diverges on the full-parameter surrogate
    batch_size: int = 1  # samples per stochastic Hessian (reference: 1)
    repeats: int = 1  # independent recursions averaged (reference ``--iteration``: 1)
    max_restarts: int = 3  # on divergence: scale x2, damp /2, start again

    @property
    def effective_damping(self) -> float:
        """The λ of the (H + λI)^-1 v that LiSSA converges to."""
        return self.damp * self.scale


@dataclass
class CGConfig:
    damping: float = 0.25  # λ; LissaConfig().effective_damping for a like-for-like check
    max_iter: int = 100
    tol: float = 1e-5  # stop when ||residual|| <= tol·||v||


class LissaDiverged(LeantuneError):
    pass


def lissa(hvp: BatchHVP, v: torch.Tensor, num_samples: int, cfg: LissaConfig | None = None, seed: int = 0,
          progress: bool = False, info: dict | None = None) -> torch.Tensor:
    """Stochastic estimate of (H + damp·scale·I)^-1 v; ``hvp(x, idx)`` = Hessian of the mean loss over
    sample positions ``idx``, times ``x``. ``info`` (if given) receives the scale used and restarts."""
    cfg = cfg or LissaConfig()
    for restart in range(cfg.max_restarts + 1):
        try:
            out = _lissa(hvp, v, num_samples, cfg, seed, progress)
        except LissaDiverged:
            if restart == cfg.max_restarts:
                raise
            cfg = replace(cfg, scale=cfg.scale * 2, damp=cfg.damp / 2)
            continue
        if info is not None:
            info.update(scale_used=cfg.scale, damp_used=cfg.damp, restarts=restart)
        return out
    raise AssertionError("unreachable")


def _lissa(hvp: BatchHVP, v: torch.Tensor, num_samples: int, cfg: LissaConfig, seed: int, progress: bool) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    batch = min(cfg.batch_size, num_samples)
    # The fixed point is at most ||v|| / (damp + λ_min/scale) long; 1e4 times ||v|| / damp means
    # H + λI is singular to 1e-4 of λ (CG would fail too) or, far more likely, the run diverged.
    limit = 1e4 * float(v.norm()) / cfg.damp
    total = torch.zeros_like(v)
    steps = range(cfg.depth * cfg.repeats)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"LiSSA (scale {cfg.scale:g})", unit="step", mininterval=1.0)
    h = v.clone()
    for step in steps:
        if step % cfg.depth == 0 and step:
            total += h
            h = v.clone()
        idx = rng.choice(num_samples, size=batch, replace=False) if batch > 1 else rng.integers(num_samples, size=1)
        h = v + (1.0 - cfg.damp) * h - hvp(h, idx) / cfg.scale
        if step % 50 == 49 and not float(h.norm()) < limit:  # also catches inf and nan
            raise LissaDiverged(
                f"LiSSA diverged after {step + 1} steps (scale {cfg.scale:g}); raise the scale so that the "
                "mini-batch Hessians' largest eigenvalue stays below 2·scale"
            )
    total += h
    if not float(total.norm()) < limit * cfg.repeats:
        raise LissaDiverged(f"LiSSA diverged (scale {cfg.scale:g}); raise the scale")
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
