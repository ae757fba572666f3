"""The training-memory benchmark (benchmarks/bench_train_memory.py): one process per micro-batch size, its
memory and step time in the table, and settings checked before any training."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from .attributes_fixtures import write_attribute_folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_train_memory as bench  # noqa: E402


def test_each_micro_batch_size_trains_in_its_own_process_on_the_longest_products(tmp_path):
    data = write_attribute_folder(tmp_path / "attrs")
    out = tmp_path / "results"
    assert bench.main(["--model", "tiny", "--data", str(data), "--micro", "1,2", "--batch-size", "2", "--steps", "2",
                       "--name", "mem", "--out", str(out)]) == 0
    result = json.loads((out / "mem.json").read_text())
    rows = result["rows"]
    assert [r["micro_steps"] for r in rows] == [2, 1]  # the config's own count of forward passes a step
    assert [r["micro_batch_size"] for r in rows] == [1, 2] and all(r["steps"] == 2 and r["status"] == "finished" for r in rows)
    for r in rows:
        assert 0 < r["rss_loaded_gib"] <= r["rss_peak_gib"] and r["step_s"] > 0
        assert r["tokens_shortest"] <= r["tokens_longest"]
    # The same 4 longest products for both sizes, so their peaks compare.
    assert len({(r["tokens_shortest"], r["tokens_longest"]) for r in rows}) == 1
    table = (out / "mem.md").read_text()
    assert "| 1 | 0.05 | 2 |" in table and "| 2 | 0.05 | 1 |" in table and "fp32" in table


def test_a_dropout_setting_reaches_the_training_run(tmp_path):
    data = write_attribute_folder(tmp_path / "attrs")
    args = bench.parse_args(["--model", "tiny", "--data", str(data), "--batch-size", "2", "--steps", "2", "--dropout", "0,0.1",
                             "--child", "2:0"])
    assert args.dropouts == [0.0, 0.1]
    row = bench.child(args)
    assert row["dropout"] == 0.0 and row["micro_batch_size"] == 2 and row["steps"] == 2


def test_settings_are_checked_before_training(tmp_path):
    with pytest.raises(SystemExit, match=r"--micro: \[4\] larger than the batch size 2"):
        bench.main(["--model", "tiny", "--micro", "1,4", "--batch-size", "2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.parse_args(["--micro", "two"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "1"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--dropout", "1.5"])
    assert not list(tmp_path.iterdir())  # nothing written
