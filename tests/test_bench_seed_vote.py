"""The seed-vote benchmark (benchmarks/bench_seed_vote.py): the majority answer per question, ties to the first run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_seed_vote as bench  # noqa: E402
from leantune.errors import LeantuneError  # noqa: E402
from leantune.tasks.attributes_scoring import judge  # noqa: E402


def _run(answers: dict) -> list[dict]:
    """Judged rows of one evaluation: {(product, attribute): (gold, answer)}."""
    return [{**judge(p, "c", a, [gold] if gold else [], answer).as_dict(), "raw": str(answer)} for (p, a), (gold, answer) in answers.items()]


GOLD = {("p1", "Brand"): "Acme", ("p1", "Flavor"): None, ("p2", "Brand"): "Zed", ("p2", "Flavor"): "Mint"}


def _answers(*values):
    return _run({k: (GOLD[k], v) for k, v in zip(GOLD, values)})


def test_the_vote_keeps_the_majority_answer_and_gives_ties_to_the_first_run(tmp_path):
    runs = [_answers("Acme", "Red", "Zeta", "Mint"),
            _answers("acme", None, "Zed", "Lime"),  # "acme" is "Acme" after normalisation
            _answers("ACME", None, "Zed", "Berry")]
    voted, how = bench.vote(runs)
    assert [r["predicted"] for r in voted] == ["Acme", None, "Zed", "Mint"]  # the last: three answers, a tie, the first run's
    assert [r["outcome"] for r in voted] == ["VC", "NN", "VC", "VC"]
    assert how == {"unanimous": 1, "majority": 2, "no_majority": 1}
    for i, rows in enumerate(runs):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert bench.main([str(tmp_path / f"s{i}") for i in range(3)] + ["--out", str(tmp_path / "vote")]) == 0
    metrics = json.loads((tmp_path / "vote" / "metrics.json").read_text())["metrics"]
    assert metrics["f1"] == pytest.approx(1.0) and metrics["accuracy"] == pytest.approx(1.0)
    units = [json.loads(line) for line in (tmp_path / "vote" / "per_unit.jsonl").read_text().splitlines()]
    assert [u["unit"] for u in units] == ["p1::Brand", "p1::Flavor", "p2::Brand", "p2::Flavor"]
    # Rows without the judged fields (not an attribute evaluation's answers): one line naming the file, no vote.
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"product_id": "p1", "attribute": "Brand", "outcome": "VC"}) + "\n")
    assert bench.main([str(bare), str(bare), "--out", str(tmp_path / "bare-vote")]) == 2
    assert not (tmp_path / "bare-vote").exists()


def test_the_vote_refuses_evaluations_of_other_questions():
    with pytest.raises(LeantuneError, match="evaluation 2 does not answer the same questions as the first"):
        bench.vote([_answers("Acme", None, "Zed", "Mint"), _answers("Acme", None, "Zed", "Mint")[:3]])
    with pytest.raises(LeantuneError, match="at least two"):
        bench.vote([_answers("Acme", None, "Zed", "Mint")])
