"""``influence``: DEALRec's influence of each training sample on the surrogate's empirical risk.

Definition (DEALRec Eq. 11, ``code/prune/influence_score.py``): with ℓ_i the loss of training
sample i on the trained SASRec surrogate, g = (1/n) Σ_i ∇ℓ_i the empirical-risk gradient and H the
Hessian of the empirical risk,

    influence_i = (H + λI)^-1 g · ∇ℓ_i        (the reference: ``matmul(H_inverse, grad_z)``)

Removing sample i (weight -1/n) moves the parameters by about (1/n) H^-1 ∇ℓ_i, which changes the
empirical risk by about (1/n) gᵀH^-1∇ℓ_i = influence_i / n. So **higher = removing the sample would
raise the empirical risk more = the sample is more valuable to keep**; the sign and scale match the
reference's score (up to the reference's extra factor ``scale``, see ``ihvp``). Note that DEALRec's
``prune.py`` then drops the *highest* 10% of the combined score as "hard" samples before its
coverage-enhanced selection; that is the selector's business, not the score's.

Column ``grad_product`` is the Hessian-free variant g·∇ℓ_i (H replaced by I).

How it is computed (all 49,156 Games samples in seconds rather than minutes):

* s = (H + λI)^-1 g once (LiSSA by default: the reference's depth, mini-batch and effective damping
  λ = 0.25, with a larger scale for stability, see ``ihvp``; or CG), with Hessian-vector
  products by double backward of the mean mini-batch loss;
* every sample's s·∇ℓ_i at once: per batch, forward mode along s through the encoder and the
  output layer's directional derivative in closed form (``SurrogateObjective.products``), so no
  per-sample gradient is ever materialised, not even for the 1.1M-entry item-embedding table.

The loss is the surrogate's per-sample cross-entropy of the sample's target over all items, in eval
mode (no dropout), as the reference computes it. Parameters (option ``influence_params``): ``all``
(default), ``reference`` (the one 64×64 attention-output matrix of the last block that DEALRec uses
"for efficiency"), or comma-separated parameter-name prefixes such as ``item_emb,blocks.1``. ``all``
is the default because it is the influence of the model that was trained: with forward-mode products
it costs about as much as one layer, and a single attention matrix misses the item embeddings,
where most of a sample's target-specific gradient lives.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..data import Sample
from ..errors import LeantuneError
from .base import SCORERS
from .ihvp import CGConfig, LissaConfig, conjugate_gradient, lissa
from .surrogate_scores import context_surrogate, finite_column

SOLVERS = ("lissa", "cg")


@dataclass
class InfluenceConfig:
    params: str = "all"  # all | reference | comma-separated parameter-name prefixes
    solver: str = "lissa"  # lissa | cg
    depth: int = 5000  # LiSSA recursion depth (reference 5000)
    damp: float = 0.0025  # LiSSA damping (reference 0.01; see ihvp for why 0.0025 with scale 100)
    scale: float = 100.0  # LiSSA scale (reference 25, unstable on the full-parameter surrogate)
    lissa_batch: int = 1  # samples per stochastic Hessian in LiSSA (reference 1)
    lissa_restarts: int = 3  # on divergence, restart with scale x2 and damp /2 (same λ)
    cg_iters: int = 100
    cg_tol: float = 1e-5
    cg_damping: float | None = None  # None = LiSSA's effective damping damp·scale, for a like-for-like check
    cg_samples: int = 0  # CG's Hessian over a fixed random subsample of this size (0 = all samples)
    batch_size: int = 1024  # samples per batch for gradients and products

    @classmethod
    def from_options(cls, options: dict, base: "InfluenceConfig | None" = None) -> "InfluenceConfig":
        """``base`` updated by ``options['influence_<field>']`` entries."""
        base = base or cls()
        changes = {f.name: options[f"influence_{f.name}"] for f in fields(cls) if f"influence_{f.name}" in options}
        cfg = replace(base, **changes)
        if cfg.solver not in SOLVERS:
            raise LeantuneError(f"influence_solver {cfg.solver!r}: choose one of {', '.join(SOLVERS)}")
        return cfg

    @property
    def lissa(self) -> LissaConfig:
        return LissaConfig(depth=self.depth, damp=self.damp, scale=self.scale, batch_size=self.lissa_batch,
                           max_restarts=self.lissa_restarts)

    @property
    def cg(self) -> CGConfig:
        damping = self.lissa.effective_damping if self.cg_damping is None else self.cg_damping
        return CGConfig(damping=damping, max_iter=self.cg_iters, tol=self.cg_tol)


def select_params(model: nn.Module, spec: str = "all") -> list[str]:
    """Names of the parameters that ``spec`` picks (see the module docstring)."""
    names = [n for n, _ in model.named_parameters()]
    if spec == "all":
        return names
    if spec == "reference":
        last = len(model.blocks) - 1
        return [f"blocks.{last}.out.weight"]
    prefixes = [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]
    if not chosen:
        raise LeantuneError(f"influence_params {spec!r} matches no surrogate parameter (e.g. {', '.join(names[:4])}, ...)")
    return chosen


class _SampleLoss(nn.Module):
    """Wraps the surrogate so ``functional_call`` can swap parameters for the whole loss."""

    def __init__(self, sasrec):
        super().__init__()
        self.sasrec = sasrec

    def forward(self, seqs, targets=None):
        """The per-sample loss, or with no targets the representation h = sasrec(seqs)."""
        from ..models.sasrec import sample_loss

        if targets is None:
            return self.sasrec(seqs)
        return sample_loss(self.sasrec, seqs, targets)


@contextmanager
def frozen(model: nn.Module):
    """Eval mode and no autograd bookkeeping for the real parameters (torch.func differentiates copies)."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)


class SurrogateObjective:
    """Per-sample losses of the surrogate on ``samples`` as a function of a flat parameter vector.

    ``theta`` holds the chosen parameters (``select_params``); the others stay fixed. Methods give the
    mean gradient, Hessian-vector products of the mean loss over chosen samples, and every sample's
    directional derivative v·∇ℓ_i. Call inside ``frozen(model)``.
    """

    def __init__(self, model, samples: Sequence[Sample], params: str = "all", batch_size: int = 1024):
        from ..models.sasrec import pad_histories

        if any(len(s.targets) != 1 for s in samples):
            raise LeantuneError("influence needs training samples with exactly one target each")
        self.wrapper = _SampleLoss(model)
        named = dict(model.named_parameters())
        self.names = select_params(model, params)
        self.shapes = [named[n].shape for n in self.names]
        self.sizes = [named[n].numel() for n in self.names]
        self.theta = torch.cat([named[n].detach().reshape(-1) for n in self.names])
        # The padding row of the item table is fixed (padding_idx): autograd gives it no gradient,
        # so directions are projected off it for forward-mode products to agree.
        self.free = torch.ones_like(self.theta)
        offset = 0
        for name, size, shape in zip(self.names, self.sizes, self.shapes):
            if name == "item_emb.weight":
                self.free[offset:offset + shape[1]] = 0
            offset += size
        max_len = model.cfg.max_len
        self.seqs = pad_histories([s.history for s in samples], max_len)
        self.targets = torch.tensor([s.targets[0] for s in samples], dtype=torch.long)
        self.lengths = np.array([min(len(s.history), max_len) for s in samples])
        self.batch_size = batch_size
        self.n = len(samples)
        device = self.theta.device
        self.seqs, self.targets = self.seqs.to(device), self.targets.to(device)

    def _params(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = theta.split(self.sizes)
        return {f"sasrec.{n}": p.view(s) for n, p, s in zip(self.names, parts, self.shapes)}

    def losses(self, theta: torch.Tensor, idx) -> torch.Tensor:
        from ..models.sasrec import trim_left

        idx = torch.as_tensor(idx, dtype=torch.long, device=self.seqs.device)
        seqs = trim_left(self.seqs[idx])
        return torch.func.functional_call(self.wrapper, self._params(theta), (seqs, self.targets[idx]))

    def batches(self, subset: np.ndarray | None = None) -> list[np.ndarray]:
        """Length-sorted batches of sample positions (of all samples, or of ``subset``)."""
        from ..models.sasrec import length_batches

        if subset is None:
            return length_batches(self.lengths, self.batch_size, None)
        subset = np.asarray(subset)
        return [subset[b] for b in length_batches(self.lengths[subset], self.batch_size, None)]

    def mean_grad(self) -> torch.Tensor:
        """g = (1/n) Σ_i ∇ℓ_i over all samples."""
        theta = self.theta.detach().requires_grad_(True)
        total = torch.zeros_like(self.theta)
        for idx in self.batches():
            total += torch.autograd.grad(self.losses(theta, idx).sum(), theta)[0]
        return total / self.n

    def _hvp_sum(self, theta: torch.Tensor, v: torch.Tensor, idx) -> torch.Tensor:
        # Double backward, as the reference does: per call it costs about a third of torch.func's
        # forward-over-reverse, which matters for thousands of small LiSSA steps.
        (grad,) = torch.autograd.grad(self.losses(theta, idx).sum(), theta, create_graph=True)
        return torch.autograd.grad(grad @ v, theta)[0]

    def hvp(self, v: torch.Tensor, idx) -> torch.Tensor:
        """Hessian of the mean loss over ``idx``, times ``v``."""
        theta = self.theta.detach().requires_grad_(True)
        return self._hvp_sum(theta, v * self.free, idx) / len(idx)

    def full_hvp(self, v: torch.Tensor, subset: np.ndarray | None = None) -> torch.Tensor:
        """Hessian of the mean loss over all samples (or the positions ``subset``), times ``v``."""
        theta = self.theta.detach().requires_grad_(True)
        v = v * self.free
        batches = self.batches() if subset is None else self.batches(subset)
        count = self.n if subset is None else len(subset)
        return sum(self._hvp_sum(theta, v, idx) for idx in batches) / count

    def products(self, v: torch.Tensor) -> np.ndarray:
        """v·∇ℓ_i for every sample i, a batch at a time, without forming any per-sample gradient.

        Forward mode through the encoder gives h and its tangent δh (the input rows of the item
        table included); the output layer is done by hand, since for ℓ = logsumexp(h·E) - h·E_t

            δℓ = (pE - E_t)·δh + (p·δE - δE_t)·h        (p = softmax(h·E), rows of E = items)

        which costs two [B, items] x [items, H] products instead of forward-mode autograd's pass
        through the [B, items] log-softmax (about 2x faster; equal to the per-sample loop).
        """
        out = np.zeros(self.n, dtype=np.float64)
        v = v * self.free
        for idx in self.batches():
            out[idx] = self._batch_products(v, idx).double().cpu().numpy()
        return out

    def _batch_products(self, v: torch.Tensor, idx) -> torch.Tensor:
        from ..models.sasrec import trim_left

        idx = torch.as_tensor(idx, dtype=torch.long, device=self.seqs.device)
        seqs, targets = trim_left(self.seqs[idx]), self.targets[idx]
        h, dh = torch.func.jvp(lambda th: torch.func.functional_call(self.wrapper, self._params(th), (seqs,)),
                               (self.theta,), (v,))
        key = "sasrec.item_emb.weight"
        emb = self._params(self.theta).get(key, self.wrapper.sasrec.item_emb.weight.detach())
        demb = self._params(v).get(key)
        with torch.no_grad():
            probs = (h @ emb[1:].T).softmax(-1)
            out = ((probs @ emb[1:] - emb[targets]) * dh).sum(1)
            if demb is not None:
                out += ((probs @ demb[1:] - demb[targets]) * h).sum(1)
        return out

    def sample_grad(self, i: int) -> torch.Tensor:
        """∇ℓ_i of one sample (the slow path the batched products replace; for checks and benchmarks)."""
        return torch.func.grad(lambda th: self.losses(th, [i]).sum())(self.theta)


@dataclass
class InfluenceResult:
    influence: np.ndarray
    grad_product: np.ndarray
    ihvp: torch.Tensor  # s = (H + λI)^-1 g
    grad: torch.Tensor  # g
    timings: dict
    solver_info: dict


def compute_influence(model, train_samples: Sequence[Sample], cfg: InfluenceConfig | None = None, seed: int = 0,
                      progress: bool = False) -> InfluenceResult:
    """Influence and gradient product of every sample in ``train_samples`` (the empirical risk's samples)."""
    cfg = cfg or InfluenceConfig()
    timings: dict[str, float] = {}
    with frozen(model):
        start = time.perf_counter()
        obj = SurrogateObjective(model, train_samples, cfg.params, cfg.batch_size)
        g = obj.mean_grad()
        timings["grad_s"] = time.perf_counter() - start

        start = time.perf_counter()
        if cfg.solver == "lissa":
            info = {"solver": "lissa", **vars(cfg.lissa), "effective_damping": cfg.lissa.effective_damping}
            s = lissa(obj.hvp, g, obj.n, cfg.lissa, seed=seed, progress=progress, info=info)
        else:
            subset = None
            if 0 < cfg.cg_samples < obj.n:
                subset = np.sort(np.random.default_rng(seed).choice(obj.n, cfg.cg_samples, replace=False))
            res = conjugate_gradient(lambda v: obj.full_hvp(v, subset), g, cfg.cg)
            s = res.x
            info = {"solver": "cg", **vars(cfg.cg), "hessian_samples": obj.n if subset is None else len(subset),
                    "iterations": res.iterations, "relative_residual": res.relative_residual, "converged": res.converged}
        timings["ihvp_s"] = time.perf_counter() - start

        start = time.perf_counter()
        influence = obj.products(s)
        timings["products_s"] = time.perf_counter() - start
        grad_product = obj.products(g)
    info["params"] = cfg.params
    info["num_params"] = int(obj.theta.numel())
    return InfluenceResult(influence, grad_product, s, g, timings, info)


@SCORERS.register("influence")
class InfluenceScorer:
    """DEALRec influence on the SASRec surrogate; options ``influence_<field>`` of :class:`InfluenceConfig`,
    ``surrogate_dir`` (a ``leantune surrogate train`` folder) or a surrogate in ``ctx.extras``."""

    name = "influence"

    def __init__(self, config: InfluenceConfig | None = None):
        self.config = config or InfluenceConfig()

    def score(self, samples, ctx) -> dict[str, np.ndarray]:
        cfg = InfluenceConfig.from_options(ctx.options, self.config)
        model = context_surrogate(ctx)
        train = ctx.dataset.train_samples
        key = ("influence", json.dumps(asdict(cfg), sort_keys=True), id(model))
        if key not in ctx.extras:  # scoring several subsets reuses one computation over all samples
            ctx.extras[key] = compute_influence(model, train, cfg, seed=ctx.seed, progress=ctx.options.get("progress", True))
        result = ctx.extras[key]
        ctx.extras["influence_info"] = {**result.solver_info, **result.timings}
        position = {s.sample_id: i for i, s in enumerate(train)}
        try:
            rows = np.array([position[s.sample_id] for s in samples], dtype=np.int64)
        except KeyError as exc:
            raise LeantuneError(f"sample {exc.args[0]} is not a training sample of dataset {ctx.dataset.name!r}") from None
        return {
            "influence": finite_column(result.influence[rows], "influence"),
            "grad_product": finite_column(result.grad_product[rows], "grad_product"),
        }
