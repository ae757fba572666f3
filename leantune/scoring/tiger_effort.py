"""``tiger_effort``: DEALRec's effort score for the TIGER recommender.

Effort = the L2 norm of the gradient of one sample's loss (mean cross-entropy over the target's
code tokens) with respect to a subset of TIGER's parameters. The subset is the decoder's last
block, the decoder's final layer norm and the output projection (``lm_head``): the parameters
nearest the loss, which react most to how hard a sample is, and a small fraction of the model,
as DEALRec uses one LoRA matrix of the last layer for the LLM. T5 ties ``lm_head`` to the shared
token embedding; here it is differentiated in its output role only (the embedding lookups at the
bottom of the model are held fixed), so the norm stays a property of the head.

Gradients are exact per sample and batched: the model below the last decoder block runs once
per batch without gradients, and ``torch.func.vmap(grad(...))`` differentiates the head for
every sample of the batch at once. Dropout is off (eval mode).

Effort needs a trained model: a model that has never seen the data gives gradient norms that
say nothing about the samples. By default the scorer trains TIGER briefly on all training
samples (``tiger_warmup_epochs``, 1) into ``<work_dir>/tiger-effort-warmup/`` (reused when
scoring resumes); options (``ScoringContext.options``):

* ``tiger_ids``: semantic-IDs folder or file (default ``runs/tiger-<data>/``, built if missing);
* ``tiger_model_dir``: a ``train_tiger`` folder to use instead of the warm-up model;
* ``tiger_warmup_epochs``: epochs of the warm-up training (default 1);
* ``tiger_warmup_samples``: warm up on a seeded subset of this many training samples instead of all
  (0, the default: all) — a cheaper model state; ``benchmarks/bench_tiger_warmup.py`` measures how
  closely its effort ranks samples like the full warm-up's;
* ``tiger_preset``: model size of the warm-up model (``paper`` or ``small``, default ``paper``);
* ``tiger_batch``: samples per vmap batch (default 64).

``ctx.extras['tiger_model']`` may hold a ready ``(model, encoder)`` pair (tests, benchmarks).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import SCORERS
from ..errors import LeantuneError

# The ScoringContext.options this scorer reads (listed in the module docstring).
OPTIONS = ("tiger_ids", "tiger_model_dir", "tiger_warmup_epochs", "tiger_warmup_samples", "tiger_preset", "tiger_batch")


class _Head(nn.Module):
    """Decoder last block -> final norm -> output projection -> per-sample loss."""

    def __init__(self, model):
        super().__init__()
        self.block = model.decoder.block[-1]
        self.final_layer_norm = model.decoder.final_layer_norm
        self.lm_head = model.lm_head
        self.scale = model.config.d_model**-0.5 if getattr(model.config, "scale_decoder_outputs", True) else 1.0

    def forward(self, block_args: tuple, labels: torch.Tensor) -> torch.Tensor:
        hidden = self.block(*block_args)[0]
        logits = self.lm_head(self.final_layer_norm(hidden) * self.scale)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def _capture_block_inputs(model, batch) -> tuple:
    """Run the model once without gradients and return the last decoder block's positional inputs."""
    captured = {}

    def hook(module, args, kwargs):
        captured["args"] = args
        raise _Captured

    handle = model.decoder.block[-1].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**batch, use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured["args"]


class _Captured(Exception):
    """Stops the forward pass once the last block's inputs are known."""


def per_sample_grad_norms(model, encoder, samples, batch_size: int = 64) -> np.ndarray:
    """Exact per-sample gradient norms of the TIGER loss over the head parameters (see module doc)."""
    from torch.func import functional_call, grad, vmap

    model.eval()
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # SDPA's mask shortcuts branch on tensor values; vmap cannot
    head = _Head(model)
    params = {k: v.detach() for k, v in head.named_parameters()}

    def loss_one(p, args, labels):
        one = tuple(a.unsqueeze(0) if a is not None else None for a in args)
        return functional_call(head, p, (one, labels.unsqueeze(0)))

    out = np.zeros(len(samples), dtype=np.float64)
    try:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            batch = encoder.batch(chunk, device=model.device)
            args = _capture_block_inputs(model, batch)
            n = len(chunk)
            # Tensors shared by the batch (position biases) are expanded so every sample gets its row.
            args = tuple(a.expand(n, *a.shape[1:]) if a is not None and a.shape[0] == 1 else a for a in args)
            grads = vmap(grad(loss_one), in_dims=(None, tuple(0 if a is not None else None for a in args), 0))(
                params, args, batch["labels"]
            )
            sq = sum(g.reshape(n, -1).pow(2).sum(1) for g in grads.values())
            out[start : start + n] = sq.sqrt().double().cpu().numpy()
    finally:
        model.set_attn_implementation(previous)
    return out


def warmup_subset(dataset, n: int, seed: int) -> list[int] | None:
    """Sample ids of the warm-up subset: ``n`` training samples by the shared seeded rule (None = all)."""
    from ..data.units import seeded_sample

    ids = [s.sample_id for s in dataset.train_samples]
    if not 0 < n < len(ids):
        return None
    return sorted(seeded_sample(ids, n, seed, "tiger effort warm-up"))


def train_warmup(train_tiger, dataset, semantic_ids, out_dir, samples: int = 0, seed: int = 0, preset: str = "paper",
                 epochs: int = 1, device: str = "cpu", progress: bool = True):
    """The warm-up TIGER effort is measured on: ``epochs`` of training (validation loss for early
    stopping) on all training samples, or on ``samples`` seeded ones (see :func:`warmup_subset`), with
    ``train_tiger`` (``leantune.train.tiger.train_tiger``, which the prune job hands over)."""
    from ..models.tiger import tiger_config

    cfg = tiger_config(preset, max_epochs=epochs, val_metric="loss")
    return train_tiger(dataset, semantic_ids, warmup_subset(dataset, samples, seed), out_dir, cfg, seed=seed,
                       device=device, progress=progress)


@SCORERS.register("tiger_effort")
class TigerEffortScorer:
    name = "tiger_effort"

    def score(self, samples, ctx) -> dict[str, np.ndarray]:
        model, encoder = self._model(ctx)
        # Similar lengths together: less padding per batch; the order is restored afterwards.
        order = np.argsort([len(s.history) for s in samples], kind="stable")
        norms = per_sample_grad_norms(model, encoder, [samples[i] for i in order], int(ctx.options.get("tiger_batch", 64)))
        values = np.empty(len(samples), dtype=np.float64)
        values[order] = norms
        return {"tiger_effort": values}

    @staticmethod
    def _model(ctx):
        if "tiger_model" not in ctx.extras:
            from ..models.tiger import default_dir, load_tiger, read_semantic_ids

            progress = ctx.options.get("progress", True)
            sids = ctx.extras.get("tiger_semantic_ids")  # built by the prune job when the folder holds none
            if sids is None:
                sids, folder = read_semantic_ids(ctx.dataset.name, ctx.options.get("tiger_ids") or None)
                if sids is None:
                    raise LeantuneError(f"tiger_effort: no semantic IDs in {folder} (build them with `leantune tiger semantic-ids`, "
                                        "or prune, which builds them)")
            model_dir = ctx.options.get("tiger_model_dir")
            if not model_dir:
                work = Path(ctx.work_dir) if ctx.work_dir is not None else default_dir(ctx.dataset.name)
                n = int(ctx.options.get("tiger_warmup_samples", 0))
                whole = not 0 < n < len(ctx.dataset.train_samples)  # as warmup_subset decides
                model_dir = work / ("tiger-effort-warmup" if whole else f"tiger-effort-warmup-n{n}")
                if ctx.train_tiger is None:
                    raise LeantuneError("tiger_effort needs a trained TIGER: pass ctx.extras['tiger_model'], the tiger_model_dir option, "
                                        "or ScoringContext(train_tiger=leantune.train.tiger.train_tiger) (leantune.pruning does)")
                train_warmup(ctx.train_tiger, ctx.dataset, sids, model_dir, n, ctx.seed, ctx.options.get("tiger_preset", "paper"),
                             int(ctx.options.get("tiger_warmup_epochs", 1)), ctx.device, progress)
            ctx.extras["tiger_model"] = load_tiger(model_dir, sids, ctx.device)
        return ctx.extras["tiger_model"]
