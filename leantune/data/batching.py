"""Length-bucketed batching: batches of sample positions whose sequences have similar lengths.

``length_batches`` (fixed batch size) serves SASRec training and scoring, the influence solver and
TIGER training, so that a batch is padded (or trimmed) to little more than its own length;
``token_budget_batches`` (as many as fit a padded-token budget) serves generation and grounding.
Pure numpy; imports nothing from leantune.
"""
from __future__ import annotations

import numpy as np

__all__ = ["length_batches", "token_budget_batches"]


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


def token_budget_batches(order, lengths, max_items: int, max_tokens: int):
    """Consecutive slices of ``order`` (positions sorted by length) holding at most ``max_items``
    positions and at most ``max_tokens`` padded tokens (the batch's longest length times its size;
    a single longer sequence still forms its own batch)."""
    batch: list[int] = []
    for i in order:
        if batch and (len(batch) >= max_items or lengths[i] * (len(batch) + 1) > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
