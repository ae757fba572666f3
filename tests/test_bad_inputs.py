"""The bad-input corpus (tests/bad_inputs/cases.json): each case runs ``python -m leantune ARGV``
in a fresh folder holding the case's files and must end in exit code 2 with one ``error: ...``
line on stderr (usage errors may add ``try: leantune CMD --help``), no traceback, every file
that was there before unchanged, and no new file or folder left behind (an --out folder, a
report folder, a run.json of a command that was refused)."""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "bad_inputs" / "cases.json"
REPO = Path(__file__).resolve().parents[1]
HINT = re.compile(r"try: leantune( [a-z][a-z-]*)* --help")
SLOW_S = 10.0  # a case that takes longer is loading a model or training: not a bad-input check


def _load():
    corpus = json.loads(CORPUS.read_text(encoding="utf-8"))
    return corpus["bases"], corpus["cases"]


BASES, CASES = _load()


def _content(spec) -> bytes:
    if isinstance(spec, str):
        return spec.encode("utf-8")
    if "hex" in spec:
        return bytes.fromhex(spec["hex"])
    if "base64" in spec:
        return base64.b64decode(spec["base64"])
    if "latin1" in spec:
        return spec["latin1"].encode("latin-1")
    if "gzip" in spec:
        data = gzip.compress(spec["gzip"].encode("utf-8"), mtime=0)
        return data[: len(data) - spec.get("truncate", 0)]
    raise ValueError(f"unknown file spec {spec!r}")


def write_case_files(folder: Path, case: dict) -> None:
    files = dict(BASES[case["base"]]) if "base" in case else {}
    files.update(case.get("files", {}))
    for name, spec in files.items():
        if spec is None:
            continue
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(spec))


def snapshot(folder: Path) -> dict[str, str]:
    """Every path below ``folder``: a file's SHA-256, a folder as "dir"."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def test_corpus_is_well_formed():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    for case in CASES:
        assert set(case) <= {"id", "argv", "files", "base", "expect"}, case["id"]
        assert case["expect"] and case["argv"], case["id"]
        assert case.get("base") is None or case["base"] in BASES, case["id"]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    write_case_files(work, case)
    before = snapshot(work)
    env = {**os.environ, "LEANTUNE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO)]))}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "leantune", *case["argv"]], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - began
    shown = f"$ leantune {' '.join(case['argv'])}\n--- stderr\n{done.stderr}--- stdout\n{done.stdout}"

    assert "Traceback" not in done.stdout + done.stderr, shown
    assert done.returncode == 2, shown
    lines = done.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), shown
    expected = [case["expect"]] if isinstance(case["expect"], str) else case["expect"]
    assert all(part in lines[0] for part in expected), shown
    assert len(lines) == 1 or (len(lines) == 2 and HINT.fullmatch(lines[1])), shown
    after = snapshot(work)
    changed = [name for name, digest in before.items() if after.get(name) != digest]
    assert not changed, f"changed or removed: {changed}\n{shown}"
    left = sorted(set(after) - set(before))
    assert not left, f"left behind by a refused command: {left}\n{shown}"
    assert seconds < SLOW_S, f"took {seconds:.1f} s (a bad input must be refused before any real work)\n{shown}"
