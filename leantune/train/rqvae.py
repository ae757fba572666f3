"""Training the RQ-VAE and building semantic IDs (``leantune.models.rqvae`` holds the model and the
``SemanticIDs`` it produces).

``train_rqvae`` trains on item content embeddings (k-means codebook init, dead-code reset,
checkpoints in the shared format); ``build_semantic_ids`` turns its codes into unique ID tuples
and writes ``semantic_ids.json`` + ``rqvae.safetensors``; ``semantic_ids_for`` reads a folder's IDs
or builds them. The prune job builds them before TIGER effort scores (scorers never train).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path, write_json
from ..models.checkpoint import checkpoint_state, load_training_state, save_training_state
from ..models.rqvae import (CKPT_FILE, IDS_FILE, RQVAE, WEIGHTS_FILE, RQVAEConfig, SemanticIDs, assign_collision_tokens,
                            semantic_id_stats)
from ..models.tiger import read_semantic_ids


def train_rqvae(
    vectors: np.ndarray,
    cfg: RQVAEConfig,
    seed: int = 0,
    checkpoint: Path | None = None,
    progress: bool = True,
    checkpoint_key: str = "",
) -> tuple[RQVAE, list[dict]]:
    """Train on all item vectors; returns the model and per-epoch losses.

    With ``checkpoint``, state is saved every ``cfg.checkpoint_every`` epochs and resumed from
    when the file exists and was written under the same ``checkpoint_key``.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    x = torch.as_tensor(vectors, dtype=torch.float32)
    model = RQVAE(x.shape[1], cfg)
    model.shift.copy_(x.mean(0))
    model.scale.copy_((x - x.mean(0)).pow(2).sum(1).mean().sqrt())  # unit mean squared norm
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator()
    history: list[dict] = []
    start = 0
    if checkpoint is not None and checkpoint.exists() and (checkpoint_state(checkpoint) or {}).get("key") == checkpoint_key:
        state = load_training_state(checkpoint, model, optimizer)
        start, history = state["epoch"], state["history"]
    bar = tqdm(range(start, cfg.epochs), desc="rq-vae", disable=not progress, initial=start, total=cfg.epochs)
    for epoch in bar:
        gen.manual_seed(seed * 100_003 + epoch)  # per epoch, so a resumed run draws what an unbroken one would
        model.train()
        counts = torch.zeros(cfg.levels, cfg.codebook_size)  # this epoch
        window = torch.zeros(cfg.levels, cfg.codebook_size)  # since the last dead-code check
        totals = {"loss": 0.0, "recon": 0.0}
        perm = torch.randperm(len(x), generator=gen)
        batches = [perm[i : i + cfg.batch_size] for i in range(0, len(x), cfg.batch_size)]
        last_epoch = epoch == cfg.epochs - 1
        for step, idx in enumerate(batches, 1):
            if not model.initialised:
                model.init_codebooks(x[idx], gen)
            loss, codes, parts = model(x[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for level in range(cfg.levels):
                used = torch.bincount(codes[:, level], minlength=cfg.codebook_size).float()
                counts[level] += used
                window[level] += used
            totals["loss"] += float(loss.detach()) * len(idx)
            totals["recon"] += float(parts["recon"]) * len(idx)
            # No reset in the last epoch: the final codes should come from trained, not reset, codebooks.
            if cfg.dead_code_reset and not last_epoch and step % cfg.reset_every == 0:
                _reset_dead_codes(model, parts["residuals"], window, gen)
                window.zero_()
        history.append({k: v / len(x) for k, v in totals.items()} | {"dead": int((counts == 0).sum())})
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", dead=history[-1]["dead"])
        if checkpoint is not None and (epoch + 1) % cfg.checkpoint_every == 0 and epoch + 1 < cfg.epochs:
            save_training_state(checkpoint, model, optimizer, {"epoch": epoch + 1, "history": history, "key": checkpoint_key})
    model.eval()
    return model, history


@torch.no_grad()
def _reset_dead_codes(model: RQVAE, residuals: list[torch.Tensor], counts: torch.Tensor, gen: torch.Generator) -> None:
    """Move each code unused in the window onto a random residual of the current batch at its level."""
    for level, book in enumerate(model.codebooks):
        dead = (counts[level] == 0).nonzero().flatten()
        if len(dead):
            pick = torch.randint(len(residuals[level]), (len(dead),), generator=gen)
            book.data[dead] = residuals[level][pick].detach()



def build_semantic_ids(
    dataset,
    out_dir: str | Path,
    cfg: RQVAEConfig | None = None,
    seed: int = 0,
    embeddings=None,
    progress: bool = True,
) -> SemanticIDs:
    """Train the RQ-VAE on the item embeddings and write ``semantic_ids.json`` + ``rqvae.safetensors``.

    A folder that already holds IDs built from the same embeddings, settings and seed is reused;
    an interrupted run resumes from ``rqvae.ckpt.safetensors``.
    """
    from safetensors.torch import save_file

    from ..models.item_embeddings import item_embeddings

    cfg = cfg or RQVAEConfig()
    out_dir = Path(out_dir)
    emb = embeddings if embeddings is not None else item_embeddings(dataset, progress=progress)
    key = cfg.key(emb.key, seed)
    ids_path = out_dir / IDS_FILE
    if ids_path.exists() and (out_dir / WEIGHTS_FILE).exists():
        existing = SemanticIDs.load(ids_path)
        if existing.key == key:
            return existing
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = out_dir / CKPT_FILE
    model, history = train_rqvae(emb.vectors, cfg, seed, ckpt, progress, checkpoint_key=key)
    rq_codes = model.encode(torch.as_tensor(emb.vectors)).numpy()
    stats = semantic_id_stats(rq_codes, cfg.codebook_size, cfg.collapse_fraction)
    codes = assign_collision_tokens(rq_codes)
    sids = SemanticIDs(
        [int(i) for i in emb.item_ids], codes, [cfg.codebook_size] * cfg.levels + [int(codes[:, -1].max()) + 1], stats, key
    )
    with atomic_path(out_dir / WEIGHTS_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata={"config": json.dumps(asdict(cfg)), "key": key})
    write_json(out_dir / "rqvae_history.json", history)
    sids.save(ids_path)
    if ckpt.exists():
        ckpt.unlink()
    return sids


def semantic_ids_for(dataset, folder: str | Path | None = None, seed: int = 0, progress: bool = True):
    """The dataset's semantic IDs: read from ``folder`` (default ``runs/tiger-<data>/``, the folder
    ``leantune tiger`` uses) or, when it holds none, built there. Returns ``(ids, folder, built)``."""
    ids, folder = read_semantic_ids(dataset.name, folder)
    if ids is not None:
        return ids, folder, False
    return build_semantic_ids(dataset, folder, seed=seed, progress=progress), folder, True
