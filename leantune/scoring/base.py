"""The scorer interface: one float per training sample, registered by name.

A scorer is a small class with a config dataclass (as peft does per method). ``score`` returns a
mapping column name -> array aligned with ``samples``, so one scorer may produce several columns
(e.g. influence and its Hessian-free variant).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from ..data import Sample, SequenceDataset
from ..registry import Registry


@dataclass
class ScoringContext:
    """What scorers may need; expensive members are built on first use and shared."""

    dataset: SequenceDataset
    seed: int = 0
    work_dir: Any = None  # folder for caches/checkpoints of this scoring job
    device: str = "cpu"
    extras: dict = field(default_factory=dict)  # lazily built shared objects (surrogate, llm, ...)
    options: dict = field(default_factory=dict)  # user options, e.g. model name, effort modules
    # Trains or reuses the SASRec surrogate, ``get_surrogate(dataset, cfg=None, seed=0, progress=True)``:
    # scorers never train models themselves; the pruning job passes ``leantune.train.sasrec.get_surrogate``.
    get_surrogate: Any = None
    train_tiger: Any = None  # ``leantune.train.tiger.train_tiger``, for TIGER effort's warm-up model


class Scorer(Protocol):
    name: str

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> dict[str, np.ndarray]: ...


SCORERS: Registry[type] = Registry("scorer")
