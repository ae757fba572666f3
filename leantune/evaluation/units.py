"""Per-unit evaluation results: the file every evaluation writes next to its aggregate metrics.

``per_unit.jsonl`` holds one JSON object per test unit, in a fixed order:

* ``unit``: the unit's id as a string (recommendation: the test sample id, i.e. the user's line;
  attributes: ``"<product id>::<attribute>"``);
* ``cluster``: the id of the group that is resampled as a whole when bootstrapping (recommendation:
  the unit itself; attributes: the product, because micro-F1 is computed over a product's questions);
* metric columns. Recommendation: ``n_targets`` and, for every K, ``hits@K``, ``recall@K`` and
  ``ndcg@K``. Attributes: ``outcome`` (NN, NV, VN, VC or VW), ``correct`` (0/1), ``valued`` (0/1).

The mean of a numeric column over all rows equals the aggregate metric of that name in
``metrics.json``; micro-averaged metrics (attribute precision/recall/F1) are recomputed from the
``outcome`` counts. ``leantune.evaluation.compare`` reads these files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..io import read_jsonl, write_jsonl

PER_UNIT_FILE = "per_unit.jsonl"


def ranking_unit_rows(unit_ids: Sequence, topk, targets: Sequence[Sequence[int]], ks: Sequence[int]) -> list[dict]:
    """Per-user hits, Recall@K and NDCG@K (the terms that ``ranking_metrics`` averages)."""
    if len(unit_ids) != len(topk) or len(topk) != len(targets):
        raise ValueError(f"{len(unit_ids)} units, {len(topk)} rankings, {len(targets)} target lists")
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    idcg_prefix = np.cumsum(discounts)
    rows = []
    for uid, ranking, tgt in zip(unit_ids, topk, targets):
        tgt_set = {int(t) for t in tgt}
        if not tgt_set:
            raise ValueError(f"unit {uid}: no targets")
        hits = np.array([int(i) in tgt_set for i in list(ranking)[: max(ks)]], dtype=float)
        row = {"unit": str(uid), "cluster": str(uid), "n_targets": len(tgt_set)}
        for k in ks:
            h = hits[:k]
            row[f"hits@{k}"] = int(h.sum())
            row[f"recall@{k}"] = float(h.sum()) / len(tgt_set)
            row[f"ndcg@{k}"] = float((h * discounts[: len(h)]).sum()) / float(idcg_prefix[min(len(tgt_set), k) - 1])
        rows.append(row)
    return rows


def mean_ranking_metrics(rows: Sequence[dict], ks: Sequence[int]) -> dict[str, float]:
    """Recall@K and NDCG@K averaged over the per-user rows of ``ranking_unit_rows``."""
    return {f"{m}@{k}": float(np.mean([r[f"{m}@{k}"] for r in rows])) for k in ks for m in ("recall", "ndcg")}


def attribute_unit_rows(judged: Iterable[dict]) -> list[dict]:
    """One row per judged (product, attribute) question, from ``Judged.as_dict()``-style rows."""
    return [
        {"unit": f"{j['product_id']}::{j['attribute']}", "cluster": str(j["product_id"]), "outcome": j["outcome"],
         "correct": int(j["correct"]), "valued": int(j["gold"] is not None)}
        for j in judged
    ]


def write_per_unit(folder, rows: Sequence[dict]) -> Path:
    path = Path(folder) / PER_UNIT_FILE
    write_jsonl(path, rows)
    return path


def read_per_unit(folder) -> list[dict]:
    return read_jsonl(Path(folder) / PER_UNIT_FILE)
