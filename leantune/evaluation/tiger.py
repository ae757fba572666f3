"""TIGER evaluation: Recall/NDCG@K of constrained beam search over a seeded set of users, with per-user rows."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.units import seeded_sample
from ..models.rqvae import SemanticIDs
from ..models.tiger import load_tiger, recommend
from .units import mean_ranking_metrics, ranking_unit_rows


def evaluate_tiger(
    dataset,
    semantic_ids: SemanticIDs,
    model_dir: str | Path,
    split: str = "test",
    users: int = 0,
    seed: int = 0,
    ks: Sequence[int] = (5, 10, 20),
    beam_size: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    device: str = "cpu",
) -> dict:
    """Recall/NDCG@K of constrained beam search; ``users`` > 0 evaluates a seeded subset (the same
    users as every other evaluation with that seed and count). ``per_unit`` holds the per-user rows
    (``leantune.evaluation.units``)."""
    model, encoder = load_tiger(model_dir, semantic_ids, device)
    samples = seeded_sample(list(dataset.samples(split)), users or None, seed, name="users")
    encoder.check_items(samples)
    t0 = time.perf_counter()
    ranked = recommend(model, encoder, samples, max(ks), None, beam_size or max(ks), batch_size, progress)
    targets = [s.targets for s in samples]
    rows = ranking_unit_rows([s.sample_id for s in samples], ranked, targets, ks)
    metrics = mean_ranking_metrics(rows, ks)
    # Standard error of each mean over users: a subset of a few thousand users has a wide one.
    stderr = {k: float(np.std([r[k] for r in rows], ddof=1) / math.sqrt(len(rows))) if len(rows) > 1 else 0.0
              for k in metrics}
    return {"split": split, "users": len(samples), "metrics": metrics, "stderr": stderr, "per_unit": rows,
            "wall_s": round(time.perf_counter() - t0, 2)}
