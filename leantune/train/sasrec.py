"""Training the SASRec surrogate (``leantune.models.sasrec`` holds the model).

``train_surrogate`` trains SASRec on a dataset's training sequences with early stopping on
validation NDCG@10, a checkpoint after every epoch (``leantune.models.checkpoint``) and per-epoch
seeds, so an interrupted run resumes to the same result; the finished folder is written with
``models.sasrec.save_surrogate`` and read with ``load_surrogate``. ``get_surrogate`` trains or
reuses the surrogate for (data content, settings, seed) in the leantune cache: the pruning job
hands it to the scorers (``ScoringContext.get_surrogate``), which never train models themselves.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..data import SequenceDataset, dataset_fingerprint
from ..data.batching import length_batches
from ..errors import LeantuneError
from ..io import read_json, refuse_other_settings
from ..models.checkpoint import checkpoint_state, load_extra_tensors, load_training_state, save_training_state
from ..models.sasrec import (CHECKPOINT_FILE, META_FILE, MODEL_FILE, VALID_METRIC, FullSoftmaxCE, SASRec, SASRecConfig, evaluate,
                             load_surrogate, pad_histories, save_surrogate)
from ..paths import cache_dir


def training_arrays(train: Sequence[Sequence[int]], cfg: SASRecConfig) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Inputs, next-item targets (0 = no target) and needed widths for all-positions training.

    Input row = training items but the last; target at a column = the item that follows it. With
    ``train_empty_prefix`` the padding column just before the first item targets the first item.
    A user without training items (validation/test only) gets a row without targets, i.e. no
    training sample.
    """
    max_len = cfg.max_len
    inputs = pad_histories([seq[:-1] for seq in train], max_len)
    targets = pad_histories([seq[1:] for seq in train], max_len)
    widths = np.array([max(min(len(seq) - 1, max_len), 0) for seq in train], dtype=np.int64)
    if cfg.train_empty_prefix:
        for row, seq in enumerate(train):
            col = max_len - len(seq)  # the column before the first input item
            if seq and col >= 0:
                targets[row, col] = seq[0]
        widths = np.minimum(widths + 1, max_len)
    return inputs, targets, np.maximum(widths, 1)


# ---------------------------------------------------------------------------------------------
# Evaluation


def _identity(dataset: SequenceDataset, cfg: SASRecConfig, seed: int) -> dict:
    return {"dataset": dataset.name, "fingerprint": dataset_fingerprint(dataset, "surrogate"), "config": asdict(cfg), "seed": seed}


def _check_identity(path: Path, found: dict, wanted: dict) -> None:
    keys = ("fingerprint", "config", "seed")
    refuse_other_settings({k: found.get(k) for k in keys}, {k: wanted[k] for k in keys}, "a surrogate", path,
                          "use another output folder or delete this one")


def train_surrogate(
    dataset: SequenceDataset,
    out_dir: str | Path,
    cfg: SASRecConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    note: dict | None = None,
) -> dict:
    """Train SASRec on ``dataset``'s training sequences, early-stopped on validation NDCG@10.

    Writes ``out_dir/model.safetensors`` (best validation epoch) and ``out_dir/surrogate.json``
    (config, seed, data fingerprint, test metrics of SASRec and most-popular, epoch history,
    wall time), and a checkpoint after every epoch. A finished folder is reused as it is; an
    interrupted one resumes from its last epoch (per-epoch seeds make the result the same).
    Returns the contents of ``surrogate.json``; ``note`` (e.g. the command) is stored in it.
    """
    session_start = time.perf_counter()

    from ..models.popularity import MostPopular

    cfg = cfg or SASRecConfig()
    out_dir = Path(out_dir)
    meta_path, ckpt_path = out_dir / META_FILE, out_dir / CHECKPOINT_FILE
    identity = _identity(dataset, cfg, seed)
    if meta_path.exists() and (out_dir / MODEL_FILE).exists():
        meta = read_json(meta_path)
        _check_identity(meta_path, meta, identity)
        if meta.get("status") == "done":
            return meta
    if not dataset.valid_samples:
        raise LeantuneError(f"dataset {dataset.name!r} has no validation targets for early stopping")

    with torch.random.fork_rng():  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = SASRec(dataset.num_items, cfg)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    inputs, targets, widths = training_arrays(dataset.train, cfg)
    keep = np.flatnonzero((targets > 0).any(1).numpy())  # users with at least one target
    inputs, targets, widths = inputs[keep], targets[keep], widths[keep]

    state = {"epoch": 0, "steps": 0, "history": [], "best_epoch": 0, "best": -1.0, "stale": 0, "train_seconds": 0.0}
    best = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if ckpt_path.exists() and checkpoint_state(ckpt_path) is not None:  # a file from before the shared format: start over
        _check_identity(ckpt_path, checkpoint_state(ckpt_path)["identity"], identity)
        state = load_training_state(ckpt_path, model, optim)
        best = load_extra_tensors(ckpt_path)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_epochs, initial=state["epoch"], desc=f"SASRec {dataset.name}", unit="epoch")
    done = cfg.patience > 0 and state["stale"] >= cfg.patience
    while state["epoch"] < cfg.max_epochs and not done:
        epoch = state["epoch"] + 1
        start = time.perf_counter()
        model.train()
        model.seed_dropout(seed * 100_003 + epoch)
        rng = np.random.default_rng([seed, epoch])
        total, count = 0.0, 0
        for idx in length_batches(widths, cfg.batch_size, rng):
            width = int(widths[idx].max())
            x, y = inputs[idx, -width:], targets[idx, -width:]
            hidden = model.encode(x)
            where = y > 0
            loss = FullSoftmaxCE.apply(hidden[where], model.item_emb.weight[1:], y[where] - 1)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            state["steps"] += 1
            total += loss.item() * int(where.sum())
            count += int(where.sum())
        # The machine's load average says how far the epoch time reflects other jobs on the CPU.
        row = {"epoch": epoch, "loss": total / max(count, 1), "seconds": round(time.perf_counter() - start, 2),
               "load_average": round(os.getloadavg()[0], 1)}
        if epoch % cfg.eval_every == 0 or epoch == cfg.max_epochs:
            row[f"valid_{VALID_METRIC}"] = evaluate(model, dataset, "valid")[VALID_METRIC]
            if row[f"valid_{VALID_METRIC}"] > state["best"]:
                state.update(best=row[f"valid_{VALID_METRIC}"], best_epoch=epoch, stale=0)
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                state["stale"] += 1
        state["train_seconds"] += time.perf_counter() - start
        state["epoch"] = epoch
        state["history"].append(row)
        state["identity"] = identity
        save_training_state(ckpt_path, model, optim, state, extra=best)
        done = cfg.patience > 0 and state["stale"] >= cfg.patience
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.3f}", val_ndcg10=f"{row.get(f'valid_{VALID_METRIC}', float('nan')):.4f}",
                            best=f"{state['best']:.4f}@{state['best_epoch']}")
            bar.update(1)
        if on_epoch is not None:
            on_epoch(row)
    if bar is not None:
        bar.close()

    if cfg.restore_best:
        model.load_state_dict(best)
    model.eval()
    start = time.perf_counter()
    meta = {
        **identity,
        "status": "done",
        "num_items": dataset.num_items,
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "kept_epoch": state["best_epoch"] if cfg.restore_best else state["epoch"],
        f"best_valid_{VALID_METRIC}": state["best"],
        "stopped_early": bool(done and state["epoch"] < cfg.max_epochs),
        "train_seconds": round(state["train_seconds"], 1),
        "test": {"sasrec": evaluate(model, dataset, "test"), "most_popular": MostPopular.fit(dataset).evaluate(dataset, "test")},
        "valid": {"sasrec": evaluate(model, dataset, "valid"), "most_popular": MostPopular.fit(dataset).evaluate(dataset, "valid")},
        "history": state["history"],
    }
    meta["eval_seconds"] = round(time.perf_counter() - start, 1)
    meta["wall_seconds"] = round(time.perf_counter() - session_start, 1)  # of the session that finished
    meta["threads"] = torch.get_num_threads()
    meta.update(note or {})
    save_surrogate(model, out_dir, meta)
    ckpt_path.unlink(missing_ok=True)
    return meta


def surrogate_key(dataset: SequenceDataset, cfg: SASRecConfig, seed: int) -> str:
    blob = json.dumps({"data": dataset_fingerprint(dataset, "surrogate"), "config": asdict(cfg), "seed": seed}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_surrogate(dataset: SequenceDataset, cfg: SASRecConfig | None = None, seed: int = 0, progress: bool = True) -> SASRec:
    """Train-or-load the surrogate for (dataset content, config, seed) in the leantune cache."""
    cfg = cfg or SASRecConfig()
    folder = cache_dir("surrogate", surrogate_key(dataset, cfg, seed))
    train_surrogate(dataset, folder, cfg, seed, progress=progress)
    return load_surrogate(folder)
