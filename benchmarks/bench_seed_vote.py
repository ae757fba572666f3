"""A majority vote over attribute evaluations of the same questions (e.g. one recipe trained with three seeds).

Reads each evaluation's judged answers (``predictions.jsonl``), and for every (product, attribute)
question keeps the answer most of them give (compared after the scorer's normalisation; "n/a" and an
unparseable answer count as one answer, n/a); a tie goes to the tied answer the earliest evaluation gave
(with three evaluations, a tie means three answers, and the first one's wins). The vote's
row is that evaluation's judged row, so nothing is scored again. Writes ``--out/metrics.json``,
``predictions.jsonl`` and ``per_unit.jsonl``, so ``leantune compare`` pairs the vote with its members:

    G=benchmarks/results/attr-recipe-gemma3-270m
    python3 benchmarks/bench_seed_vote.py $G/cells/test/best/s0 $G/finetuned-seeds/s1 $G/finetuned-seeds/s2 \\
        --out $G/finetuned-seeds/vote
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path, the hub offline)

from leantune.errors import LeantuneError  # noqa: E402
from leantune.io import write_json  # noqa: E402
from leantune.tasks.attributes import write_predictions  # noqa: E402
from leantune.tasks.attributes_errors import read_predictions  # noqa: E402
from leantune.tasks.attributes_scoring import Judged, normalise, summarise  # noqa: E402

JUDGED_FIELDS = tuple(f.name for f in fields(Judged))  # what a judged row holds besides its raw answer


def _metrics(rows: list[dict]) -> dict:
    """The task's metrics of judged rows, as its evaluation computes them."""
    return summarise(Judged(**{k: r[k] for k in JUDGED_FIELDS}) for r in rows)


def _key(row: dict) -> tuple[str, str]:
    return str(row.get("product_id")), str(row["attribute"])


def vote(runs: list[list[dict]]) -> tuple[list[dict], dict]:
    """The voted rows (in the first run's order) and how the votes fell: {"unanimous", "majority", "no_majority"}
    (no answer given by more than half the runs: the most frequent wins, a tie going to the answer given earliest)."""
    if len(runs) < 2:
        raise LeantuneError("a vote needs at least two evaluations")
    indexed = [{_key(r): r for r in rows} for rows in runs]
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="Evaluation folders (or predictions.jsonl files) of the same questions; earlier ones break ties.")
    p.add_argument("--out", required=True, type=Path, help="Folder for the vote's metrics.json, predictions.jsonl and per_unit.jsonl.")
    args = p.parse_args(argv)
    try:
        runs = [read_predictions(run)[0] for run in args.runs]
        for run, rows in zip(args.runs, runs):  # before any voting: the vote's rows are scored as judged rows
            line, field = next(((i, k) for i, r in enumerate(rows, 1) for k in JUDGED_FIELDS if k not in r), (None, None))
            if field is not None:
                raise LeantuneError(f"{run}: row {line} has no {field!r}; give the predictions.jsonl of an attribute evaluation")
        voted, how = vote(runs)
    except LeantuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    metrics = _metrics(voted)
    write_predictions(args.out / "predictions.jsonl", voted)
    write_json(args.out / "metrics.json", {"settings": {"runs": args.runs, "rule": "the most frequent normalised answer; a tie to the answer given earliest",
                                                        "votes": how}, "metrics": metrics})
    member = ", ".join(f"{_metrics(rows)['f1']:.4f}" for rows in runs)
    print(f"vote of {len(runs)}: micro-F1 {metrics['f1']:.4f} (P {metrics['precision']:.4f}, R {metrics['recall']:.4f}, accuracy "
          f"{metrics['accuracy']:.4f}); members {member}; questions {sum(how.values()):,}: " + ", ".join(f"{k} {v:,}" for k, v in how.items()))
    print(f"wrote {args.out / 'metrics.json'}, predictions.jsonl and per_unit.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
