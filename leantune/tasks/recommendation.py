"""BIGRec-style sequential recommendation as a ``Task``: Alpaca prompts listing the user's past
titles, the next title as response; evaluated by generation + grounding (Recall/NDCG@K).

Units are training sample ids (one per user, the user's line in the data files). The validation
examples of a set of units are those users' validation samples, as DEALRec early-stops on the
validation samples of the selected users.
"""
from __future__ import annotations

import random
from typing import Sequence

from ..errors import LeantuneError
from .base import TASKS, Task, TextExample


@TASKS.register("recommendation")
class RecommendationTask(Task):
    """BIGRec sequential recommendation as a task: prompt/response examples for fine-tuning, evaluation by generation + grounding."""

    name = "recommendation"
    primary_metric = "recall@20"
    train_on_inputs = True  # BIGRec trains on the whole prompt + answer
    validates_on_train_units = True  # DEALRec validates on the selected users

    def __init__(
        self,
        data="games",
        pool: int | None = None,
        seed: int = 0,
        cutoff_len: int = 512,
        valid_limit: int | None = 256,
        eval_users: int | None = 500,
        eval_config=None,
    ):
        """``pool``: a seeded random sub-pool of training samples to draw units from (None = all);
        ``valid_limit``: validation examples when no units are given; ``eval_users``: default
        number of test users ``evaluate`` samples when ``limit`` is not given."""
        from ..data import SequenceDataset, load_dataset

        self.dataset = data if isinstance(data, SequenceDataset) else load_dataset(data)
        self.pool, self.seed, self.cutoff_len = pool, seed, cutoff_len
        self.valid_limit, self.eval_users, self.eval_config = valid_limit, eval_users, eval_config
        n = len(self.dataset.train_samples)
        if pool is not None and not 0 < pool <= n:
            raise LeantuneError(f"pool {pool}: must be between 1 and {n} (training samples of {self.dataset.name})")

    def train_pool(self) -> list[str]:
        ids = [s.sample_id for s in self.dataset.train_samples]
        if self.pool is not None:
            ids = sorted(random.Random(self.seed).sample(ids, self.pool))
        return [str(i) for i in ids]

    def _by_id(self, split: str) -> dict[int, object]:
        return {s.sample_id: s for s in self.dataset.samples(split)}

    def _examples(self, samples, tokenizer) -> list[TextExample]:
        from ..data.prompts import sample_prompt

        out = []
        for s in samples:
            rp = sample_prompt(self.dataset, s, tokenizer, self.cutoff_len, with_response=True)
            out.append(TextExample(rp.prompt, rp.response, str(s.sample_id)))
        return out

    def train_examples(self, unit_ids: Sequence[str], tokenizer) -> list[TextExample]:
        by_id = self._by_id("train")
        try:
            samples = [by_id[int(u)] for u in unit_ids]
        except (KeyError, ValueError) as exc:
            raise LeantuneError(f"unit id {exc.args[0]!r} is not a training sample of {self.dataset.name}") from None
        return self._examples(samples, tokenizer)

    def valid_examples(self, tokenizer, limit: int | None = None, seed: int = 0,
                       unit_ids: Sequence[str] | None = None) -> list[TextExample]:
        """Validation examples of ``unit_ids`` (users without a validation item are skipped), or,
        without units, a seeded sample of ``limit`` (default: the task's ``valid_limit``) validation examples."""
        by_id = self._by_id("valid")
        if unit_ids is not None:
            samples = [by_id[int(u)] for u in unit_ids if int(u) in by_id]
        else:
            samples = list(by_id.values())
            n = self.valid_limit if limit is None else limit
            if n is not None and len(samples) > n:
                samples = sorted(random.Random(self.seed + 1 + seed).sample(samples, n), key=lambda s: s.sample_id)
        return self._examples(samples, tokenizer)

    def metric_names(self) -> list[str]:
        """The keys ``evaluate`` returns: recall@K and ndcg@K for the evaluation's K values."""
        from ..evaluation.bigrec import BigrecEvalConfig

        ks = (self.eval_config or BigrecEvalConfig(cutoff_len=self.cutoff_len)).ks
        return [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]

    def _evaluate(self, model, tokenizer, split: str, limit: int | None, seed: int):
        from dataclasses import replace

        from ..evaluation.bigrec import BigrecEvalConfig, evaluate_loaded, select_samples

        cfg = self.eval_config or BigrecEvalConfig(cutoff_len=self.cutoff_len)
        users = limit if limit is not None else self.eval_users
        device = str(next(model.parameters()).device)
        cfg = replace(cfg, users=users, seed=seed, split=split, device=device)
        samples = select_samples(self.dataset, split, cfg.users, cfg.seed)
        return evaluate_loaded(model, tokenizer, self.dataset, samples, cfg, progress=False)

    def evaluate(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0) -> dict[str, float]:
        return self._evaluate(model, tokenizer, split, limit, seed).metrics

    def evaluate_units(self, model, tokenizer, split: str = "test", limit: int | None = None, seed: int = 0):
        result = self._evaluate(model, tokenizer, split, limit, seed)
        return result.metrics, result.per_unit
