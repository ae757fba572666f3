"""What differs between task families: building training text, evaluating a model, the primary metric.

``train/``, ``evaluation/``, ``curves/`` and ``tuning/`` talk to tasks only through this interface,
so a learning curve or a hyperparameter search works the same for recommendation and attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from ..registry import Registry


@dataclass(frozen=True)
class TextExample:
    """One supervised example for a causal LM: the model reads ``prompt`` and should write ``response``."""

    prompt: str
    response: str
    example_id: str = ""


class Task(Protocol):
    name: str
    primary_metric: str  # key of ``evaluate``'s result that curves and tuning optimise (higher is better)
    train_on_inputs: bool  # whether the trained loss covers the prompt (False: the answer only)
    cutoff_len: int  # tokens of prompt + answer kept, by the trainer and by every scorer (``pipelines.units``)

    def train_pool(self) -> list[str]:
        """Ids of every unit a subset can be drawn from (a sample, a product, a question)."""
        ...

    def train_examples(self, unit_ids: Sequence[str], tokenizer) -> list[TextExample]: ...

    def valid_examples(self, tokenizer) -> list[TextExample]: ...

    def evaluate(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0) -> dict[str, float]:
        """Metrics of ``model`` (base or with adapter) on ``split``; ``limit`` evaluates a seeded subset."""
        ...

    def evaluate_units(self, model, tokenizer, split: str = "test", limit: int | None = None,
                       seed: int = 0) -> tuple[dict[str, float], list[dict]]:
        """``evaluate``'s metrics and the per-unit rows behind them (``leantune.evaluation.units``)."""
        ...

    def metric_names(self) -> list[str]:
        """The scalar keys ``evaluate`` always returns (checked before any training, e.g. ``curve --metric``)."""
        ...


TASKS: Registry[type] = Registry("task")
