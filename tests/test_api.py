"""The flat public API at the package top level (``leantune.prune``, ``leantune.compare``, ...)."""
from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import leantune

ROOT = Path(__file__).resolve().parents[1]
# Public dataclasses allowed to keep only the docstring dataclasses generate (none).
GENERATED_DOC_OK: set[str] = set()


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_import_is_cheap():
    done = _python("import leantune, sys; assert 'torch' not in sys.modules; assert 'transformers' not in sys.modules")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", leantune.__all__)
def test_every_public_name_resolves_and_has_a_docstring(name):
    obj = getattr(leantune, name)
    module, _, attr = leantune._LAZY[name].partition(":")
    assert obj is getattr(sys.modules[module], attr)
    doc = inspect.getdoc(obj)
    assert doc and doc.strip(), f"leantune.{name} has no docstring"
    generated = inspect.isclass(obj) and dataclasses.is_dataclass(obj) and (obj.__dict__.get("__doc__") or "").startswith(f"{obj.__name__}(")
    assert not generated or name in GENERATED_DOC_OK, f"leantune.{name}: only the dataclass-generated docstring"


def test_all_and_dir():
    assert len(set(leantune.__all__)) == len(leantune.__all__) == len(leantune._LAZY)
    for name in ("load_dataset", "prune", "PruneConfig", "finetune", "evaluate_bigrec", "run_bigrec", "learning_curve",
                 "EarlySearch", "compare", "minimum_detectable_effect"):
        assert name in leantune.__all__
    assert set(leantune.__all__) <= set(dir(leantune))
    assert "__version__" in dir(leantune)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        leantune.no_such_name  # noqa: B018
    assert not hasattr(leantune, "no_such_name")
    from leantune import minimum_detectable_effect, prune  # noqa: F401  (from-imports work too)


def test_every_registered_task_implements_the_task_contract():
    """Curves, tuning and the unit-pruning path call tasks only through ``leantune.tasks.base.Task``."""
    import importlib
    import pkgutil

    import leantune.tasks
    from leantune.tasks.base import TASKS, Task

    for info in pkgutil.iter_modules(leantune.tasks.__path__):
        importlib.import_module(f"leantune.tasks.{info.name}")
    assert {"attributes", "recommendation", "sft"} <= set(TASKS.names())
    for name in TASKS.names():
        cls = TASKS.get(name)
        assert issubclass(cls, Task), name
        for method in ("train_pool", "train_examples", "valid_examples", "evaluate_units", "metric_names"):
            assert getattr(cls, method) is not getattr(Task, method), f"{name} does not implement {method}"
        assert cls.name == name and cls.primary_metric


def test_library_errors_name_parameters_and_the_cli_maps_them_to_flags():
    """``ParameterError`` says ``train_limit 0: ...`` from Python; ``leantune`` prints ``--train-limit 0: ...``
    (the bad-input corpus checks the command-line side)."""
    import pytest

    from leantune.errors import ParameterError
    from leantune.pipelines.attributes import finetune_attributes
    from leantune.train import FinetuneConfig

    with pytest.raises(ParameterError, match=r"^train_limit 0: must be at least 1$") as info:
        finetune_attributes(FinetuneConfig(), train_limit=0)
    assert info.value.as_flag() == "--train-limit 0: must be at least 1"
    assert ParameterError("limit", 3, "x").as_flag({"limit": "--eval-limit"}) == "--eval-limit 3: x"


def test_no_library_error_names_a_command_line_flag():
    """Errors raised below ``leantune.cli`` name parameters (``ParameterError``) or files, never flags:
    a ``--flag`` may appear only inside a backticked command the user is told to run
    (`pip install --no-deps ...`, `leantune run --base`)."""
    import ast
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "leantune"
    error_calls = {"LeantuneError", "ParameterError", "DataError", "refuse_other_settings", "SystemExit"}
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "cli":
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            call = node.exc if isinstance(node, ast.Raise) else node
            if not isinstance(call, ast.Call):
                continue
            name = getattr(call.func, "id", getattr(call.func, "attr", ""))
            if name not in error_calls:
                continue
            text = re.sub(r"`[^`]*`", "", ast.get_source_segment(source, call) or "")
            found += [f"{path.relative_to(package)}:{call.lineno} {m}" for m in re.findall(r"--[a-z][a-z0-9-]*", text)]
    assert found == []


def test_the_cli_prints_a_parameter_as_the_flag_of_the_command_that_ran():
    import typer.main

    from leantune.cli import _flags, app

    command = typer.main.get_command(app)
    prune = _flags(command, ["prune", "--budget", "5"])
    assert prune["lam"] == "--lambda" and prune["budget"] == "--budget" and prune["options"] == "--opt"
    export = _flags(command, ["data", "export"])
    assert export["format"] == "--format"  # the flag's own name, whatever the function parameter is called
    assert "users" not in _flags(command, ["run"])  # `run` has --test-users: its error shows the bare parameter
