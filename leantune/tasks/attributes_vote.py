"""A majority vote over attribute evaluations of the same questions (e.g. one recipe fine-tuned with three seeds).

For every (product, attribute) question the vote keeps the answer most evaluations give, compared after
the scorer's normalisation ("n/a" and an unparseable answer count as one answer, n/a). A tie goes to the
tied answer the earliest evaluation gave, so with three evaluations and three different answers the first
one's wins: the order of the evaluations is part of the rule. The vote's row for a question is the judged
row of the evaluation whose answer won, so nothing is scored again and the vote is scored exactly as its
members were. ``leantune compare`` then pairs the vote with its members over the same questions.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

from ..errors import LeantuneError
from .attributes_scoring import Judged, normalise, summarise

RULE = "the most frequent normalised answer; a tie to the answer given earliest"
JUDGED_FIELDS = tuple(f.name for f in fields(Judged))  # what a judged row holds besides its raw answer


@dataclass
class Vote:
    """The voted judged rows (in the first evaluation's order), how the votes fell (``unanimous``,
    ``majority``, ``no_majority``: no answer given by more than half), and the metrics of the vote and
    of each member."""

    rows: list[dict]
    how: dict[str, int]
    metrics: dict
    member_metrics: list[dict]


def judged_metrics(rows: Sequence[dict]) -> dict:
    """The task's metrics of judged rows (``predictions.jsonl``), as its evaluation computes them."""
    return summarise(Judged(**{k: r[k] for k in JUDGED_FIELDS}) for r in rows)


def _key(row: dict) -> tuple[str, str]:
    return str(row.get("product_id")), str(row["attribute"])


def vote_rows(runs: Sequence[Sequence[dict]]) -> tuple[list[dict], dict[str, int]]:
    """The voted rows and how the votes fell; every run must answer the same questions."""
    if len(runs) < 2:
        raise LeantuneError("a vote needs at least two evaluations")
    indexed = [{_key(r): r for r in rows} for rows in runs]
    for i, (rows, index) in enumerate(zip(runs, indexed), start=1):
        if len(index) != len(rows):
            twice = next(k for k, n in Counter(_key(r) for r in rows).items() if n > 1)
            raise LeantuneError(f"evaluation {i} answers {twice[0]}::{twice[1]} more than once")
    first = [_key(r) for r in runs[0]]
    for i, rows in enumerate(indexed[1:], start=2):
        if set(rows) != set(first):
            odd = sorted(set(rows) ^ set(first))[0]
            raise LeantuneError(f"evaluation {i} does not answer the same questions as the first (e.g. {odd[0]}::{odd[1]})")
    voted, how = [], Counter()
    for key in first:
        rows = [run[key] for run in indexed]
        answers = [None if r.get("predicted") is None else normalise(str(r["predicted"])) for r in rows]
        counts = Counter(answers)
        top = max(counts.values())
        winner = next(a for a in answers if counts[a] == top)  # a tie: the tied answer given earliest
        how["unanimous" if top == len(rows) else "majority" if top > len(rows) / 2 else "no_majority"] += 1
        voted.append(rows[answers.index(winner)])
    return voted, dict(how)


def read_judged(path: str | Path) -> list[dict]:
    """An evaluation's judged rows (its folder or ``predictions.jsonl``), each with every field the
    scorer needs; a row without one is refused, naming the file and line."""
    from .attributes_errors import read_predictions

    return read_predictions(path, required=JUDGED_FIELDS)[0]


def vote(paths: Sequence[str | Path]) -> Vote:
    """Read the evaluations (all of them checked before any voting) and vote."""
    runs = [read_judged(p) for p in paths]
    rows, how = vote_rows(runs)
    return Vote(rows=rows, how=how, metrics=judged_metrics(rows), member_metrics=[judged_metrics(r) for r in runs])


def write_vote(out: str | Path, result: Vote, paths: Sequence[str | Path]) -> Path:
    """Write ``metrics.json``, ``predictions.jsonl`` and ``per_unit.jsonl`` into ``out`` (an evaluation
    folder that ``leantune compare`` and ``leantune attributes errors`` read)."""
    from ..io import write_json
    from .attributes import write_predictions

    out = Path(out)
    write_predictions(out / "predictions.jsonl", result.rows)
    write_json(out / "metrics.json", {"settings": {"runs": [str(p) for p in paths], "rule": RULE, "votes": result.how},
                                      "metrics": result.metrics})
    return out / "metrics.json"
