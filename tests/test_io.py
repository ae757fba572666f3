"""Atomic writes leave files readable as a plain open() would (not mkstemp's 0600)."""
from __future__ import annotations

import os
import stat

import pytest

from leantune.io import json_safe, read_json, write_json


def test_atomic_writes_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_resumed_stage_records_the_total_wall_time(tmp_path):
    import pytest

    from leantune.pipelines.runs import RunFolder

    run = RunFolder(tmp_path / "r", "kind", {"a": 1})
    with pytest.raises(KeyboardInterrupt):
        with run.stage("train"):
            import time

            time.sleep(0.05)
            raise KeyboardInterrupt
    first = run.stages["train"]["wall_s"]
    assert first >= 0.05 and run.stages["train"]["status"] == "interrupted"
    run = RunFolder(tmp_path / "r", "kind", {"a": 1})
    with run.stage("train"):
        pass
    entry = run.stages["train"]
    assert entry["status"] == "finished" and entry["attempts"] == 2
    assert entry["wall_s"] == pytest.approx(first + entry["last_attempt_s"])
    with run.stage("train"):  # a finished stage run again starts from zero
        pass
    assert run.stages["train"]["wall_s"] == pytest.approx(run.stages["train"]["last_attempt_s"])


def test_refuse_other_settings_names_the_folder_and_first_field(tmp_path, monkeypatch):
    import pytest

    from leantune.errors import LeantuneError
    from leantune.io import refuse_other_settings

    stored = {"model": "m", "config": {"lr": 1e-4, "epochs": 3}, "seed": 0, "old_only": 1}
    refuse_other_settings(stored, dict(stored), "a fine-tuning run", tmp_path)  # equal: no error
    monkeypatch.chdir(tmp_path)
    current = {"model": "m", "config": {"lr": 5e-4, "epochs": 3}, "seed": 1}
    with pytest.raises(LeantuneError) as info:
        refuse_other_settings(stored, current, "a fine-tuning run", tmp_path / "ft", "use another --out")
    assert str(info.value) == ("ft: holds a fine-tuning run made with other settings: config.lr=0.0001 there, "
                               "0.0005 now (also seed, old_only); use another --out")
    with pytest.raises(LeantuneError, match=r"new=\(not set\) there, 2 now"):
        refuse_other_settings({}, {"new": 2}, "a run", tmp_path)
    with pytest.raises(LeantuneError, match=r"x=\[1, 2\] there, \(1, 2\) now"):  # a tuple is not its JSON list
        refuse_other_settings({"x": [1, 2]}, {"x": (1, 2)}, "a run", tmp_path)


def test_json_safe_keeps_non_finite_floats_as_strings_at_any_depth(tmp_path):
    value = {"loss": float("nan"), "rows": [{"s": float("inf")}, (1.5, float("-inf"))], "n": 3, "ok": 0.25}
    safe = json_safe(value)
    assert safe == {"loss": "nan", "rows": [{"s": "inf"}, [1.5, "-inf"]], "n": 3, "ok": 0.25}
    write_json(tmp_path / "x.json", safe)  # strict JSON: no NaN/Infinity tokens
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "Infinity" not in text and read_json(tmp_path / "x.json") == safe


def test_write_json_and_jsonl_write_strict_json_and_read_float_restores_non_finite_values(tmp_path):
    """No NaN/Infinity token even where a caller skips json_safe, numpy values and dataclasses too."""
    import json
    import math
    from dataclasses import dataclass

    import numpy as np

    from leantune.errors import DataError
    from leantune.io import read_float, read_jsonl, read_loss_history, write_jsonl

    @dataclass
    class Row:
        loss: float

    def strict(text):
        return json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard JSON token {token}"))

    value = {"loss": float("nan"), "np": np.float32("inf"), "arr": np.array([1.0, -np.inf]), "row": Row(float("nan")), "ok": 0.5}
    write_json(tmp_path / "x.json", value)
    back = strict((tmp_path / "x.json").read_text())
    assert back == {"loss": "nan", "np": "inf", "arr": [1.0, "-inf"], "row": {"loss": "nan"}, "ok": 0.5}
    write_jsonl(tmp_path / "x.jsonl", [{"f1": float("nan")}, {"f1": np.float64(0.25)}])
    assert [strict(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()] == read_jsonl(tmp_path / "x.jsonl")
    assert read_jsonl(tmp_path / "x.jsonl") == [{"f1": "nan"}, {"f1": 0.25}]

    assert math.isnan(read_float(back["loss"])) and read_float(back["np"]) == math.inf and read_float(back["arr"][1]) == -math.inf
    assert read_float(0.5) == 0.5 and read_float(3) == 3.0 and isinstance(read_float(3), float) and read_float(None) is None
    for bad in ("0.5x", True, [1.0]):
        with pytest.raises(DataError, match="^valid_loss: expected a number, got"):
            read_float(bad, "valid_loss")
    rows = read_loss_history([{"step": 2, "train_loss": "inf", "valid_loss": None, "status": "nan"}])
    assert rows == [{"step": 2, "train_loss": math.inf, "valid_loss": None, "status": "nan"}]  # only *_loss fields


def test_save_figure_writes_a_png_in_one_step_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leantune.io import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "plot.png", dpi=50, tight=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]  # no temporary file left behind
    assert not plt.fignum_exists(fig.number)


def test_atomic_dir_replaces_a_folder_only_when_the_new_one_is_complete(tmp_path):
    from leantune.io import atomic_dir

    dest = tmp_path / "adapter"
    with atomic_dir(dest) as tmp:
        (tmp / "w.bin").write_text("first")
    assert (dest / "w.bin").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as tmp:
            (tmp / "w.bin").write_text("half")
            raise RuntimeError("killed while writing")
    assert (dest / "w.bin").read_text() == "first"  # the old folder stays, untouched
    old = os.umask(0o022)
    try:
        with atomic_dir(dest) as tmp:
            (tmp / "v.bin").write_text("second")
    finally:
        os.umask(old)
    assert sorted(p.name for p in dest.iterdir()) == ["v.bin"]  # replaced whole, not merged
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755  # not mkdtemp's 0700
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary or set-aside folder left
    (tmp_path / ".adapter.old").mkdir()  # left by a job killed between its two renames
    with atomic_dir(dest) as tmp:
        (tmp / "u.bin").write_text("third")
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"] and (dest / "u.bin").exists()
