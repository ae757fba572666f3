"""The SFT pruning benchmark's report (benchmarks/bench_sft_pruning.py): a budget whose cells were
filled on another machine keeps its comparison, marked as carried, and its cost."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_sft_pruning as bench  # noqa: E402
from leantune.curves.runner import run_dir  # noqa: E402
from leantune.evaluation.units import attribute_unit_rows, write_per_unit  # noqa: E402
from leantune.io import read_json, write_json  # noqa: E402


def _cell(work: Path, name: str, budget: int, seed: int, right: int, n: int = 40) -> None:
    folder = run_dir(work / "cells" / name, budget, seed)
    folder.mkdir(parents=True)
    rows = [{"product_id": f"p{i // 2}", "attribute": f"a{i % 2}", "outcome": "VC" if i < right else "VW",
             "correct": i < right, "gold": "x"} for i in range(n)]
    write_per_unit(folder, attribute_unit_rows(rows))
    write_json(folder / "result.json", {"wall_s": 10.0 * (seed + 1) + budget})


def test_a_budget_without_its_cells_is_carried_with_its_cost(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_sft_pruning.py"])
    out, first, second = tmp_path / "out", tmp_path / "machine1", tmp_path / "machine2"
    for seed in (0, 1):
        _cell(first, "random", 4, seed, right=10 + seed)
        _cell(first, "effort", 4, seed, right=20 + seed)
    args = bench.parse_args(["--methods", "random", "effort", "--budgets", "4", "8", "--seeds", "0", "1", "--out", str(out)])
    text = bench.report(args, first)
    assert "## budget 4: f1 against Random\n" in text and "budget 8, f1: not enough finished cells" in text
    assert "| effort | – | 4: 19, 8: – |" in text  # wall 14 s and 24 s over the two seeds
    from leantune.evaluation.compare import read_comparison, seed_plan

    plan = seed_plan(read_comparison(out / "b4-f1"), bench.PLAN_SEEDS)["effort"]  # as `leantune power --pilot out/b4-f1`
    assert "Seeds it would take" in text and "| effort | 2 | +" in text and " | ".join(f"{v:.4f}" for v in plan) in text
    summary = read_json(out / "sft-pruning.json")
    assert set(summary) == {"b4-f1", "b4-accuracy"}

    for seed in (0, 1):  # the next machine fills budget 8; budget 4's cells are not there
        _cell(second, "random", 8, seed, right=12)
        _cell(second, "effort", 8, seed, right=12)
    text2 = bench.report(args, second)
    assert "## budget 4: f1 against Random (carried" in text2 and "## budget 8: f1 against Random\n" in text2
    table4 = text.split("## budget 4: f1 against Random\n")[1].split("## budget 4: accuracy")[0]
    assert table4.strip() in text2  # the carried table is the one written with the cells
    assert set(read_json(out / "sft-pruning.json")) == {"b4-f1", "b4-accuracy", "b8-f1", "b8-accuracy"}
    assert "4: 19, 8: 23" in text2  # budget 4's cost kept from the first machine, budget 8's from this one
