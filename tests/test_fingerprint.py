"""One owner of the dataset fingerprint (``leantune.data.dataset_fingerprint``); its callers agree.

Cached folders store these values, so the recipes are pinned on the ``tiny_rec`` fixture: a change
here means every existing cache would refuse or miss.
"""
from __future__ import annotations

import pytest

from leantune.data import dataset_fingerprint
from leantune.errors import LeantuneError
from leantune.io import read_json

PINNED = {"evaluation": "f656ed9b35ac1f3f3260", "scoring": "6252c9b8d814118a", "surrogate": "be8e611e8236f495"}


def test_recipes_are_pinned(tiny_rec):
    assert {recipe: dataset_fingerprint(tiny_rec, recipe) for recipe in PINNED} == PINNED
    assert dataset_fingerprint(tiny_rec) == PINNED["evaluation"]
    with pytest.raises(LeantuneError, match="recipe 'nope'"):
        dataset_fingerprint(tiny_rec, "nope")


def test_a_title_or_an_interaction_changes_the_fingerprint(tiny_rec):
    import copy

    edited = copy.deepcopy(tiny_rec)
    item = edited.items[3]
    edited.items[3] = type(item)(item.seq_id, item.asin, "Another title", item.categories)
    assert dataset_fingerprint(edited, "evaluation") != PINNED["evaluation"]
    assert dataset_fingerprint(edited, "scoring") != PINNED["scoring"]
    assert dataset_fingerprint(edited, "surrogate") == PINNED["surrogate"]  # the surrogate never sees titles
    edited.test[0] = [*edited.test[0], 1]
    assert dataset_fingerprint(edited, "surrogate") != PINNED["surrogate"]


def test_callers_agree_with_the_owner(tiny_rec, tmp_path, monkeypatch):
    import numpy as np

    from leantune.models.sasrec import SASRecConfig
    from leantune.train.sasrec import _identity
    from leantune.pruning import prune
    from leantune.scoring import SCORERS

    assert _identity(tiny_rec, SASRecConfig(), 0)["fingerprint"] == dataset_fingerprint(tiny_rec, "surrogate")

    class CheapEl2n:  # the score chunks' manifest is what matters here, not the scores
        name = "el2n"

        def score(self, samples, ctx):
            return {"el2n": np.arange(len(samples), dtype=np.float64)}

    monkeypatch.setitem(SCORERS._entries, "el2n", CheapEl2n)
    prune(tiny_rec, 5, "el2n", tmp_path / "p", seed=0, progress=False)
    manifest = read_json(tmp_path / "p" / "scores.chunks" / "el2n" / "manifest.json")
    assert manifest["data"] == dataset_fingerprint(tiny_rec, "scoring")
