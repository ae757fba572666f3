"""What differs between task families: building training text, evaluating a model, the primary metric.

``train/``, ``evaluation/``, ``curves/`` and ``tuning/`` talk to tasks only through this base class,
so a learning curve or a hyperparameter search works the same for recommendation and attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..registry import Registry


@dataclass(frozen=True)
class TextExample:
    """One supervised example for a causal LM: the model reads ``prompt`` and should write ``response``."""

    prompt: str
    response: str
    example_id: str = ""


DEFAULT_CURVE_SIZES = (0, 25, 50, 100, 200, 400, 800, 1288)
# The settings of a task's model recipe (``Task.model_recipe``) that map onto ``FinetuneConfig`` fields.
RECIPE_KEYS = ("epochs", "lr", "r", "alpha", "target_modules", "batch_size")


def apply_recipe(recipe: dict, settings: dict) -> dict:
    """``settings`` (``FinetuneConfig`` fields) with every recipe setting they leave None taken from ``recipe``:
    ``RECIPE_KEYS``, and ``eval_every`` from the recipe's ``save_every`` (checkpoints; absent: once per epoch)."""
    merged = dict(settings)
    for key in RECIPE_KEYS:
        if merged.get(key) is None:
            merged[key] = recipe[key]
    if merged.get("eval_every") is None:
        merged["eval_every"] = recipe.get("save_every")
    return merged


class Task:
    """The contract every task implements; learning curves, tuning and the unit-pruning path call
    nothing else. Subclasses set ``name``, ``primary_metric``, ``train_on_inputs`` and
    ``cutoff_len`` and implement the methods that raise here; the rest have working defaults.
    """

    name: str = ""
    primary_metric: str = ""  # key of ``evaluate``'s result that curves and tuning optimise (higher is better)
    train_on_inputs: bool = True  # whether the trained loss covers the prompt (False: the answer only)
    cutoff_len: int = 512  # tokens of prompt + answer kept, by the trainer and by every scorer (``pipelines.units``)
    # True when validation belongs to the training units (DEALRec validates on the selected users):
    # ``valid_examples`` then takes ``unit_ids`` instead of a seeded ``limit``.
    validates_on_train_units: bool = False
    breakdown_prefix: str | None = None  # per-group metric keys (``attribute_f1/<name>``) for per-group curves
    breakdown_support_prefix: str | None = None  # units per group, to choose which groups to draw

    def train_pool(self) -> list[str]:
        """Ids of every unit a subset can be drawn from (a sample, a product, a question)."""
        raise NotImplementedError

    def train_examples(self, unit_ids: Sequence[str], tokenizer) -> list[TextExample]:
        raise NotImplementedError

    def valid_examples(self, tokenizer, limit: int | None = None, seed: int = 0,
                       unit_ids: Sequence[str] | None = None) -> list[TextExample]:
        """Validation examples: a seeded sample of ``limit`` (all when None), or, for a task that
        ``validates_on_train_units``, those of ``unit_ids``."""
        raise NotImplementedError

    def evaluate(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0) -> dict[str, float]:
        """Metrics of ``model`` (base or with adapter) on ``split``; ``limit`` evaluates a seeded subset."""
        return self.evaluate_units(model, tokenizer, split, limit, seed)[0]

    def evaluate_units(self, model, tokenizer, split: str = "test", limit: int | None = None,
                       seed: int = 0) -> tuple[dict[str, float], list[dict]]:
        """``evaluate``'s metrics and the per-unit rows behind them (``leantune.evaluation.units``)."""
        raise NotImplementedError

    def evaluate_answers(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0,
                         log=None) -> tuple[dict[str, float], list[dict], list[dict] | None]:
        """``evaluate_units`` and the answers behind its rows: (metrics, per-unit rows, answer rows or None).
        Answer rows are what ``leantune.evaluation.units.write_evaluation`` keeps as ``predictions.jsonl``;
        a task that keeps no answers returns None. ``log`` comes from ``generation_log``."""
        metrics, rows = self.evaluate_units(model, tokenizer, split, limit, seed, **({"log": log} if log is not None else {}))
        return metrics, rows, None

    def generation_log(self, folder, settings: dict):
        """A record in the evaluation's ``folder`` that lets an interrupted evaluation resume from the answers it generated
        (passed to ``evaluate_answers`` as ``log``), or None when the task's evaluation does not resume.
        ``settings`` are what the answers depend on; a record written under others is refused."""
        return None

    def metric_names(self) -> list[str]:
        """The scalar keys ``evaluate`` always returns (checked before any training, e.g. ``curve --metric``)."""
        raise NotImplementedError

    def eval_size(self, split: str = "test") -> int | None:
        """Units an evaluation of the whole ``split`` covers (what ``limit`` counts), or None when the
        task cannot say without running it; used to plan a curve's cost."""
        return None

    def default_sizes(self) -> tuple[int, ...]:
        """Learning-curve sizes when none are given."""
        return DEFAULT_CURVE_SIZES

    @classmethod
    def model_recipe(cls, model: str) -> dict | None:
        """The fine-tuning recipe the task trains ``model`` with by default, or None when it has none.
        Keys: lr, r, alpha, target_modules, batch_size, epochs, and optionally unit (a task option) and
        save_every (optimizer steps between checkpoints). ``leantune curve --recipe model`` reads it."""
        return None

    def baselines(self, metric: str, split: str = "test", limit: int | None = None, seed: int = 0) -> dict[str, float]:
        """Reference scores that need no model (e.g. answering "n/a" everywhere), drawn on curve plots."""
        return {}

    def set_progress(self, show: bool) -> None:
        """Show or hide the task's own progress bars (a study prints one line per trial instead)."""


TASKS: Registry[type] = Registry("task")
