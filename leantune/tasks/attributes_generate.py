"""What attribute answers add to the one generation loop (``leantune.evaluation.generation``):
the stop rules on the decoded text (a JSON object closed, a one-line answer ended), so a rambling
zero-shot model stops once its answer is complete, and a resumable log of generated answers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

GENERATION_LOG = "generation.partial.jsonl"  # the log's file name in an evaluation's folder; removed once its answers are written


class GenerationLog:
    """A resumable record of generated texts: one JSON line per prompt (``{"i", "prompt", "text"}``)
    after a settings line, appended and flushed batch by batch, so an interrupted evaluation restarts
    where it stopped. Each batch also leaves a ``{"s"}`` line: the seconds it took, so the time of
    earlier sittings is known (``seconds``). Lines whose prompt no longer matches, and a torn last line,
    are ignored; a log written under other settings is refused."""

    def __init__(self, path, settings: dict):
        self.path, self.settings = Path(path), settings

    @classmethod
    def in_folder(cls, folder, settings: dict) -> "GenerationLog":
        """The log of the evaluation written to ``folder`` (its ``GENERATION_LOG`` file)."""
        return cls(Path(folder) / GENERATION_LOG, settings)

    def discard(self) -> None:
        """Remove the log, once the answers it holds are written out."""
        self.path.unlink(missing_ok=True)

    @staticmethod
    def _key(prompt: str) -> str:
        """What a line records of its prompt, so a line is used only for the prompt it answered."""
        import hashlib

        return hashlib.sha256(prompt.encode()).hexdigest()[:16]

    def check(self) -> None:
        """Refuse a log written under other settings (reads its first line only)."""
        import json

        from ..io import refuse_other_settings

        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as fh:
            first = fh.readline()
        try:
            stored = json.loads(first).get("settings", {})
        except (json.JSONDecodeError, AttributeError):
            stored = {}
        refuse_other_settings(stored, self.settings, "a generation log", self.path.parent,
                              "use another output folder, or delete the log to start over")

    def read(self, prompts: Sequence[str]) -> dict[int, str]:
        """The texts already generated for ``prompts`` (by index), after ``check``."""
        if not self.path.is_file():
            return {}
        self.check()
        done: dict[int, str] = {}
        for row in self._rows():
            i = row.get("i")
            if isinstance(i, int) and 0 <= i < len(prompts) and row.get("prompt") == self._key(prompts[i]):
                done[i] = row["text"]
        return done

    def seconds(self) -> float:
        """Seconds of generation the log's batches record (earlier sittings, when read before a resume);
        a batch cut off by an interruption is not counted, nor are logs written before batches were timed."""
        return sum(float(row["s"]) for row in self._rows() if "i" not in row and isinstance(row.get("s"), (int, float)))

    def _rows(self):
        """The log's JSON objects after the settings line; a line cut off by an interruption is skipped."""
        import json

        if not self.path.is_file():
            return
        with open(self.path, encoding="utf-8") as fh:
            next(fh, None)  # the settings line
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict):
                    yield row

    def writer(self, prompts: Sequence[str]):
        """An ``on_batch`` callback appending each batch's texts, then its seconds, to the log."""
        import json
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.is_file():
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"settings": self.settings}) + "\n")

        since = [time.perf_counter()]

        def append(indices, texts):
            now = time.perf_counter()
            with open(self.path, "a", encoding="utf-8") as fh:
                for i, text in zip(indices, texts):
                    fh.write(json.dumps({"i": int(i), "prompt": self._key(prompts[i]), "text": text}) + "\n")
                fh.write(json.dumps({"s": round(now - since[0], 3)}) + "\n")
                fh.flush()
            since[0] = now

        return append


def json_object_closed(text: str) -> bool:
    """True once the first ``{`` in ``text`` has its matching ``}`` (braces in strings ignored)."""
    start = text.find("{")
    if start < 0:
        return False
    depth, in_string, escaped = 0, False, False
    for ch in text[start:]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return True
    return False


def line_ended(text: str) -> bool:
    """True once a non-empty first line is followed by a newline."""
    stripped = text.lstrip()
    return "\n" in stripped and bool(stripped.split("\n", 1)[0].strip())
