"""The reproduction grid's bookkeeping (benchmarks/reproduce_dealrec.py): cells and the claim lock."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import reproduce_dealrec as grid  # noqa: E402


def test_cells_are_unique_and_come_after_what_they_need():
    cells = grid.grid_cells(grid.parse_args([]))
    names = [c.name for c in cells]
    assert len(names) == len(set(names))
    position = {n: i for i, n in enumerate(names)}
    for c in cells:
        assert all(position[d] < position[c.name] for d in c.needs), c.name
    main = [c for c in cells if c.kind == "train" and c.table == "main"]
    assert {c.method for c in main} == set(grid.MAIN_METHODS) | set(grid.CONTROLS)
    assert {c.seed for c in main} == {0, 1, 2, 3, 4}
    assert len([c for c in cells if c.kind == "full"]) == 1
    # A second process starts with the long all-data model; nothing else changes.
    second = grid.grid_cells(grid.parse_args(["--order", "full-first"]))
    assert second[0].kind == "full" and sorted(c.name for c in second) == sorted(names)
    only_main = grid.grid_cells(grid.parse_args(["--grid", "main", "--seeds", "0"]))
    assert all(c.table == "main" for c in only_main) and {c.seed for c in only_main if c.kind == "train"} == {0}


def test_claim_is_exclusive_and_a_dead_owner_is_taken_over(tmp_path):
    first, second = grid.Claim(tmp_path / "cell"), grid.Claim(tmp_path / "cell")
    assert first.acquire()
    assert not second.acquire()  # held by a live process (this one)
    first.release()
    assert second.acquire()
    second.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # that process has exited
    (tmp_path / "cell" / ".claim").write_text(json.dumps({"host": socket.gethostname(), "pid": pid}))
    assert first.acquire() and json.loads((tmp_path / "cell" / ".claim").read_text())["pid"] == os.getpid()
    first.release()
    (tmp_path / "cell" / ".claim").write_text(json.dumps({"host": "another-machine", "pid": pid}))
    assert not first.acquire()  # cannot tell whether another machine's process lives: leave it


class _Fake:
    """A deterministic per-sample score (a vector for ``embedding``) from the sample id and the seed."""

    name = ""

    def score(self, samples, ctx):
        ids = np.array([s.sample_id for s in samples], dtype=np.float64)
        salt = sum(map(ord, self.name)) + ctx.seed
        if self.name == "embedding":
            return {"embedding": np.stack([np.cos(ids * 1.7 + salt), np.sin(ids * 0.3 + salt), ids % 5], axis=1)}
        return {self.name: np.cos(ids * 7.3 + salt)}


def test_the_grid_selects_exactly_what_prune_selects(tiny_rec, tmp_path, monkeypatch):
    """Scores computed once per seed, then each method's selector: the same samples as `prune --recommender tiger`."""
    from leantune.pruning import prune
    from leantune.scoring import SCORERS
    from leantune.scoring.scorefile import read_scores

    for name in grid.GRID_SCORERS:
        monkeypatch.setitem(SCORERS._entries, name, type(f"Fake_{name}", (_Fake,), {"name": name}))
    grid.register_grid_method()
    seed = 3
    shared = read_scores(prune(tiny_rec, 8, "dealrec-grid-scores", tmp_path / "scores", seed=seed, progress=False).scores_path)
    for method in grid.MAIN_METHODS:
        cell = grid.Cell("c", "train", seed, method, 8, 0.3)
        alone = prune(tiny_rec, 8, method, tmp_path / method, seed=seed, recommender="tiger", progress=False)
        assert grid.select(tiny_rec, cell, shared) == sorted(alone.sample_ids), method
    topk = grid.Cell("c", "train", seed, "dealrec", 8, 0.3, selector="topk")
    alone = prune(tiny_rec, 8, "dealrec", tmp_path / "topk", seed=seed, selector="topk", recommender="tiger", progress=False)
    assert grid.select(tiny_rec, topk, shared) == sorted(alone.sample_ids)
    # The control draws popular targets more often, and is seeded.
    control = grid.Cell("c", "train", seed, "random-popular", 8)
    assert grid.select(tiny_rec, control, shared) == grid.select(tiny_rec, control, shared)
    assert len(set(grid.select(tiny_rec, control, shared))) == 8
