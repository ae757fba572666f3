"""What a timing is reported beside (leantune.device.machine_summary) and the one preamble every
benchmark script shares (benchmarks/_common.py)."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import torch

from leantune import device

ROOT = Path(__file__).resolve().parents[1]


def test_machine_summary_names_cpu_cores_native_bf16_torch_and_threads(monkeypatch):
    monkeypatch.setattr(device, "cpu_model", lambda: "Some CPU 9000")
    monkeypatch.setattr(device, "cpu_native_bf16", lambda: "")
    monkeypatch.setattr(device, "torch_threads", lambda: 2)
    line = device.machine_summary()
    assert line == f"Some CPU 9000, {os.cpu_count()} CPUs, native bf16: none, torch {torch.__version__}, 2 threads"
    monkeypatch.setattr(device, "torch_threads", lambda: 1)
    assert device.machine_summary().endswith(f"torch {torch.__version__}, 1 thread")
    monkeypatch.setattr(device, "cpu_native_bf16", lambda: "AMX")
    assert device.machine_summary(threads=False) == f"Some CPU 9000, {os.cpu_count()} CPUs, native bf16: AMX, torch {torch.__version__}"


def test_cpu_model_and_load_average_describe_this_machine():
    assert device.cpu_model().strip()
    load = device.load_average()
    assert len(load) == 3 and all(x >= 0 and round(x, 1) == x for x in load)


def test_every_benchmark_script_takes_its_preamble_from_common():
    """One preamble: no script finds the repo root or edits sys.path itself, and each imports
    _common before anything from leantune (so a script runs from a checkout without an install)."""
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        if path.name == "_common.py":
            continue
        tree = ast.parse(path.read_text())
        source = path.read_text()
        assert "sys.path.insert" not in source and "Path(__file__).resolve().parents[1]" not in source, path.name
        order = []
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                order.append(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                order += [a.name.split(".")[0] for a in node.names]
        if "leantune" in order or any(m.startswith("bench_") for m in order):
            assert "_common" in order, path.name
            first = min(i for i, m in enumerate(order) if m == "leantune" or m.startswith("bench_"))
            assert order.index("_common") < first, path.name


def test_a_benchmark_script_runs_from_another_folder_without_an_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # -S: no site-packages, so no install can supply leantune; the benchmarks folder goes first on
    # sys.path, as `python3 benchmarks/x.py` puts it.
    code = "import sys; sys.path[:0] = [sys.argv[1]]; import _common; import leantune.device as d; print(d.__file__)"
    run = subprocess.run([sys.executable, "-S", "-c", code, str(ROOT / "benchmarks")], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()).resolve() == (ROOT / "leantune" / "device.py").resolve()
    without = subprocess.run([sys.executable, "-S", "-c", "import leantune"], cwd=tmp_path, env=env, capture_output=True)
    assert without.returncode != 0  # what _common's sys.path entry is there for
