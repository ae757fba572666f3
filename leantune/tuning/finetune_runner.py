"""The real trial runner: LoRA fine-tuning through ``leantune.train`` and scoring through a task.

One trial = ``finetune(...)`` on a fixed, seeded training subset, paused at the early fraction
(``stop_after_fraction``) and later continued in the same folder, then scored with the task's
``evaluate`` on a seeded validation subset (and the test split when asked). With
``objective='valid_loss'`` the score is ``exp(-validation loss)`` (the geometric-mean probability
of the answer tokens), which needs no generation and works for the random tiny test model; its
held-out score is then ``exp(-loss)`` on validation examples disjoint from those the trainer
validates on (the task interface has no test *examples*).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import LeantuneError, ParameterError
from .runner import RunResult

OBJECTIVES = ("metric", "valid_loss")
TEST_FOLDER = "test"  # a finished trial's test evaluation (``per_unit.jsonl``) under its run folder


@dataclass
class FinetuneRunner:
    """Trial runner that LoRA-fine-tunes a real model on a task's seeded training subset and scores the
    trial on its validation split, with checkpoints so that continued trials resume where they stopped."""

    task: str = "attributes"
    model: str = "smollm2"
    train_size: int | None = 64  # units drawn (seeded) from the task's training pool; None: all
    eval_limit: int | None = 20  # validation (and test) subset passed to task.evaluate; None: all
    valid_loss_size: int = 32  # validation examples the trainer computes its loss on
    objective: str = "metric"
    metric_name: str | None = None  # a key of task.evaluate's result; None: the task's primary metric
    seed: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)  # other FinetuneConfig fields (cutoff_len, target_modules, ...)
    task_options: dict[str, Any] = field(default_factory=dict)
    progress: bool = False
    device: str = "auto"  # for scoring; training follows FinetuneConfig.device

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ParameterError("objective", repr(self.objective), f"choose one of {', '.join(OBJECTIVES)}")
        if self.train_size is not None and self.train_size < 1:
            raise ParameterError("train_size", self.train_size, "must be at least 1")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ParameterError("eval_limit", self.eval_limit, "must be at least 1 (0: all)")
        if self.valid_loss_size < 1:
            raise ParameterError("valid_loss_size", self.valid_loss_size, "must be at least 1")
        from ..tasks.base import TASKS

        _import_tasks()
        self._task = TASKS.get(self.task)(**self.task_options)
        self._task.set_progress(self.progress)  # the study prints one line per trial instead
        self.metric = "exp(-valid_loss)" if self.objective == "valid_loss" else (self.metric_name or self._task.primary_metric)
        if self.objective == "metric":
            from ..curves.runner import check_metric

            check_metric(self._task, self.metric)  # a typo is refused before the first trial trains
        self._data = None
        self._config({})  # fixed settings FinetuneConfig refuses (cutoff_len 4, a misspelt key) fail here, not in trial 0

    def preflight(self) -> None:
        """Refuse, before any training, a ``cutoff_len`` that cuts the answers off.

        Examples are cut at ``cutoff_len`` tokens, prompt first. An example whose prompt fills the
        cut keeps no answer token: with the loss on answers only (``train_on_inputs`` false, as in
        the attributes task) it has no loss at all, and a batch of such examples gives a NaN loss
        that the trainer reports as divergence ("try a lower learning rate"); with the loss on the
        whole text it teaches (or scores) the prompt only. Refused, for the training examples and
        the trainer's validation examples alike: any such example when the loss is on answers
        only, and all of them otherwise (no trial could learn to answer).
        """
        from ..data.tokenize import answer_cut_off

        cfg = self._config({})
        train, valid = self._examples()
        for split, examples in (("training", train), ("validation", valid)):
            n = len(examples)
            cut = sum(answer_cut_off(self._tokenizer, ex, cfg.cutoff_len) for ex in examples)
            if not cut or (cfg.train_on_inputs and cut < n):
                continue
            prompts = [len(self._tokenizer(ex.prompt)["input_ids"]) for ex in examples]
            which = f"all {n}" if cut == n else f"{cut} of the {n}"
            raise ParameterError(
                "cutoff_len", cfg.cutoff_len, f"cuts the answer off: {which} {split} examples keep no answer "
                f"token within {cfg.cutoff_len} tokens (prompts take {min(prompts)}-{max(prompts)} tokens"
                f"{'' if cut == n else '; the loss is on the answers only'}); raise it above {max(prompts)}")

    def settings(self) -> dict:
        """What makes two runs comparable (stored with the study; a joining worker must match)."""
        return {"task": self.task, "model": self.model, "train_size": self.train_size, "eval_limit": self.eval_limit,
                "objective": self.objective, "metric": self.metric, "data_seed": self.seed, "fixed": self.fixed}

    def _examples(self):
        if self._data is None:
            from ..models.llm import load_tokenizer

            tokenizer = self._tokenizer = load_tokenizer(self.model)
            pool = self._task.train_pool()
            if self.train_size is not None and self.train_size > len(pool):
                raise ParameterError("train_size", self.train_size, f"larger than the {self.task} training pool ({len(pool)})")
            from ..data.units import training_subset

            ids = training_subset(pool, self.train_size, self.seed)
            train = self._task.train_examples(ids, tokenizer)
            valid = list(self._task.valid_examples(tokenizer))
            random.Random(self.seed).shuffle(valid)
            # First part: the trainer's validation loss; a disjoint part: the held-out loss score.
            self._heldout = valid[self.valid_loss_size: 2 * self.valid_loss_size]
            self._data = (train, valid[: self.valid_loss_size])
        return self._data

    def _config(self, params: dict):
        from ..train import FinetuneConfig

        names = {f.name for f in fields(FinetuneConfig)}
        unknown = set(params) - names
        if unknown:
            raise LeantuneError(f"search space: {sorted(unknown)} are not FinetuneConfig fields ({', '.join(sorted(names))})")
        unknown = set(self.fixed) - names
        if unknown:
            raise LeantuneError(f"fixed fine-tuning settings: {sorted(unknown)} are not FinetuneConfig fields ({', '.join(sorted(names))})")
        values = {**self.fixed, **params, "seed": self.seed}
        if "train_on_inputs" not in self.fixed:  # the task's loss unless the study pins it
            values["train_on_inputs"] = self._task.train_on_inputs
        return FinetuneConfig(**values)

    def run(self, params: dict[str, Any], out_dir: Path, fraction: float | None, test: bool = False) -> RunResult:
        from ..train import finetune, load_finetuned

        start = time.perf_counter()
        train, valid = self._examples()
        res = finetune(self.model, train, valid, Path(out_dir), self._config(params), stop_after_fraction=fraction, progress=self.progress)
        history = [dict(row) for row in res.history]
        valid_loss = _last_valid_loss(history, res)
        out = RunResult(score=0.0, status=res.status, steps=res.steps, total_steps=res.total_steps, tokens=res.tokens_seen,
                        history=history, valid_loss=valid_loss, reason=res.reason or "")
        if res.status == "diverged":
            out.wall_s = time.perf_counter() - start
            return out
        if self.objective == "valid_loss":
            out.score = math.exp(-valid_loss) if valid_loss is not None and math.isfinite(valid_loss) else 0.0
            if test:
                model, tokenizer = load_finetuned(self.model, res.adapter_dir, device=self._device())
                loss = self._heldout_loss(model, tokenizer, self._config(params))
                out.metrics["heldout_loss"] = loss
                out.test_score = math.exp(-loss) if math.isfinite(loss) else 0.0
        else:
            model, tokenizer = load_finetuned(self.model, res.adapter_dir, device=self._device())
            metrics = self._task.evaluate(model, tokenizer, split="valid", limit=self.eval_limit, seed=self.seed)
            out.metrics = _headline(metrics)
            out.score = float(self._metric(metrics))
            if test:  # per-unit rows beside the run (``<out_dir>/test/per_unit.jsonl``), for paired comparisons
                test_metrics = self._test_units(model, tokenizer, Path(out_dir) / TEST_FOLDER, self.eval_limit)
                out.metrics.update({f"test_{k}": v for k, v in _headline(test_metrics).items()})
                out.test_score = float(self._metric(test_metrics))
        out.wall_s = time.perf_counter() - start
        return out

    def evaluate_test(self, out_dir: Path, limit: int | None, folder: str | Path) -> float:
        """Score a finished trial's adapter (``out_dir/adapter``) on ``limit`` test units (None: all)
        and keep the per-unit rows in ``folder`` (``per_unit.jsonl`` and ``metrics.json``), for a
        larger held-out comparison of a few chosen trials than every trial's ``eval_limit``. Only
        with ``objective='metric'``: the loss objective has no test units."""
        from ..io import write_json
        from ..train import adapter_fingerprint, load_finetuned

        if self.objective != "metric":
            raise ParameterError("objective", repr(self.objective), "a test evaluation of units needs objective 'metric'")
        adapter, folder = Path(out_dir) / "adapter", Path(folder)
        model, tokenizer = load_finetuned(self.model, adapter, device=self._device())
        # a long evaluation resumes from the answers it logged (where the task logs them)
        log = self._task.generation_log(folder, {"model": self.model, "adapter": adapter_fingerprint(adapter),
                                                 "split": "test", "limit": limit, "seed": self.seed})
        metrics = self._test_units(model, tokenizer, folder, limit, log=log)
        write_json(folder / "metrics.json", _headline(metrics))
        return float(self._metric(metrics))

    def _test_units(self, model, tokenizer, folder: Path, limit: int | None, log=None) -> dict:
        from ..evaluation.units import write_evaluation

        metrics, unit_rows, answers = self._task.evaluate_answers(model, tokenizer, split="test", limit=limit, seed=self.seed, log=log)
        write_evaluation(folder, unit_rows, answers)
        return metrics

    def _heldout_loss(self, model, tokenizer, cfg) -> float:
        """Mean token loss on the held-out validation examples (the trainer's own tokenisation)."""
        import torch

        from ..train.data import tokenize_examples

        if not self._heldout:
            raise ParameterError("objective", "'valid_loss'", f"the {self.task} validation split has no examples left for a held-out score")
        total, count = 0.0, 0
        with torch.no_grad():
            for row in tokenize_examples(tokenizer, self._heldout, cfg.cutoff_len, cfg.train_on_inputs):
                labels = torch.tensor([row["labels"]], device=model.device)
                n = int((labels[:, 1:] != -100).sum())
                if n == 0:
                    continue
                out = model(input_ids=torch.tensor([row["input_ids"]], device=model.device), labels=labels)
                total += float(out.loss) * n
                count += n
        return total / count if count else float("nan")

    def _device(self) -> str:
        from ..device import resolve_device

        return resolve_device(self.device)

    def _metric(self, metrics: dict) -> float:
        name = self.metric
        if name not in metrics:
            raise ParameterError("metric", repr(name), f"{self.task} reports {', '.join(sorted(k for k in metrics if '/' not in k))}")
        return metrics[name]


def _headline(metrics: dict) -> dict:
    """The overall figures only (per-attribute breakdowns would bloat every trial's user attrs)."""
    return {k: float(v) for k, v in metrics.items() if "/" not in k and isinstance(v, (int, float))}


def _last_valid_loss(history: list[dict], res) -> float | None:
    for row in reversed(history):
        if row.get("valid_loss") is not None:
            return float(row["valid_loss"])
    best = getattr(res, "best_valid_loss", None)
    return None if best is None else float(best)


def _import_tasks() -> None:
    """Import the task modules so they register themselves (each is optional while being written)."""
    import importlib

    for module in ("attributes", "recommendation"):
        try:
            importlib.import_module(f"leantune.tasks.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"leantune.tasks.{module}":
                raise
