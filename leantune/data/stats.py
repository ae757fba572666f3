"""Summary counts of a sequence dataset (``leantune data stats``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sequences import SequenceDataset


@dataclass
class DatasetStats:
    name: str
    users: int
    items: int
    interactions: int
    train_samples: int
    empty_history: int
    valid_users: int
    test_users: int
    test_targets: int
    history_percentiles: dict[str, float]
    no_train_users: int = 0  # users with validation/test items only: no training sample

    def rows(self) -> list[tuple[str, str]]:
        pct = ", ".join(f"{k} {v:g}" for k, v in self.history_percentiles.items())
        return [
            ("users", f"{self.users:,}"),
            ("items", f"{self.items:,}"),
            ("interactions", f"{self.interactions:,}"),
            ("training samples (one per user with training items)", f"{self.train_samples:,}"),
            ("  of which empty history (single training item)", f"{self.empty_history:,}"),
            ("users without training items (validation/test only)", f"{self.no_train_users:,}"),
            ("users with validation target", f"{self.valid_users:,}"),
            ("users with test targets", f"{self.test_users:,}"),
            ("test target items", f"{self.test_targets:,}"),
            ("training-sequence length percentiles", pct),
        ]


def dataset_stats(ds: SequenceDataset) -> DatasetStats:
    lengths = np.array([len(seq) for seq in ds.train if seq])  # of the users with training samples
    return DatasetStats(
        name=ds.name,
        users=len(ds.users),
        items=len(ds.items),
        interactions=int(sum(len(a) + len(b) + len(c) for a, b, c in zip(ds.train, ds.valid, ds.test))),
        train_samples=len(ds.train_samples),
        empty_history=sum(1 for s in ds.train_samples if not s.history),
        valid_users=len(ds.valid_samples),
        test_users=len(ds.test_samples),
        test_targets=sum(len(s.targets) for s in ds.test_samples),
        history_percentiles={
            f"p{q}": float(np.percentile(lengths, q)) for q in (10, 25, 50, 75, 90, 99)
        }
        | {"max": float(lengths.max())},
        no_train_users=sum(1 for seq in ds.train if not seq),
    )
