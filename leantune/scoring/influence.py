"""``influence``: DEALRec's influence of each training sample on the surrogate's empirical risk.

Definition (DEALRec Eq. 11, ``code/prune/influence_score.py``): with ℓ_i the loss of training
sample i on the trained SASRec surrogate, g = (1/n) Σ_i ∇ℓ_i the empirical-risk gradient and H the
Hessian of the empirical risk,

    influence_i = (H + λI)^-1 g · ∇ℓ_i        (the reference: ``matmul(H_inverse, grad_z)``)

Removing sample i (weight -1/n) moves the parameters by about (1/n) H^-1 ∇ℓ_i, which changes the
empirical risk by about (1/n) gᵀH^-1∇ℓ_i = influence_i / n. So **higher = removing the sample would
raise the empirical risk more = the sample is more valuable to keep**; the sign matches the
reference's score. Note that DEALRec's ``prune.py`` then drops the *highest* 10% of the combined
score as "hard" samples before its coverage-enhanced selection; that is the selector's business,
not the score's.

Column ``grad_product`` (option ``grad_product = true``) is the Hessian-free variant g·∇ℓ_i (H
replaced by I), computed in the same pass over the data.

How it is computed:

* **λ** (option ``damping``; default: chosen) — a few Lanczos steps on the Hessian of a fixed
  subsample estimate its extreme eigenvalues; λ = ``damping_margin``·|λ_min| (see ``ihvp``: the
  trained surrogate's Hessian is indefinite, so the reference's fixed λ = 0.25 leaves H + λI
  without an inverse that LiSSA or CG could find). The estimate and the λ used go into the score
  file's settings (``influence_info``).
* s = (H + λI)^-1 g once — LiSSA over length-bucketed mini-batches with tail averaging (default),
  or CG on the full (or a subsample's) Hessian at the same λ; Hessian-vector products by double
  backward, with the [batch, items] softmax layer differentiated in closed form
  (:class:`_SoftmaxCE`), not through autograd's generic log-softmax.
* every sample's s·∇ℓ_i (and g·∇ℓ_i) in one pass: per batch, forward mode along s through the
  encoder and the output layer's directional derivative in closed form
  (``SurrogateObjective.products``), so no per-sample gradient is ever materialised, not even for
  the 1.1M-entry item-embedding table.

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
from .ihvp import CGConfig, LissaConfig, auto_damping, conjugate_gradient, lanczos_extremes, length_bucketed_batches, lissa
from .surrogate_scores import context_surrogate, finite_column

SOLVERS = ("lissa", "cg")


@dataclass
class InfluenceConfig:
    """Settings of the influence scorer (``--opt influence_<field>=...``); see the module docstring.

    The defaults need no tuning per dataset: λ comes from the Lanczos estimate of the Hessian's
    smallest eigenvalue, LiSSA's scale from its largest."""

    params: str = "all"  # all | reference | comma-separated parameter-name prefixes
    solver: str = "lissa"  # lissa | cg
    damping: float | None = None  # λ; None = damping_margin·|λ_min| from Lanczos
    damping_margin: float = 2.0  # chosen λ = margin × |smallest Lanczos Ritz value|
    lanczos_steps: int = 20  # Lanczos steps for the spectrum estimate
    lanczos_samples: int = 1024  # the spectrum is estimated on a fixed subsample of this size (0 = all)
    depth: int = 600  # LiSSA steps
    lissa_batch: int = 32  # samples per LiSSA mini-batch (length-bucketed)
    scale: float | None = None  # LiSSA scale; None = 2·(λ_max estimate + λ): mini-batch Hessians reach past the subsample's λ_max
    tail: float = 0.5  # LiSSA averages its iterates over this last fraction of the steps
    lissa_restarts: int = 3  # on divergence, restart with the scale doubled (same λ)
    cg_iters: int = 100
    cg_tol: float = 1e-5
    cg_samples: int = 0  # CG's Hessian over a fixed random subsample of this size (0 = all samples)
    batch_size: int = 1024  # samples per batch for the gradient and the products
    hvp_batch: int = 128  # samples per batch in Hessian-vector products over many samples (Lanczos, CG)
    grad_product: bool = False  # also the Hessian-free column g·∇ℓ_i (same pass over the data, ~1.4x its cost)

    @classmethod
    def from_options(cls, options: dict, base: "InfluenceConfig | None" = None) -> "InfluenceConfig":
        """``base`` updated by ``options['influence_<field>']`` entries, checked."""
        base = base or cls()
        changes = {f.name: options[f"influence_{f.name}"] for f in fields(cls) if f"influence_{f.name}" in options}
        cfg = replace(base, **changes)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Refuse settings no solve can use, naming the option."""
        if self.solver not in SOLVERS:
            raise LeantuneError(f"influence_solver {self.solver!r}: choose one of {', '.join(SOLVERS)}")
        positive = {"depth": self.depth, "lissa_batch": self.lissa_batch, "lanczos_steps": self.lanczos_steps,
                    "cg_iters": self.cg_iters, "batch_size": self.batch_size, "hvp_batch": self.hvp_batch}
        for name, value in positive.items():
            if not value >= 1:
                raise LeantuneError(f"influence_{name} {value!r}: must be at least 1")
        for name, value in {"damping": self.damping, "scale": self.scale, "damping_margin": self.damping_margin,
                            "cg_tol": self.cg_tol}.items():
            if value is not None and not (np.isfinite(value) and value > 0):
                raise LeantuneError(f"influence_{name} {value!r}: must be a positive number")
        if not 0 <= self.tail < 1:
            raise LeantuneError(f"influence_tail {self.tail!r}: must be in [0, 1)")
        for name, value in {"lanczos_samples": self.lanczos_samples, "cg_samples": self.cg_samples,
                            "lissa_restarts": self.lissa_restarts}.items():
            if not value >= 0:
                raise LeantuneError(f"influence_{name} {value!r}: must be 0 or more")


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


class _SoftmaxCE(torch.autograd.Function):
    """Σ_b cross-entropy(h_b·Eᵀ, t_b): the surrogate's summed output loss, twice differentiable, with
    every derivative over the [B, items] logits in closed form (a few matrix products) instead of
    autograd's generic log-softmax graph. ``emb`` holds the item rows (no padding row); ``targets``
    are 0-based rows of ``emb``."""

    @staticmethod
    def forward(ctx, h, emb, targets):
        logits = h @ emb.T
        lse = torch.logsumexp(logits, 1)
        loss = (lse - logits.gather(1, targets[:, None]).squeeze(1)).sum()
        resid = logits.sub_(lse[:, None]).exp_()  # softmax, in place
        resid[torch.arange(len(targets), device=targets.device), targets] -= 1  # p - y
        ctx.save_for_backward(h, emb, targets, resid)
        return loss

    @staticmethod
    def backward(ctx, grad):
        h, emb, targets, resid = ctx.saved_tensors
        gh, ge = _SoftmaxCEGrad.apply(h, emb, targets, resid)
        if not (grad.numel() == 1 and float(grad) == 1.0):
            gh, ge = gh * grad, ge * grad
        return gh, ge, None


class _SoftmaxCEGrad(torch.autograd.Function):
    """(∂/∂h, ∂/∂E) of :class:`_SoftmaxCE` = ((P - Y)E, (P - Y)ᵀh), differentiable once more.

    For cotangents (u_h, u_E), with A = u_h·Eᵀ + h·u_Eᵀ and D = P∘(A - rowsum(P∘A)):
    ∂/∂h = D·E + (P - Y)·u_E and ∂/∂E = Dᵀ·h + (P - Y)ᵀ·u_h.
    """

    @staticmethod
    def forward(ctx, h, emb, targets, resid):
        ctx.save_for_backward(h, emb, targets, resid)
        return resid @ emb, resid.T @ h

    @staticmethod
    def backward(ctx, uh, ue):
        h, emb, targets, resid = ctx.saved_tensors
        rows = torch.arange(len(targets), device=targets.device)
        probs = resid.clone()
        probs[rows, targets] += 1
        a = torch.zeros_like(probs) if uh is None else uh @ emb.T
        if ue is not None:
            a.addmm_(h, ue.T)
        a.mul_(probs)  # P∘A
        d = a.sub_(probs * a.sum(1, keepdim=True))  # D = P∘A - P·rowsum(P∘A)
        dh = d @ emb
        de = d.T @ h
        if ue is not None:
            dh.addmm_(resid, ue)
        if uh is not None:
            de.addmm_(resid.T, uh)
        return dh, de, None, None


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
    directional derivatives v·∇ℓ_i. Call inside ``frozen(model)``.
    """

    EMB = "sasrec.item_emb.weight"

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

    def _batch(self, idx):
        from ..models.sasrec import trim_left

        idx = torch.as_tensor(idx, dtype=torch.long, device=self.seqs.device)
        return trim_left(self.seqs[idx]), self.targets[idx]

    def losses(self, theta: torch.Tensor, idx) -> torch.Tensor:
        """Per-sample losses over positions ``idx`` by the model's own loss (the reference path)."""
        seqs, targets = self._batch(idx)
        return torch.func.functional_call(self.wrapper, self._params(theta), (seqs, targets))

    def loss_sum(self, theta: torch.Tensor, idx) -> torch.Tensor:
        """Σ of the losses over ``idx`` (equal to ``losses(...).sum()``) with the closed-form softmax layer."""
        seqs, targets = self._batch(idx)
        params = self._params(theta)
        h = torch.func.functional_call(self.wrapper, params, (seqs,))
        emb = params.get(self.EMB, self.wrapper.sasrec.item_emb.weight)
        return _SoftmaxCE.apply(h, emb[1:], targets - 1)

    def batches(self, subset: np.ndarray | None = None, batch_size: int | None = None) -> list[np.ndarray]:
        """Length-sorted batches of sample positions (of all samples, or of ``subset``)."""
        from ..data.batching import length_batches

        batch_size = batch_size or self.batch_size
        if subset is None:
            return length_batches(self.lengths, batch_size, None)
        subset = np.asarray(subset)
        return [subset[b] for b in length_batches(self.lengths[subset], batch_size, None)]

    def mean_grad(self) -> torch.Tensor:
        """g = (1/n) Σ_i ∇ℓ_i over all samples."""
        theta = self.theta.detach().requires_grad_(True)
        total = torch.zeros_like(self.theta)
        for idx in self.batches():
            total += torch.autograd.grad(self.loss_sum(theta, idx), theta)[0]
        return total.div_(self.n)

    def _hvp_sum(self, theta: torch.Tensor, v: torch.Tensor, idx) -> torch.Tensor:
        # Double backward, as the reference does: per call it costs about a third of torch.func's
        # forward-over-reverse, which matters for hundreds of small LiSSA steps.
        (grad,) = torch.autograd.grad(self.loss_sum(theta, idx), theta, create_graph=True)
        return torch.autograd.grad(grad @ v, theta)[0]

    def hvp_sum(self, v: torch.Tensor, idx) -> torch.Tensor:
        """Hessian of the summed loss over ``idx``, times ``v`` (``v`` must be zero off ``free``, as
        every vector the solvers build from the gradient is)."""
        return self._hvp_sum(self.theta.detach().requires_grad_(True), v, idx)

    def hvp(self, v: torch.Tensor, idx) -> torch.Tensor:
        """Hessian of the mean loss over ``idx``, times ``v`` (zero off ``free``, as for ``hvp_sum``)."""
        return self.hvp_sum(v, idx).div_(len(idx))

    def full_hvp(self, v: torch.Tensor, subset: np.ndarray | None = None, batch_size: int | None = None) -> torch.Tensor:
        """Hessian of the mean loss over all samples (or the positions ``subset``), times ``v``; in
        length-sorted batches of ``batch_size`` (default: the objective's)."""
        theta = self.theta.detach().requires_grad_(True)
        v = v * self.free
        batches = self.batches(subset, batch_size)
        count = self.n if subset is None else len(subset)
        total = torch.zeros_like(self.theta)
        for idx in batches:
            total += self._hvp_sum(theta, v, idx)
        return total.div_(count)

    def products(self, *vectors: torch.Tensor) -> np.ndarray:
        """v·∇ℓ_i for every sample i and each of ``vectors`` ([n] for one vector, else [n, k]), a batch
        at a time, without forming any per-sample gradient.

        Forward mode through the encoder gives h and its tangent δh (the input rows of the item
        table included); the output layer is done by hand, since for ℓ = logsumexp(h·E) - h·E_t

            δℓ = (pE - E_t)·δh + (p·δE - δE_t)·h        (p = softmax(h·E), rows of E = items)

        and the softmax over all items is formed once per batch for all vectors (one
        [B, items] x [items, H·(k+1)] product).
        """
        out = np.zeros((self.n, len(vectors)), dtype=np.float64)
        vectors = [v * self.free for v in vectors]
        for idx in self.batches():
            out[idx] = self._batch_products(vectors, idx).double().cpu().numpy()
        return out[:, 0] if len(vectors) == 1 else out

    def _batch_products(self, vectors: list[torch.Tensor], idx) -> torch.Tensor:
        seqs, targets = self._batch(idx)

        def encode(th):
            return torch.func.functional_call(self.wrapper, self._params(th), (seqs,))

        tangents = []
        for v in vectors:
            h, dh = torch.func.jvp(encode, (self.theta,), (v,))
            tangents.append(dh)
        emb = self._params(self.theta).get(self.EMB, self.wrapper.sasrec.item_emb.weight.detach())[1:]
        demb = [self._params(v).get(self.EMB) for v in vectors]
        with torch.no_grad():
            tables = [emb] + [d[1:] for d in demb if d is not None]
            probs = (h @ emb.T).softmax(-1)
            mixed = (probs @ torch.cat(tables, 1)).split(emb.shape[1], 1)  # p·E, p·δE_1, ...
            base = mixed[0] - emb[targets - 1]
            columns, extra = [], iter(mixed[1:])
            for dh, d in zip(tangents, demb):
                col = (base * dh).sum(1)
                if d is not None:
                    col += ((next(extra) - d[targets]) * h).sum(1)
                columns.append(col)
        return torch.stack(columns, 1)

    def sample_grad(self, i: int) -> torch.Tensor:
        """∇ℓ_i of one sample (the slow path the batched products replace; for checks and benchmarks)."""
        return torch.func.grad(lambda th: self.losses(th, [i]).sum())(self.theta)


@dataclass
class InfluenceResult:
    influence: np.ndarray
    grad_product: np.ndarray | None  # only with InfluenceConfig.grad_product
    ihvp: torch.Tensor  # s = (H + λI)^-1 g
    grad: torch.Tensor  # g
    timings: dict
    solver_info: dict


def _subsample(n: int, size: int, seed: int) -> np.ndarray | None:
    if not 0 < size < n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def estimate_spectrum(obj: SurrogateObjective, g: torch.Tensor, cfg: InfluenceConfig, seed: int):
    """Lanczos estimate of the Hessian's extreme eigenvalues on a seeded subsample of
    ``cfg.lanczos_samples`` samples (all when 0), started from a seeded random direction."""
    subset = _subsample(obj.n, cfg.lanczos_samples, seed)
    return lanczos_extremes(lambda v: obj.full_hvp(v, subset, cfg.hvp_batch), g, cfg.lanczos_steps, seed=seed, mask=obj.free)


def lissa_ihvp(obj: SurrogateObjective, v: torch.Tensor, damping: float, scale: float, cfg: InfluenceConfig, seed: int,
               progress: bool = False, info: dict | None = None) -> torch.Tensor:
    """(H + damping·I)^-1 v by LiSSA over length-bucketed mini-batches of ``cfg.lissa_batch`` samples
    (``cfg.depth`` steps, tail-averaged over ``cfg.tail``), the batches drawn with ``seed``."""
    lcfg = LissaConfig(damping=damping, scale=scale, depth=cfg.depth, tail=cfg.tail, max_restarts=cfg.lissa_restarts)
    batches, per_pass = length_bucketed_batches(obj.lengths, cfg.lissa_batch, np.random.default_rng(seed))
    # Each pass visits every sample once in ``per_pass`` batches of unequal size; weighting a
    # batch's summed Hessian by per_pass / n makes a pass's steps average to the full H exactly.
    weight = per_pass / obj.n
    return lissa(lambda x, idx: obj.hvp_sum(x, idx).mul_(weight), v, batches, lcfg, progress=progress, info=info)


def compute_influence(model, train_samples: Sequence[Sample], cfg: InfluenceConfig | None = None, seed: int = 0,
                      progress: bool = False) -> InfluenceResult:
    """Influence and gradient product of every sample in ``train_samples`` (the empirical risk's samples)."""
    cfg = cfg or InfluenceConfig()
    cfg.validate()
    timings: dict[str, float] = {}
    info: dict = {"solver": cfg.solver, "params": cfg.params}
    with frozen(model):
        start = time.perf_counter()
        obj = SurrogateObjective(model, train_samples, cfg.params, cfg.batch_size)
        g = obj.mean_grad()
        timings["grad_s"] = time.perf_counter() - start

        start = time.perf_counter()
        damping, scale = cfg.damping, cfg.scale
        if damping is None or (cfg.solver == "lissa" and scale is None):
            spectrum = estimate_spectrum(obj, g, cfg, seed)
            info["spectrum"] = {"smallest": spectrum.smallest, "largest": spectrum.largest, "steps": spectrum.steps,
                                "samples": min(cfg.lanczos_samples, obj.n) or obj.n}
            if damping is None:
                damping = auto_damping(spectrum, cfg.damping_margin)
            if scale is None:
                scale = 2.0 * (max(spectrum.largest, 0.0) + damping)
        info["damping"] = damping
        info["damping_source"] = "given" if cfg.damping is not None else f"{cfg.damping_margin:g}·|Lanczos λ_min|"
        timings["spectrum_s"] = time.perf_counter() - start

        start = time.perf_counter()
        if cfg.solver == "lissa":
            info.update(depth=cfg.depth, batch_size=cfg.lissa_batch, tail=cfg.tail, scale=scale)
            s = lissa_ihvp(obj, g, damping, scale, cfg, seed, progress=progress, info=info)
        else:
            subset = _subsample(obj.n, cfg.cg_samples, seed)
            res = conjugate_gradient(lambda v: obj.full_hvp(v, subset, cfg.hvp_batch), g, CGConfig(damping, cfg.cg_iters, cfg.cg_tol))
            s = res.x
            info.update(hessian_samples=obj.n if subset is None else len(subset), iterations=res.iterations,
                        relative_residual=res.relative_residual, converged=res.converged, tol=cfg.cg_tol)
        timings["ihvp_s"] = time.perf_counter() - start

        start = time.perf_counter()
        both = obj.products(s, g) if cfg.grad_product else obj.products(s)[:, None]
        timings["products_s"] = time.perf_counter() - start
    info["num_params"] = int(obj.theta.numel())
    return InfluenceResult(both[:, 0], both[:, 1] if cfg.grad_product else None, s, g, timings, info)


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
        columns = {"influence": finite_column(result.influence[rows], "influence")}
        if result.grad_product is not None:
            columns["grad_product"] = finite_column(result.grad_product[rows], "grad_product")
        return columns
