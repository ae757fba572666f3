"""Selectors: coverage-enhanced (DEALRec), stratified (CCS), top-k, random, k-center, clustering."""
import math

import numpy as np
import pytest

from leantune.errors import LeantuneError
from leantune.selection import SELECTORS
from leantune.selection.base import combined_score, minmax
from leantune.selection.coverage import coverage_sample, equal_width_ranges
from leantune.selection.embedding import cluster_quotas, kcenter_greedy


def reference_allocation(score, budget, hard_prune, ranges):
    """Per-range sample counts, computed the way DEALRec's prune.py does (loops, not arrays)."""
    order = sorted(range(len(score)), key=lambda i: (-score[i], i))
    kept = order[math.floor(hard_prune * len(score)):]
    lo, hi = min(score[i] for i in kept), max(score[i] for i in kept)
    width = (hi - lo) / ranges
    edges = [min(lo + width * j, hi) for j in range(1, ranges + 1)]
    edges[-1] = hi
    groups = [[] for _ in range(ranges)]
    for i in kept:
        for g, edge in enumerate(edges):
            if score[i] <= edge:
                groups[g].append(i)
                break
    counts, m = {}, budget
    groups = sorted((g for g in groups if g), key=len)
    for j, group in enumerate(groups):
        take = min(len(group), m // (len(groups) - j))
        counts[frozenset(group)] = take
        m -= take
    return set(order[: math.floor(hard_prune * len(score))]), counts


@pytest.mark.parametrize("seed", range(6))
def test_coverage_properties_match_reference_allocation(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    # Skewed scores with ties, as influence/effort are: many small values, a long tail.
    score = np.round(rng.gamma(0.7, size=n), 2)
    ranges = int(rng.integers(1, 30))
    hard = float(rng.choice([0.0, 0.1, 0.3]))
    budget = int(rng.integers(1, n - math.floor(hard * n) + 1))
    chosen = coverage_sample(score, budget, np.random.default_rng(seed), hard_prune=hard, ranges=ranges)

    assert len(chosen) == budget and len(set(chosen.tolist())) == budget
    hard_set, counts = reference_allocation(score.tolist(), budget, hard, ranges)
    assert not hard_set & set(chosen.tolist())
    chosen_set = set(chosen.tolist())
    for group, expected in counts.items():
        assert len(group & chosen_set) == expected


def test_coverage_is_seeded():
    score = np.random.default_rng(0).normal(size=500)
    a = coverage_sample(score, 100, np.random.default_rng(7))
    b = coverage_sample(score, 100, np.random.default_rng(7))
    c = coverage_sample(score, 100, np.random.default_rng(8))
    assert np.array_equal(a, b) and set(a.tolist()) != set(c.tolist())


def test_coverage_small_ranges_are_taken_whole():
    # 3 outliers in their own high range, 97 samples in the low range; budget 10 over 2 ranges:
    # the smallest range gives min(3, 10 // 2) = 3, the other the remaining 7.
    score = np.concatenate([np.zeros(97), np.full(3, 10.0)])
    chosen = coverage_sample(score, 10, np.random.default_rng(0), hard_prune=0.0, ranges=2)
    assert set(range(97, 100)) <= set(chosen.tolist()) and len(chosen) == 10


def test_equal_width_ranges_edges():
    score = np.array([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    assert equal_width_ranges(score, 4).tolist() == [0, 0, 1, 2, 3, 3]  # upper edges inclusive
    assert equal_width_ranges(np.ones(4), 5).tolist() == [0, 0, 0, 0]
    # Here lo + (hi - lo) rounds below hi: the maximum must still land in the last range.
    lo, hi = -0.1321048632913019, 0.1257302210933933
    assert lo + (hi - lo) < hi
    assert equal_width_ranges(np.array([lo, 0.0, hi]), 3).tolist()[-1] == 2


def test_budget_errors_are_one_line():
    score = np.arange(100.0)
    with pytest.raises(LeantuneError, match=r"budget 101: larger than the pool \(100 samples\)"):
        coverage_sample(score, 101, np.random.default_rng(0))
    with pytest.raises(LeantuneError, match="after hard_prune 0.1 drops 10 \\(90 samples\\)"):
        coverage_sample(score, 95, np.random.default_rng(0), hard_prune=0.1)
    with pytest.raises(LeantuneError, match="positive"):
        coverage_sample(score, 0, np.random.default_rng(0))
    for name in ("topk", "random"):
        with pytest.raises(LeantuneError, match="larger than the pool"):
            SELECTORS.get(name)().select({"el2n": score}, 101, np.random.default_rng(0))


def test_coverage_selector_combines_minmax_with_lambda():
    rng = np.random.default_rng(1)
    scores = {"influence": rng.normal(size=300) * 100, "effort": rng.normal(size=300) + 5}
    overall = combined_score(scores, {"influence": 1.0, "effort": 0.3})
    assert np.allclose(overall, minmax(scores["influence"]) + 0.3 * minmax(scores["effort"]))
    sel = SELECTORS.get("coverage")(weights={"influence": 1.0, "effort": 0.3})
    chosen = sel.select(scores, 50, np.random.default_rng(0))
    hardest = np.argsort(-overall, kind="stable")[:30]
    assert not set(hardest.tolist()) & set(chosen.tolist())
    assert sel.columns() == ("influence", "effort")


def test_nonfinite_scores_are_rejected():
    score = np.array([1.0, np.nan, 2.0])
    with pytest.raises(LeantuneError, match="'el2n' has 1 non-finite"):
        SELECTORS.get("stratified")().select({"el2n": score}, 1, np.random.default_rng(0))
    with pytest.raises(LeantuneError, match="'grand' is missing"):
        SELECTORS.get("topk")(weights={"grand": 1.0}).select({"el2n": score}, 1, np.random.default_rng(0))


def test_topk_and_random():
    score = np.array([0.5, 3.0, 1.0, 3.0, -2.0])
    assert SELECTORS.get("topk")(weights={"g": 1.0}).select({"g": score}, 3, None).tolist() == [1, 3, 2]
    ids = {"sample_id": np.arange(1000)}
    a = SELECTORS.get("random")().select(ids, 100, np.random.default_rng(3))
    b = SELECTORS.get("random")().select(ids, 100, np.random.default_rng(3))
    assert np.array_equal(a, b) and len(set(a.tolist())) == 100


def blobs(k=5, per=40, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, 8)) * 50
    x = np.concatenate([c + rng.normal(size=(per, 8)) for c in centers])
    return x.astype(np.float32), np.repeat(np.arange(k), per)


def test_kcenter_covers_every_blob():
    x, label = blobs()
    chosen = kcenter_greedy(x, 5, np.random.default_rng(0))
    assert sorted(label[chosen].tolist()) == [0, 1, 2, 3, 4]
    # With duplicates (all distances 0 eventually) it still returns distinct points.
    dup = np.zeros((10, 3), dtype=np.float32)
    assert len(set(kcenter_greedy(dup, 10, np.random.default_rng(0)).tolist())) == 10


def test_cluster_selector_spreads_over_clusters():
    x, label = blobs()
    sel = SELECTORS.get("cluster")()
    chosen = sel.select({"embedding": x}, 5, np.random.default_rng(0))
    assert sorted(label[chosen].tolist()) == [0, 1, 2, 3, 4]
    chosen = SELECTORS.get("cluster")(clusters=5).select({"embedding": x}, 23, np.random.default_rng(0))
    assert len(set(chosen.tolist())) == 23
    assert all(4 <= (label[chosen] == b).sum() <= 5 for b in range(5))  # equal blobs, equal shares


@pytest.mark.parametrize("seed", range(20))
def test_cluster_quotas_fill_budget_within_sizes(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(0, 20, size=int(rng.integers(1, 12)))
    if sizes.sum() == 0:
        sizes[0] = 1
    budget = int(rng.integers(1, sizes.sum() + 1))
    quotas = cluster_quotas(sizes, budget)
    assert quotas.sum() == budget and (quotas <= sizes).all() and (quotas >= 0).all()
    if budget >= (sizes > 0).sum():
        assert (quotas[sizes > 0] >= 1).all()
