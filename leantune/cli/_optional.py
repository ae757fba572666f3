"""Registers the command groups of the other modules (each import adds commands to ``app``)."""
from __future__ import annotations

import importlib

for _module in ("surrogate", "model", "prune", "run", "tiger", "attributes", "curve", "tune", "compare"):
    try:
        importlib.import_module(f"{__package__}.{_module}")
    except ModuleNotFoundError as exc:  # a command group not written yet
        if exc.name != f"{__package__}.{_module}":
            raise
