"""Which training units each (size, seed) run gets.

``random`` draws one seeded permutation of the pool per seed and takes its prefixes, so a smaller
subset is always inside a larger one for the same seed. Other methods go through the selector
registry (``leantune.selection``): a selector name (``kcenter``, ``coverage`` ...) or a scorer name
(``effort`` ...: the top-scored units) — provided the task can supply the score columns they read.
Such subsets are selected per size and are nested only when the selector's choice is greedy.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from ..errors import LeantuneError


def random_subsets(pool: Sequence[str], sizes: Sequence[int], seed: int) -> dict[int, list[str]]:
    """Nested random subsets: ``leantune.data.units.nested_subsets``, the rule every command uses."""
    from ..data.units import nested_subsets

    return nested_subsets(pool, sizes, seed)


def resolve_selector(method: str, task_name: str):
    """A selector instance for ``method``, or a one-line error naming what is available."""
    from ..selection import SELECTORS
    from ..selection.simple import TopKSelector

    if method in SELECTORS:
        return SELECTORS.get(method)()
    try:
        from ..scoring import SCORERS

        scorer_names = SCORERS.names()
    except ImportError:  # scorers need torch/data modules; without them only selectors remain
        scorer_names = []
    if method in scorer_names:
        return TopKSelector(weights={method: 1.0})
    known = ", ".join(sorted({"random", *SELECTORS.names(), *scorer_names}))
    raise LeantuneError(f"method {method!r} not available for task {task_name!r}: not a selector or scorer (known: {known})")


def method_subsets(
    method: str,
    task,
    pool: Sequence[str],
    sizes: Sequence[int],
    seed: int,
    scores_for: Callable[[tuple[str, ...]], dict[str, np.ndarray]],
) -> dict[int, list[str]]:
    """Subsets for a registered method; ``scores_for(columns)`` supplies the score columns."""
    if method == "random":
        return random_subsets(pool, sizes, seed)
    selector = resolve_selector(method, task.name)
    columns = tuple(selector.columns())
    scores = scores_for(columns)
    for name in columns:
        if len(scores[name]) != len(pool):
            raise LeantuneError(f"score column {name!r} has {len(scores[name])} rows for a pool of {len(pool)} units")
    out = {}
    for n in sizes:
        if n > len(pool):
            raise LeantuneError(f"size {n} is larger than the training pool ({len(pool)} units)")
        positions = selector.select(scores, n, np.random.default_rng(seed)) if n else np.array([], dtype=np.int64)
        out[n] = [pool[i] for i in np.asarray(positions)]
    return out
