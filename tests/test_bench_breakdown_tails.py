"""benchmarks/bench_breakdown_tails.py on a small curve: the adjusted bounds over bootstrap seeds, both draw counts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_breakdown_tails as bench  # noqa: E402
from .test_curve_breakdown import _curve_folder  # noqa: E402


def test_the_adjusted_bounds_are_tabled_per_draw_count_and_seed(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "curve"
    rows, _ = _curve_folder(folder)
    report = tmp_path / "curve-tiny.json"
    report.write_text(json.dumps({"command": f"python3 benchmarks/bench_curve.py --work {folder} --name curve-tiny", "runs": rows}))
    out = tmp_path / "tails.md"
    monkeypatch.setattr(sys, "argv", ["bench_breakdown_tails.py", "--report", str(report), "--seeds", "0", "1",
                                      "--n-boot", "200", "--out", str(out)])
    bench.main()
    text = out.read_text()
    assert "Last step 10 → 20" in text and "bootstrap seeds 0, 1." in text and "load average" in text
    a0 = [line for line in text.splitlines() if line.startswith("| a0 |")]
    assert len(a0) == 2 and a0[0].startswith("| a0 | 200 |")  # the 95% intervals' own resamples, then more
    assert int(a0[1].split("|")[2].replace(",", "")) > 200 and all(line.endswith("| 2 of 2 |") for line in a0)
    monkeypatch.setattr(sys, "argv", ["bench_breakdown_tails.py", "--report", str(tmp_path / "nope.json")])
    with pytest.raises(SystemExit, match="--report .*nope.json"):
        bench.main()
