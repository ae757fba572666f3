"""Layers run one way: data -> models -> scoring -> selection -> train -> evaluation -> pipelines -> cli.

Every ``leantune`` import in the package (top-level or inside a function) is read from the source
and checked against the layer order; a lower layer never imports a higher one.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "leantune"

ORDER = ["base", "data", "models", "scoring", "selection", "train", "evaluation", "pipelines", "cli"]
# Where each subpackage or module sits. ``base``: helpers every layer may use.
LAYER = {
    "errors": "base", "io": "base", "metrics": "base", "paths": "base", "device": "base", "registry": "base",
    "data": "data",
    "tasks.base": "data",  # the task contract (the Task base class, TextExample) depends on nothing above base
    "models": "models",
    "scoring": "scoring",
    "selection": "selection",
    "pruning": "pipelines",  # the prune job: trains the surrogate, scores, selects, writes the folder
    "train": "train",
    "evaluation": "evaluation", "tasks": "evaluation",
    "pipelines": "pipelines", "curves": "pipelines", "tuning": "pipelines",
    "cli": "cli",
}
# Known upward imports, each with its reason; the test fails when one disappears, so the list shrinks.
KNOWN: dict = {}


def _layer(module: str) -> str:
    parts = module.split(".")[1:]
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYER:
            return LAYER[key]
    return "base"  # leantune itself and leantune.__main__


def _imports(path: Path, module: str):
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                if node.module:
                    yield f"{base}.{node.module}"
                else:
                    yield from (f"{base}.{alias.name}" for alias in node.names)
            elif node.module and node.module.split(".")[0] == "leantune":
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "leantune")


def _upward_imports() -> set[tuple[str, str]]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module in ("leantune", "leantune.__main__"):  # the flat API and the entry point sit on top
            continue
        for target in _imports(path, module):
            if ORDER.index(_layer(target)) > ORDER.index(_layer(module)):
                found.add((module, target))
    return found


def test_no_layer_imports_a_higher_one():
    upward = _upward_imports()
    assert upward - set(KNOWN) == set(), "lower layer imports a higher one"
    assert set(KNOWN) - upward == set(), "a known upward import is gone: remove it from KNOWN"


def test_the_check_sees_an_upward_import(tmp_path):
    """The scanner itself: a relative import from train into evaluation is found."""
    module = tmp_path / "x.py"
    module.write_text("def f():\n    from ..evaluation.bigrec import evaluate_bigrec\n")
    targets = list(_imports(module, "leantune.train.x"))
    assert targets == ["leantune.evaluation.bigrec"]
    assert ORDER.index(_layer(targets[0])) > ORDER.index(_layer("leantune.train.x"))
