"""Most-popular baseline: every user gets the items with the most training interactions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data import SequenceDataset
from ..errors import LeantuneError
from ..metrics import DEFAULT_KS, ranking_metrics


@dataclass
class MostPopular:
    counts: np.ndarray  # counts[item] = training interactions; index 0 (padding) is never ranked

    @classmethod
    def fit(cls, dataset: SequenceDataset, period: str = "train") -> "MostPopular":
        """Count interactions of the training period (``period="train"``) or of the validation period
        only (``"valid"``: the most recent interactions a system may see before the test period; on a
        global-time split popularity drifts, and recent popularity is the stronger baseline)."""
        if period not in ("train", "valid"):
            raise LeantuneError(f"period {period!r}: choose train or valid")
        counts = np.zeros(dataset.num_items + 1, dtype=np.int64)
        for seq in dataset.train if period == "train" else dataset.valid:
            if len(seq):
                np.add.at(counts, np.asarray(seq, dtype=np.int64), 1)
        return cls(counts)

    def ranking(self, k: int) -> np.ndarray:
        """The ``k`` most popular item ids, ties broken by the smaller id."""
        order = np.lexsort((np.arange(1, len(self.counts)), -self.counts[1:]))
        return order[:k] + 1

    def evaluate(self, dataset: SequenceDataset, split: str = "test", ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
        _, targets = dataset.eval_split(split)
        top = self.ranking(max(ks))
        return ranking_metrics([top] * len(targets), targets, ks)


def target_popularity(dataset: SequenceDataset, sample_ids) -> dict[str, float]:
    """How popular the targets of these training samples are: the mean number of interactions of
    each sample's target item in the training period (``"train"``) and in the validation period
    (``"recent"``). A selection that leans towards popular targets shows up here; on a split whose
    popularity drifts, that alone moves Recall a lot."""
    by_id = {s.sample_id: s for s in dataset.train_samples}
    missing = [i for i in sample_ids if i not in by_id]
    if missing:
        raise LeantuneError(f"sample id {missing[0]} is not a training sample of {dataset.name}")
    targets = np.array([by_id[i].targets[0] for i in sample_ids], dtype=np.int64)
    cache = dataset._cache
    if "popularity" not in cache:
        cache["popularity"] = (MostPopular.fit(dataset).counts, MostPopular.fit(dataset, period="valid").counts)
    train, recent = cache["popularity"]
    return {"train": float(train[targets].mean()), "recent": float(recent[targets].mean())}
