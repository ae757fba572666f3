"""`leantune attributes vote` (leantune.tasks.attributes_vote): the majority answer per question, ties to the first run."""
from __future__ import annotations

import json

import pytest

from leantune.errors import LeantuneError
from leantune.tasks.attributes_scoring import judge
from leantune.tasks.attributes_vote import vote, vote_rows, write_vote


def _run(answers: dict) -> list[dict]:
    """Judged rows of one evaluation: {(product, attribute): (gold, answer)}."""
    return [{**judge(p, "c", a, [gold] if gold else [], answer).as_dict(), "raw": str(answer)} for (p, a), (gold, answer) in answers.items()]


GOLD = {("p1", "Brand"): "Acme", ("p1", "Flavor"): None, ("p2", "Brand"): "Zed", ("p2", "Flavor"): "Mint"}


def _answers(*values):
    return _run({k: (GOLD[k], v) for k, v in zip(GOLD, values)})


def _write(folder, rows):
    """An evaluation folder as `attributes evaluate` writes it: judged answers and per-question rows."""
    from leantune.tasks.attributes import write_predictions

    write_predictions(folder / "predictions.jsonl", rows)
    return folder


RUNS = [_answers("Acme", "Red", "Zeta", "Mint"),
        _answers("acme", None, "Zed", "Lime"),  # "acme" is "Acme" after normalisation
        _answers("ACME", None, "Zed", "Berry")]


def test_the_vote_keeps_the_majority_answer_and_gives_ties_to_the_first_run(tmp_path):
    voted, how = vote_rows(RUNS)
    assert [r["predicted"] for r in voted] == ["Acme", None, "Zed", "Mint"]  # the last: three answers, a tie, the first run's
    assert [r["outcome"] for r in voted] == ["VC", "NN", "VC", "VC"]
    assert how == {"unanimous": 1, "majority": 2, "no_majority": 1}
    # The order is part of the rule: with the third run first, its answer wins the three-way tie.
    assert vote_rows([RUNS[2], RUNS[0], RUNS[1]])[0][3]["predicted"] == "Berry"
    paths = [_write(tmp_path / f"s{i}", rows) for i, rows in enumerate(RUNS)]
    result = vote(paths)
    assert result.metrics["f1"] == pytest.approx(1.0) and result.metrics["accuracy"] == pytest.approx(1.0)
    assert [m["f1"] for m in result.member_metrics] == pytest.approx([4 / 7, 2 / 3, 2 / 3])
    write_vote(tmp_path / "vote", result, paths)
    units = [json.loads(line) for line in (tmp_path / "vote" / "per_unit.jsonl").read_text().splitlines()]
    assert [u["unit"] for u in units] == ["p1::Brand", "p1::Flavor", "p2::Brand", "p2::Flavor"]
    settings = json.loads((tmp_path / "vote" / "metrics.json").read_text())["settings"]
    assert settings["votes"] == how and settings["runs"] == [str(p) for p in paths]


def test_the_vote_refuses_evaluations_of_other_questions_and_fewer_than_two():
    with pytest.raises(LeantuneError, match="evaluation 2 does not answer the same questions as the first"):
        vote_rows([RUNS[0], RUNS[0][:3]])
    with pytest.raises(LeantuneError, match="at least two"):
        vote_rows([RUNS[0]])
    with pytest.raises(LeantuneError, match="evaluation 2 answers p1::Brand more than once"):
        vote_rows([RUNS[0], RUNS[1] + RUNS[1][:1]])


def test_the_cli_votes_compares_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    from leantune.cli import main
    from leantune.evaluation.compare import compare, load_evaluation

    paths = [str(_write(tmp_path / f"s{i}", rows)) for i, rows in enumerate(RUNS)]
    with pytest.raises(SystemExit) as done:
        main(["attributes", "vote", *paths, "--out", str(tmp_path / "vote")])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "vote of 3: micro-F1 1.0000" in out and "members 0.5714, 0.6667, 0.6667" in out
    assert "unanimous 1" in out and "no_majority 1" in out
    # The vote folder is an evaluation `leantune compare` pairs with its members.
    evs = [load_evaluation(p, name="seeds") for p in paths] + [load_evaluation(tmp_path / "vote", name="vote")]
    table = compare(evs, baseline="seeds", metric="f1").to_markdown()
    assert "| vote | 1 | 1.0000 |" in table
    # Rows without the scorer's fields (not an attribute evaluation's answers): one line naming the file, nothing written.
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"product_id": "p1", "attribute": "Brand", "outcome": "VC"}) + "\n")
    with pytest.raises(SystemExit) as done:
        main(["attributes", "vote", str(bare), str(bare), "--out", str(tmp_path / "bare-vote")])
    err = capsys.readouterr().err
    assert done.value.code != 0 and "bare.jsonl" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bare-vote").exists()
    # The line named is the file's own, blank lines counted.
    gap = tmp_path / "gap.jsonl"
    gap.write_text(json.dumps(RUNS[0][0]) + "\n\n" + json.dumps({"product_id": "p1", "attribute": "Flavor", "outcome": "NN"}) + "\n")
    with pytest.raises(SystemExit):
        main(["attributes", "vote", str(gap), str(gap), "--out", str(tmp_path / "gap-vote")])
    assert "gap.jsonl:3" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["attributes", "vote", paths[0], str(tmp_path / "s0" / "missing"), "--out", str(tmp_path / "v2")])
    assert done.value.code != 0 and not (tmp_path / "v2").exists()
