"""The recipe benchmark's bookkeeping (benchmarks/bench_attr_recipe.py): shards, the chosen recipe, test items."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_attr_recipe as bench  # noqa: E402
from leantune.io import write_json  # noqa: E402


def test_recipe_names_are_unique_and_shards_cover_every_cell_once():
    for grid in bench.GRIDS.values():
        names = [r.name for r in grid]
        assert len(names) == len(set(names))
        costs = [bench._cost(r) for r in grid]
        for shards in (1, 2, 3, 6):
            parts = [bench._mine(grid, costs, s, shards) for s in range(shards)]
            assert sorted(r.name for part in parts for r in part) == sorted(names)
            loads = [sum(bench._cost(r) for r in part) for part in parts]
            assert max(loads) - min(loads) <= max(costs)  # greedy longest-first stays within one cell
    assert bench.CLI_DEFAULT in bench.GRIDS["smollm2"]


def test_the_best_validation_f1_is_chosen_and_test_items_follow_it(tmp_path):
    args = bench.parse_args(["--phase", "test", "--work", str(tmp_path), "--seeds", "0", "1"])
    with pytest.raises(SystemExit, match="no finished grid cells"):
        bench.best_recipe(args)
    grid = bench.GRIDS["smollm2"]
    for recipe, f1 in ((grid[0], 0.4), (grid[3], 0.7), (bench.CLI_DEFAULT, 0.6)):
        write_json(tmp_path / "grid" / f"{recipe.name}.json", {"recipe": recipe.__dict__, "name": recipe.name, "valid": {"f1": f1}})
    assert bench.best_recipe(args) == grid[3]
    items = bench.test_items(args)
    labels = [(label, seed) for label, _, seed in items]
    assert labels[0] == ("zero-shot", 0) and ("10-shot", 1) in labels
    assert {tuple(spec["recipe"].items()) for label, spec, _ in items if label == "best"} == {tuple(grid[3].__dict__.items())}
    assert [seed for label, _, seed in items if label == "default"] == [0, 1]
