"""``leantune.data.batching.length_batches``: the one length-bucketed batcher (SASRec, influence, TIGER)."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import numpy as np
import pytest

from leantune.data import batching
from leantune.data.batching import length_batches


def _lengths(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 50, n)


def _positions(batches) -> np.ndarray:
    return np.concatenate(batches) if batches else np.array([], dtype=int)


@pytest.mark.parametrize("n,batch_size", [(0, 4), (1, 4), (7, 3), (100, 10), (1234, 7), (5000, 16)])
@pytest.mark.parametrize("seeded", [False, True])
def test_every_position_once(n, batch_size, seeded):
    rng = np.random.default_rng(3) if seeded else None
    batches = length_batches(_lengths(n), batch_size, rng)
    assert np.array_equal(np.sort(_positions(batches)), np.arange(n))
    assert all(1 <= len(b) <= batch_size for b in batches)


def test_without_rng_sorted_by_length():
    lengths = _lengths(1000)
    batches = length_batches(lengths, 32, None)
    flat = _positions(batches)
    assert np.all(np.diff(lengths[flat]) >= 0)  # whole order sorted, so every batch is too
    assert [len(b) for b in batches] == [32] * 31 + [8]
    assert np.array_equal(flat, np.argsort(lengths, kind="stable"))  # ties keep position order


@pytest.mark.parametrize("n,batch_size,group", [(5000, 16, 50), (997, 5, 50), (300, 4, 3)])
def test_with_rng_batches_come_from_one_sorted_chunk(n, batch_size, group):
    lengths = _lengths(n, seed=1)
    rng = np.random.default_rng(7)
    perm = copy.deepcopy(rng).permutation(n)  # the shuffle length_batches draws first
    size = batch_size * group
    chunk_of = np.empty(n, dtype=int)
    for c, start in enumerate(range(0, n, size)):
        chunk_of[perm[start:start + size]] = c
    batches = length_batches(lengths, batch_size, rng, group=group)
    by_chunk: dict[int, list[np.ndarray]] = {}
    for b in batches:
        chunks = set(chunk_of[b].tolist())
        assert len(chunks) == 1, "a batch mixes two chunks"
        assert np.all(np.diff(lengths[b]) >= 0), "a batch is not sorted by length"
        by_chunk.setdefault(chunks.pop(), []).append(b)
    assert len(by_chunk) == -(-n // size)
    for c, group_batches in by_chunk.items():
        # the chunk's batches tile its length-sorted order: their length ranges do not interleave
        group_batches.sort(key=lambda b: (lengths[b[0]], lengths[b[-1]]))
        for prev, nxt in zip(group_batches, group_batches[1:]):
            assert lengths[prev[-1]] <= lengths[nxt[0]]
        assert sum(len(b) for b in group_batches) == int((chunk_of == c).sum())
        assert sum(len(b) < batch_size for b in group_batches) <= 1


def test_seeded_rng_is_deterministic_and_shuffles():
    lengths = _lengths(3000, seed=2)
    a = length_batches(lengths, 16, np.random.default_rng(11))
    b = length_batches(lengths, 16, np.random.default_rng(11))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    c = length_batches(lengths, 16, np.random.default_rng(12))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # batch order is shuffled: not the length-sorted order of the no-rng batches
    firsts = [lengths[x[0]] for x in a]
    assert firsts != sorted(firsts)


def test_one_home_and_backward_compatible_reexport():
    from leantune.models import sasrec, tiger

    assert sasrec.length_batches is length_batches
    assert not hasattr(tiger, "length_grouped_batches")
    # data layer: imports nothing from leantune (but errors)
    tree = ast.parse(Path(batching.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 or node.module == "errors", ast.dump(node)
            assert not (node.module or "").startswith("leantune") or node.module == "leantune.errors"
        elif isinstance(node, ast.Import):
            assert all(not a.name.startswith("leantune") for a in node.names)


def test_token_budget_batches_keep_both_limits():
    """Generation and grounding batch by padded tokens: a batch's longest length times its size stays
    within the budget, at most ``max_items`` per batch, order kept, a single long sequence alone."""
    from leantune.data.batching import token_budget_batches

    lengths = {0: 2, 1: 3, 2: 3, 3: 4, 4: 9, 5: 30}
    batches = list(token_budget_batches([0, 1, 2, 3, 4, 5], lengths, max_items=3, max_tokens=12))
    assert batches == [[0, 1, 2], [3], [4], [5]]  # 3 x 3 = 9 fits; adding 4 would pad to 16; 30 alone
    assert [i for b in batches for i in b] == [0, 1, 2, 3, 4, 5]
    assert list(token_budget_batches([0, 1, 2], lengths, max_items=2, max_tokens=100)) == [[0, 1], [2]]
    assert list(token_budget_batches([], lengths, 3, 12)) == []
