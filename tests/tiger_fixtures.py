"""TIGER test data built in code (semantic IDs without an RQ-VAE), shared by the TIGER test modules."""
from __future__ import annotations

import numpy as np

from leantune.models.rqvae import SemanticIDs, assign_collision_tokens


def tiny_sids(n_items=30) -> SemanticIDs:
    """Codes built in code: 3 levels of 3 codes (27 tuples for 30 items, so a few collide)."""
    rq = np.array([[i % 3, (i // 3) % 3, (i * 7 // 9) % 3] for i in range(n_items)])
    codes = assign_collision_tokens(rq)
    return SemanticIDs(list(range(1, n_items + 1)), codes, [3, 3, 3, int(codes[:, 3].max()) + 1], key="tiny")
