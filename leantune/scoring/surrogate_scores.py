"""``grand`` and ``el2n`` (Paul et al. 2021) on the SASRec surrogate, and the surrogate every
surrogate-based scorer shares.

Both scores are defined early in training, averaged over a few independently seeded runs:

* GraNd = E ||∇_θ ℓ(z)||₂ over *all* surrogate parameters (item embeddings included);
* EL2N  = E ||softmax(f(x)) - onehot(y)||₂ over all items.

The early models are SASRecs trained for ``epochs`` epochs (kept at that epoch, not at their best
validation epoch) with seeds ctx.seed, ctx.seed + 1, ...; they are cached like the surrogate.
With option ``<name>_model = "trained"`` the score comes from the one fully trained surrogate instead
(the one influence uses), which costs no extra training when that surrogate exists anyway.

Per-sample gradient norms without per-sample gradients of the 17k×64 item table: the tied table's
gradient for sample i is (p - y) ⊗ h (output side, dense) plus the gradients g_t of its history's
input rows (sparse), so

    ||∇_E ℓ||² = ||p - y||²·||h||² + 2 Σ_t (p - y)[x_t] h·g_t + Σ_{t,t': x_t = x_t'} g_t·g_t'

and only g_t and the other ~54k parameters' gradients are formed per sample (``vmap`` of a VJP).
Options: ``grand_<field>`` / ``el2n_<field>`` of :class:`EarlyConfig`, ``surrogate_dir``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import Sample
from ..errors import LeantuneError
from .base import SCORERS


def context_surrogate(ctx):
    """The trained surrogate for this scoring job: ``ctx.extras['surrogate']``, else the folder in
    ``ctx.options['surrogate_dir']``, else ``ctx.get_surrogate(ctx.dataset, seed=ctx.seed)``; stored back."""
    from ..models import sasrec

    model = ctx.extras.get("surrogate")
    if model is None:
        folder = ctx.options.get("surrogate_dir")
        if folder:
            model = sasrec.load_surrogate(folder)
            if model.num_items != ctx.dataset.num_items:
                raise LeantuneError(f"surrogate_dir {folder}: trained on {model.num_items} items, the data has {ctx.dataset.num_items}")
        else:
            model = _trainer(ctx)(ctx.dataset, seed=ctx.seed)
        ctx.extras["surrogate"] = model
    return model.to(ctx.device).eval()


def _trainer(ctx):
    if ctx.get_surrogate is None:
        raise LeantuneError("this scorer needs a trained SASRec surrogate: pass ctx.extras['surrogate'], the surrogate_dir option, "
                            "or ScoringContext(get_surrogate=leantune.train.sasrec.get_surrogate) (leantune.pruning does)")
    return ctx.get_surrogate


def finite_column(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise LeantuneError(f"{name}: {len(bad)} non-finite scores (first at sample position {bad[0]})")
    return values


MODEL_CHOICES = ("early", "trained")


@dataclass
class EarlyConfig:
    model: str = "early"  # early: averaged over early-training models; trained: the trained surrogate
    models: int = 3  # independently seeded early models averaged
    epochs: int = 2  # training epochs of each (0 = at initialisation)
    batch_size: int = 256

    @classmethod
    def from_options(cls, options: dict, prefix: str, base: "EarlyConfig | None" = None) -> "EarlyConfig":
        base = base or cls()
        changes = {f.name: options[f"{prefix}_{f.name}"] for f in fields(cls) if f"{prefix}_{f.name}" in options}
        cfg = replace(base, **changes)
        if cfg.model not in MODEL_CHOICES:
            raise LeantuneError(f"{prefix}_model {cfg.model!r}: choose one of {', '.join(MODEL_CHOICES)}")
        if cfg.models < 1 or cfg.epochs < 0:
            raise LeantuneError(f"{prefix}_models must be >= 1 and {prefix}_epochs >= 0 (got {cfg.models}, {cfg.epochs})")
        return cfg


def scoring_models(ctx, cfg: EarlyConfig) -> list:
    """The models a GraNd/EL2N score averages over: early ones, or the trained surrogate."""
    if cfg.model == "trained":
        return [context_surrogate(ctx)]
    return early_surrogates(ctx, cfg)


def early_surrogates(ctx, cfg: EarlyConfig) -> list:
    """``cfg.models`` SASRecs after ``cfg.epochs`` epochs, shared through ``ctx.extras``."""
    from ..models import sasrec

    key = ("early_surrogates", cfg.models, cfg.epochs)
    if key not in ctx.extras:
        base = ctx.extras.get("surrogate_config") or sasrec.SASRecConfig()
        early = replace(base, max_epochs=cfg.epochs, patience=0, restore_best=False)
        ctx.extras[key] = [
            _trainer(ctx)(ctx.dataset, early, seed=ctx.seed + k, progress=ctx.options.get("progress", True))
            for k in range(cfg.models)
        ]
    return [m.to(ctx.device).eval() for m in ctx.extras[key]]


def _sample_tensors(model, samples: Sequence[Sample]):
    from ..models.sasrec import pad_histories

    if any(len(s.targets) != 1 for s in samples):
        raise LeantuneError("GraNd/EL2N need training samples with exactly one target each")
    max_len = model.cfg.max_len
    seqs = pad_histories([s.history for s in samples], max_len)
    targets = torch.tensor([s.targets[0] for s in samples], dtype=torch.long)
    lengths = np.array([min(len(s.history), max_len) for s in samples])
    return seqs, targets, lengths


@torch.no_grad()
def el2n_scores(model, samples: Sequence[Sample], batch_size: int = 256) -> np.ndarray:
    """||softmax(logits) - onehot(target)||₂ over items 1..num_items, per sample."""
    from ..data.batching import length_batches
    from ..models.sasrec import trim_left

    model.eval()
    seqs, targets, lengths = _sample_tensors(model, samples)
    device = next(model.parameters()).device
    out = np.zeros(len(samples))
    for idx in length_batches(lengths, batch_size, None):
        probs = model.item_logits(model(trim_left(seqs[idx]).to(device))).softmax(-1)
        rows = torch.arange(len(idx), device=device)
        probs[rows, targets[idx].to(device) - 1] -= 1.0
        out[idx] = probs.norm(dim=1).double().cpu().numpy()
    return out


class _Encoder(nn.Module):
    def __init__(self, sasrec):
        super().__init__()
        self.sasrec = sasrec

    def forward(self, seqs, item_vecs):
        return self.sasrec.encode(seqs, item_vecs)[:, -1]


def grad_norms(model, samples: Sequence[Sample], batch_size: int = 256) -> np.ndarray:
    """||∇_θ ℓ_i||₂ over all parameters of ``model`` for every sample (exact; see module docstring)."""
    from ..data.batching import length_batches
    from ..models.sasrec import trim_left

    model.eval()
    seqs_all, targets_all, lengths = _sample_tensors(model, samples)
    device = next(model.parameters()).device
    encoder = _Encoder(model)
    rest = {n: p.detach() for n, p in encoder.named_parameters() if n != "sasrec.item_emb.weight"}
    emb = model.item_emb.weight.detach()

    def one(rest, vecs, seq, u):
        _, pull = torch.func.vjp(lambda r, x: torch.func.functional_call(encoder, r, (seq[None], x[None]))[0], rest, vecs)
        return pull(u)

    per_sample = torch.func.vmap(one, in_dims=(None, 0, 0, 0))
    out = np.zeros(len(samples))
    for idx in length_batches(lengths, batch_size, None):
        seqs, targets = trim_left(seqs_all[idx]).to(device), targets_all[idx].to(device)
        vecs = F.embedding(seqs, emb)
        with torch.no_grad():
            h = encoder(seqs, vecs)
            err = model.item_logits(h).softmax(-1)
            err[torch.arange(len(idx), device=device), targets - 1] -= 1.0  # p - y over items 1..N
            u = err @ emb[1:]  # dℓ/dh
        g_rest, g_rows = per_sample(rest, vecs, seqs, u)
        with torch.no_grad():
            sq = sum(g.pow(2).flatten(1).sum(1) for g in g_rest.values())
            sq += err.pow(2).sum(1) * h.pow(2).sum(1)  # output side of the item table
            real = seqs > 0
            err_at_hist = torch.where(real, err.gather(1, (seqs - 1).clamp(min=0)), torch.zeros_like(h[:, :1]))
            sq += 2 * (err_at_hist * torch.einsum("bh,bth->bt", h, g_rows)).sum(1)
            same = (seqs[:, :, None] == seqs[:, None, :]) & real[:, :, None] & real[:, None, :]
            sq += (same * torch.einsum("bth,bsh->bts", g_rows, g_rows)).sum((1, 2))
        out[idx] = sq.clamp(min=0).sqrt().double().cpu().numpy()
    return out


@SCORERS.register("grand")
class GraNdScorer:
    """GraNd: mean per-sample gradient norm over early-trained surrogates (``grand_<field>`` options)."""

    name = "grand"

    def __init__(self, config: EarlyConfig | None = None):
        self.config = config or EarlyConfig()

    def score(self, samples, ctx) -> dict[str, np.ndarray]:
        cfg = EarlyConfig.from_options(ctx.options, "grand", self.config)
        scores = np.mean([grad_norms(m, samples, cfg.batch_size) for m in scoring_models(ctx, cfg)], axis=0)
        return {"grand": finite_column(scores, "grand")}


@SCORERS.register("el2n")
class EL2NScorer:
    """EL2N: mean error-vector norm over early-trained surrogates (``el2n_<field>`` options)."""

    name = "el2n"

    def __init__(self, config: EarlyConfig | None = None):
        self.config = config or EarlyConfig()

    def score(self, samples, ctx) -> dict[str, np.ndarray]:
        cfg = EarlyConfig.from_options(ctx.options, "el2n", self.config)
        scores = np.mean([el2n_scores(m, samples, cfg.batch_size) for m in scoring_models(ctx, cfg)], axis=0)
        return {"el2n": finite_column(scores, "el2n")}
