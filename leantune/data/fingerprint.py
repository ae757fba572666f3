"""Content fingerprints of a dataset: the one place that says how a dataset is hashed for a cache key.

Cached folders store these values (evaluation settings, base-model cache folders, score-chunk
manifests, surrogate metadata), so each recipe is frozen: changing one byte of a recipe makes every
existing cache refuse or miss. The recipes differ because each cache depends on different parts of
the data; a new cache should reuse one of them rather than hash the dataset its own way.

========== ======================================================= ====== ==============================
recipe     hashes                                                  digits used by
========== ======================================================= ====== ==============================
evaluation (item id, title) of every item, train/valid/test splits 20     BIGRec evaluation, base-model
                                                                          evaluation cache
scoring    user ids, train sequences, titles in item-id order      16     pruning score chunks
surrogate  largest item id, train/valid/test sequences             16     SASRec surrogate
========== ======================================================= ====== ==============================
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal

from ..errors import LeantuneError

Recipe = Literal["evaluation", "scoring", "surrogate"]
RECIPES: tuple[str, ...] = ("evaluation", "scoring", "surrogate")


def dataset_fingerprint(dataset, recipe: Recipe = "evaluation") -> str:
    """Hex content hash of ``dataset`` (a :class:`~leantune.data.SequenceDataset`) by ``recipe``.

    See the module docstring for what each recipe covers. The values are stored in cached folders
    and must never change. Not memoised: a dataset edited in place gets a fresh hash.
    """
    if recipe == "evaluation":
        digest = hashlib.sha256()
        digest.update(json.dumps(sorted((i, dataset.title(i)) for i in dataset.items)).encode())
        for split in (dataset.train, dataset.valid, dataset.test):
            digest.update(json.dumps(split).encode())
        return digest.hexdigest()[:20]
    if recipe == "scoring":
        titles = [dataset.items[i].title for i in sorted(dataset.items)]
        blob = json.dumps([dataset.users, dataset.train, titles], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
    if recipe == "surrogate":
        digest = hashlib.sha256(f"items {dataset.num_items}\n".encode())
        for name in ("train", "valid", "test"):
            digest.update(name.encode())
            for seq in getattr(dataset, name):
                digest.update((" ".join(map(str, seq)) + "\n").encode())
        return digest.hexdigest()[:16]
    raise LeantuneError(f"dataset fingerprint recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
