"""benchmarks/bench_answer_logits.py on the tiny model: both paths run on the same batches and agree."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_answer_logits as bench  # noqa: E402


def test_both_paths_give_the_same_loss_and_the_report_names_its_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    bench.main(["--model", "tiny", "--micro-batch-size", "2", "--steps", "2", "--rounds", "1", "--no-bf16"])
    text = (tmp_path / "answer-logits-tiny.md").read_text()
    assert "Reproduce: `python3 benchmarks/bench_answer_logits.py --model tiny" in text and "load average" in text
    from leantune.io import read_json

    row = read_json(tmp_path / "answer-logits-tiny.json")["models"][0]
    assert row["max_abs_loss_diff"] < 1e-5 and 0 < row["scored_per_round"] < row["positions_per_round"]
    assert len(row["loss_full"]) == 2 and row["step_s"]["full"] > 0 and row["step_s"]["answer_only"] > 0
