"""benchmarks/bench_processes.py on the tiny model: both ways train the same steps and log the same losses."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_processes as bench  # noqa: E402


def test_threads_and_processes_log_the_same_losses_and_the_report_names_its_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    bench.main(["--model", "tiny", "--steps", "2", "--batch-size", "4", "--micro-batch-size", "2", "--no-bf16",
                "--dropout", "0"])
    text = (tmp_path / "processes-tiny.md").read_text()
    assert "Reproduce: `python3 benchmarks/bench_processes.py --model tiny" in text and "load average" in text
    from leantune.io import read_json

    row = read_json(tmp_path / "processes-tiny.json")["models"][0]
    assert len(row["loss_threads"]) == len(row["loss_processes"]) == 2 and row["max_abs_loss_diff"] < 1e-5
    assert row["step_s"]["threads"] > 0 and row["step_s"]["processes"] > 0
