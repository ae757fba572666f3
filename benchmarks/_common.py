"""What every benchmark script shares: the repository root on ``sys.path`` (so a script runs from a
checkout without an install), offline model loading, where results go, and the one-line description of
the machine and its load that every timing is reported beside (``leantune.device``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

from leantune.device import load_average, machine_summary  # noqa: E402

__all__ = ["RESULTS", "ROOT", "load_average", "machine_summary"]
