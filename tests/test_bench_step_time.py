"""The GPU step-time benchmark (benchmarks/bench_step_time.py), run on the CPU with the tiny model's config."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_step_time as bench  # noqa: E402
from leantune.models.llm import prepare_tiny_llama  # noqa: E402


def test_times_each_micro_batch_size_through_the_training_loop_on_random_weights(tmp_path):
    tiny = prepare_tiny_llama()
    pack = tmp_path / "pack"
    (pack / "tok").mkdir(parents=True)
    shutil.copy(tiny / "config.json", pack / "config.json")
    for f in tiny.glob("tokenizer*"):
        shutil.copy(f, pack / "tok" / f.name)
    rows = [{"prompt": f"Product {i}: red tea, 20 bags. Brand?", "response": f"Brand {i}"} for i in range(16)]
    (pack / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "steps.json"
    assert bench.main(["--pack", str(pack), "--work", str(tmp_path / "work"), "--micro", "16,4", "--steps", "4",
                       "--skip", "1", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())  # strict JSON: no NaN
    assert report["device"] == "cpu" and report["examples"] == 16
    assert [r["micro_batch_size"] for r in report["runs"]] == [16, 4]
    for run in report["runs"]:
        assert run["status"] == "finished" and run["steps"] == 4 and run["steps_timed"] == 2
        assert 0 < run["step_s_q1"] <= run["step_s_median"] <= run["step_s_q3"]
    # the random weights were written once and reused by both runs
    assert (tmp_path / "work" / "random-smollm2" / "config.json").exists()
