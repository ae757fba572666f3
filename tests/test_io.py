"""Atomic writes leave files readable as a plain open() would (not mkstemp's 0600)."""
from __future__ import annotations

import os
import stat

from leantune.io import write_json


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

    from leantune.runs import RunFolder

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
