"""The selector interface: scores + budget + rng -> the chosen sample positions."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..registry import Registry


class Selector(Protocol):
    name: str

    def select(self, scores: dict[str, np.ndarray], budget: int, rng: np.random.Generator) -> np.ndarray:
        """Return ``budget`` distinct positions into the score arrays."""
        ...


SELECTORS: Registry[type] = Registry("selector")
