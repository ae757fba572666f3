"""Training TIGER (``leantune.models.tiger`` holds the model, its vocabulary and generation).

``train_tiger`` trains TIGER from scratch on a dataset's (selected) training samples with early
stopping on validation loss or Recall@10, checkpoints in the shared format
(``leantune.models.checkpoint``) and resumes an interrupted run; the best weights go through
``models.tiger.save_weights`` and load with ``load_tiger``. TIGER effort's warm-up is trained by the
prune job and handed to the scorer (``ScoringContext.train_tiger``).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.batching import length_batches
from ..errors import LeantuneError
from ..io import read_json, write_json
from ..metrics import ranking_metrics
from ..models.checkpoint import checkpoint_state, load_training_state, save_training_state
from ..models.rqvae import SemanticIDs
from ..models.tiger import (MODEL_FILE, STATE_FILE, SUMMARY_FILE, TigerConfig, TigerEncoder, build_model, recommend,
                            save_weights)


def mean_loss(model, encoder: TigerEncoder, samples, batch_size: int = 256) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            total += float(model(**encoder.batch(chunk, device=model.device)).loss) * len(chunk)
    return total / len(samples)


# --- training -----------------------------------------------------------------------------------


@dataclass
class TigerRun:
    out_dir: str
    n_samples: int
    epochs: int
    steps: int
    best_epoch: int
    best_val: float
    val_metric: str
    wall_s: float
    stopped: str  # "early-stopping" | "max-epochs" | "max-steps"
    history: list[dict] = field(default_factory=list)
    key: str = ""


def select_train_samples(dataset, sample_ids: Sequence[int] | None):
    """The training samples with these ``sample_id``s (the user's line index, as ``leantune prune``
    writes them), in the given order; all of them when ``sample_ids`` is None. A user without
    training items has no training sample, so ids are looked up, not used as list positions."""
    samples = dataset.train_samples
    if sample_ids is None:
        return list(samples)
    ids = [int(i) for i in sample_ids]
    if not ids:
        raise LeantuneError("no training samples selected")
    by_id = {s.sample_id: s for s in samples}
    bad = [i for i in ids if i not in by_id]
    if bad:
        users = len(dataset.users)
        if 0 <= bad[0] < users:
            raise LeantuneError(f"sample id {bad[0]} is not a training sample of {dataset.name}: "
                                f"user {dataset.users[bad[0]]} has no training items")
        raise LeantuneError(f"sample id {bad[0]} out of range: {dataset.name} has sample ids 0..{users - 1}")
    if len(set(ids)) != len(ids):
        raise LeantuneError("sample ids contain duplicates")
    return [by_id[i] for i in ids]


def validation_samples(dataset, n: int, seed: int):
    samples = dataset.valid_samples
    if not samples:
        raise LeantuneError(f"{dataset.name}: no validation samples for early stopping")
    if n and n < len(samples):
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), n, replace=False))]
    return list(samples)


def run_key(dataset, sids: SemanticIDs, samples, cfg: TigerConfig, seed: int) -> str:
    """Identity of a training run. The epoch cap is not part of it: a run stopped by its cap can be
    extended by training again with a higher one (see :func:`train_tiger`)."""
    settings = {k: v for k, v in asdict(cfg).items() if k != "max_epochs"}
    blob = json.dumps(
        {"data": [dataset.name, len(dataset.train_samples)], "sids": sids.key, "cfg": settings, "seed": seed,
         "samples": hashlib.sha256(",".join(str(s.sample_id) for s in samples).encode()).hexdigest()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def train_tiger(
    dataset,
    semantic_ids: SemanticIDs,
    sample_ids: Sequence[int] | None,
    out_dir: str | Path,
    cfg: TigerConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
) -> TigerRun:
    """Train TIGER on the given training samples (all when ``sample_ids`` is None).

    Early stopping on a seeded validation subset (Recall@10 by constrained beam search, or loss);
    the best weights go to ``model.safetensors``. A finished folder with the same inputs is reused;
    an interrupted one resumes from ``train_state.safetensors`` at the last finished epoch. A run
    that stopped at its epoch cap keeps that state, so training it again with a higher
    ``max_epochs`` continues where it stopped (the same weights as a run started with the higher cap:
    batches and the learning-rate schedule do not depend on the cap; the old cap's final validation
    stays in the history). A cap below the epochs a finished run already trained retrains it.
    """
    from tqdm.auto import tqdm

    cfg = cfg or TigerConfig()
    if cfg.val_metric not in ("loss", "recall@10"):
        raise LeantuneError(f"val_metric {cfg.val_metric!r}: choose 'recall@10' or 'loss'")
    out_dir = Path(out_dir)
    samples = select_train_samples(dataset, sample_ids)
    encoder = TigerEncoder(semantic_ids, cfg)
    encoder.check_items(samples)
    key = run_key(dataset, semantic_ids, samples, cfg, seed)
    summary_path, state_path = out_dir / SUMMARY_FILE, out_dir / STATE_FILE
    steps_per_epoch = math.ceil(len(samples) / cfg.batch_size)
    max_epochs = max(cfg.max_epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    if summary_path.exists() and (out_dir / MODEL_FILE).exists():
        done = read_json(summary_path)
        if done.get("key") == key and done.get("status") == "done":
            finished = TigerRun(**done["run"])
            capped = finished.stopped == "max-epochs"
            if finished.epochs == max_epochs or (not capped and finished.epochs < max_epochs):
                return finished  # what training with this cap gives
            if not (capped and finished.epochs < max_epochs and state_path.exists()):
                state_path.unlink(missing_ok=True)  # the cap is below what ran: train again from the start
            summary_path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "tiger_config.json", {"config": asdict(cfg), "level_sizes": semantic_ids.level_sizes, "ids_key": semantic_ids.key, "seed": seed, "key": key})

    val = validation_samples(dataset, cfg.val_users, seed)
    torch.manual_seed(seed)
    model = build_model(encoder.vocab, cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lengths = np.array([min(len(s.history), cfg.max_history) for s in samples])
    state = {"epoch": 0, "step": 0, "best": None, "best_epoch": 0, "bad": 0, "last_eval_step": 0, "history": [], "wall_s": 0.0, "key": key}
    if state_path.exists() and (checkpoint_state(state_path) or {}).get("key") == key:
        state = load_training_state(state_path, model, optimizer)
    # Linear warm-up, then inverse-square-root decay; last_epoch restores the position on resume.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / cfg.warmup_steps, math.sqrt(cfg.warmup_steps / max(s + 1, cfg.warmup_steps))),
        last_epoch=state["step"] - 1,
    )
    higher_better = cfg.val_metric != "loss"

    def stop_reason() -> str | None:
        if state["bad"] >= cfg.patience:
            return "early-stopping"
        if cfg.max_steps and state["step"] >= cfg.max_steps:
            return "max-steps"
        return "max-epochs" if state["epoch"] >= max_epochs else None

    bar = tqdm(total=max_epochs * steps_per_epoch, initial=state["step"], desc=f"tiger ({len(samples)} samples)", disable=not progress)
    while stop_reason() is None:
        t0 = time.perf_counter()
        model.train()
        rng = np.random.default_rng([seed, state["epoch"]])
        epoch_loss = 0.0
        for idx in length_batches(lengths, cfg.batch_size, rng):
            loss = model(**encoder.batch([samples[i] for i in idx], device=device)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            state["step"] += 1
            epoch_loss += float(loss.detach()) * len(idx)
            bar.update(1)
            bar.set_postfix(epoch=state["epoch"] + 1, loss=f"{float(loss.detach()):.3f}")
            if cfg.max_steps and state["step"] >= cfg.max_steps:
                break
        state["epoch"] += 1
        row = {"epoch": state["epoch"], "step": state["step"], "train_loss": epoch_loss / len(samples)}
        last = state["epoch"] >= max_epochs or bool(cfg.max_steps and state["step"] >= cfg.max_steps)
        if state["step"] - state["last_eval_step"] >= cfg.eval_every_steps or last:
            state["last_eval_step"] = state["step"]
            value = _validate(model, encoder, val, cfg)
            row["val_" + cfg.val_metric] = value
            improved = state["best"] is None or (value > state["best"] if higher_better else value < state["best"])
            if improved:
                state.update(best=value, best_epoch=state["epoch"], bad=0)
                save_weights(model, out_dir / MODEL_FILE, key)
            else:
                state["bad"] += 1
        state["wall_s"] += time.perf_counter() - t0
        row["wall_s"] = round(state["wall_s"], 2)
        state["history"].append(row)
        if progress:
            bar.write(_row_text(row))
        save_training_state(state_path, model, optimizer, state)
    bar.close()
    run = TigerRun(
        str(out_dir), len(samples), state["epoch"], state["step"], state["best_epoch"], float(state["best"]),
        cfg.val_metric, round(state["wall_s"], 2), stop_reason(), state["history"], key,
    )
    write_json(summary_path, {"status": "done", "key": key, "run": asdict(run)})
    if run.stopped != "max-epochs":  # kept otherwise: a higher cap continues from it
        state_path.unlink(missing_ok=True)
    return run


def _validate(model, encoder: TigerEncoder, val, cfg: TigerConfig) -> float:
    if cfg.val_metric == "loss":
        return mean_loss(model, encoder, val)
    ranked = recommend(model, encoder, val, 10, beam_size=cfg.beam_size, batch_size=cfg.eval_batch_size)
    return ranking_metrics(ranked, [s.targets for s in val], ks=(10,))["recall@10"]


def _row_text(row: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


