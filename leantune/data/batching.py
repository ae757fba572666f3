"""Length-bucketed batching: batches of sample positions whose sequences have similar lengths.

Used by SASRec training and scoring, the influence solver and TIGER training, so that a batch is
padded (or trimmed) to little more than its own length. Pure numpy; imports nothing from leantune.
"""
from __future__ import annotations

import numpy as np

__all__ = ["length_batches"]


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, group: int = 50) -> list[np.ndarray]:
    """Batches of positions into ``lengths`` with similar lengths; every position appears once.

    Without ``rng``: positions sorted by length (stable), cut into consecutive batches (for
    evaluation). With ``rng``: positions shuffled, cut into chunks of ``group`` batches, each chunk
    sorted by length (stable) and cut into batches, then the batch order shuffled (as HF's
    ``group_by_length`` does for training).
    """
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    perm = rng.permutation(len(lengths))
    chunk = batch_size * group
    batches = []
    for start in range(0, len(perm), chunk):
        part = perm[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches
