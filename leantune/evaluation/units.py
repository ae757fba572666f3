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


from ..io import read_jsonl, write_jsonl
from ..metrics import mean_ranking_metrics, ranking_unit_rows  # noqa: F401  (the rows this file holds)

PER_UNIT_FILE = "per_unit.jsonl"
PREDICTIONS_FILE = "predictions.jsonl"  # judged answers, where a task keeps them


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


def write_evaluation(folder, rows: Sequence[dict], answers: Sequence[dict] | None = None) -> Path:
    """Write an evaluation's per-unit rows and, when the task keeps them (``Task.evaluate_answers``),
    its judged answers as ``predictions.jsonl`` beside them (``leantune attributes errors`` reads it)."""
    path = write_per_unit(folder, rows)
    if answers is not None:
        write_jsonl(Path(folder) / PREDICTIONS_FILE, answers)
    return path


def read_per_unit(folder) -> list[dict]:
    return read_jsonl(Path(folder) / PER_UNIT_FILE)
