"""The HPO benchmark's bookkeeping (benchmarks/bench_tuning.py): resumable cells, each pick against the
default recipe on the same test units."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_tuning as bench  # noqa: E402
from leantune.evaluation.units import attribute_unit_rows, write_per_unit  # noqa: E402


def _rows(correct: list[bool]) -> list[dict]:
    """Judged questions of 4 products x 3 attributes (gold always valued): correct ones are VC, others VW."""
    return attribute_unit_rows([{"product_id": f"p{i // 3}", "attribute": f"a{i % 3}", "outcome": "VC" if c else "VW",
                                 "correct": c, "gold": "x"} for i, c in enumerate(correct)])


def test_each_pick_is_compared_with_the_default_recipe_on_the_same_units(tmp_path):
    base = [True, False, False] * 4
    better = [True, True, False] * 4  # 8 of 12 right against 4 of 12
    results = {}
    for seed in (0, 1):
        write_per_unit(tmp_path / f"s{seed}/early/base/test", _rows(base))
        write_per_unit(tmp_path / f"s{seed}/early/best/test", _rows(better))
        write_per_unit(tmp_path / f"s{seed}/tpe/best/test", _rows(base))
        results[str(seed)] = {"early_bo": {"best_rows": f"s{seed}/early/best/test", "baseline_rows": f"s{seed}/early/base/test"},
                              "full_tpe": {"best_rows": f"s{seed}/tpe/best/test"}}
    args = argparse.Namespace(runner="finetune", objective="metric", root=tmp_path)
    out = bench.unit_comparison(results, args, "accuracy")
    assert out["early_bo"]["diff"] == pytest.approx(4 / 12) and out["early_bo"]["low"] > 0
    assert out["full_tpe"]["diff"] == 0 and out["early_bo"]["n_seeds"] == 2
    results["1"]["full_tpe"]["best_rows"] = None  # a seed without a pick: that strategy has no row
    assert set(bench.unit_comparison(results, args, "accuracy")) == {"early_bo"}
    assert bench.unit_comparison(results, argparse.Namespace(runner="synthetic", objective="metric", root=tmp_path), "f1") is None


def test_finished_cells_are_reused_and_not_rerun(tmp_path, monkeypatch):
    from leantune.errors import LeantuneError

    calls = []
    monkeypatch.setattr(bench, "run_optuna", lambda *a, **k: calls.append(a[6]) or {"compute": 5, "best_test": 0.5})
    args = argparse.Namespace(runner="synthetic", trials=30, space=None)
    first = bench.run_cell(None, None, args, 0, tmp_path, "median", 40)
    again = bench.run_cell(None, None, args, 0, tmp_path, "median", 40)
    assert first == again == {"compute": 5, "best_test": 0.5} and calls == ["median"]
    assert (tmp_path / "cells" / "s0-median.json").is_file()
    with pytest.raises(LeantuneError, match="made with other settings: trials=30 there, 12 now"):
        bench.run_cell(None, None, argparse.Namespace(runner="synthetic", trials=12, space=None), 0, tmp_path, "median", 40)
