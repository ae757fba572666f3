"""Run folders: one folder per job with ``run.json`` (settings, versions, stage status and wall time).

``with run.stage("finetune") as stage: ...`` marks a stage running, then finished (with its wall
time and whatever the block put in ``stage.outputs``) or failed/interrupted. ``run.done(name)``
tells whether a stage can be skipped on a re-run. Every change rewrites ``run.json`` atomically,
so a crash or Ctrl-C leaves the stages finished so far intact.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..io import read_json, refuse_other_settings, write_json

RUN_FILE = "run.json"


@dataclass
class StageHandle:
    name: str
    outputs: dict = field(default_factory=dict)


class RunFolder:
    def __init__(self, path, kind: str, settings: dict, ignore: tuple[str, ...] = ()):
        """Open (or create) a run folder. Settings must match a previous run's, except ``ignore``d keys
        (ones that change speed, not results, such as the device)."""
        self.path = Path(path)
        self.file = self.path / RUN_FILE
        if self.file.exists():
            self.record = read_json(self.file)
            old = {k: v for k, v in self.record.get("settings", {}).items() if k not in ignore}
            new = {k: v for k, v in _plain(settings).items() if k not in ignore}
            advice = "use another output folder or delete this one"
            refuse_other_settings({"kind": self.record.get("kind")}, {"kind": kind}, "a run", self.path, advice)
            refuse_other_settings(old, new, "a run", self.path, advice)
            self.record["settings"] = _plain(settings)
        else:
            self.record = {
                "kind": kind,
                "settings": _plain(settings),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": _versions(),
                "stages": {},
            }
        self.save()

    @property
    def stages(self) -> dict:
        return self.record["stages"]

    def done(self, name: str) -> bool:
        return self.stages.get(name, {}).get("status") == "finished"

    def outputs(self, name: str) -> dict:
        return self.stages.get(name, {}).get("outputs", {})

    def save(self) -> None:
        write_json(self.file, self.record)

    @contextmanager
    def stage(self, name: str):
        previous = self.stages.get(name, {})
        entry = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "attempts": previous.get("attempts", 0) + 1}
        # A stage resumed after an interruption or failure keeps the time its earlier attempts spent:
        # ``wall_s`` is the total over attempts, ``last_attempt_s`` the latest one.
        earlier = previous.get("wall_s", 0.0) if previous.get("status") not in (None, "finished") else 0.0
        self.stages[name] = entry
        self.save()
        handle = StageHandle(name)
        start = time.perf_counter()
        try:
            yield handle
        except KeyboardInterrupt:
            last = time.perf_counter() - start
            entry.update(status="interrupted", wall_s=earlier + last, last_attempt_s=last)
            self.save()
            raise
        except BaseException as exc:
            last = time.perf_counter() - start
            entry.update(status="failed", wall_s=earlier + last, last_attempt_s=last, error=f"{type(exc).__name__}: {exc}")
            self.save()
            raise
        last = time.perf_counter() - start
        entry.update(status="finished", wall_s=earlier + last, last_attempt_s=last, outputs=_plain(handle.outputs))
        self.save()

    def wall_times(self) -> dict[str, float]:
        return {name: s.get("wall_s", 0.0) for name, s in self.stages.items()}


def _plain(obj):
    """JSON-ready copy (paths -> str, tuples -> lists)."""
    import json

    from ..io import _jsonable

    return json.loads(json.dumps(obj, default=_jsonable))


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("leantune", "torch", "transformers", "peft", "accelerate"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
