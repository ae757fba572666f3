"""Semantic IDs for TIGER: a residual-quantised VAE turns each item embedding into a code tuple.

As in TIGER (Rajput et al. 2023): an MLP encoder (512-256-128) maps the item's content embedding
to a 32-d latent, three residual quantisation levels of 256 codes each quantise it, and an MLP
decoder reconstructs the embedding. Loss = reconstruction MSE + per level
``||sg[r] - e||^2 + beta * ||r - sg[e]||^2`` (beta = 0.25, the commitment weight), with the
straight-through estimator. Each codebook is initialised by k-means on the first batch's
residuals at its level, and codes unused during an epoch are reset to random current residuals
(dead-code reset), the usual remedy for codebook collapse.

Items that share all three codes get a fourth token 0, 1, 2, ... (in item-id order) so every item
has a unique tuple. ``SemanticIDStats`` reports codebook usage per level and the collision rate;
a level that uses only a small part of its codebook produces a warning line.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import DataError, LeantuneError, ParameterError
from ..io import read_json, write_json

IDS_FILE = "semantic_ids.json"
WEIGHTS_FILE = "rqvae.safetensors"
CKPT_FILE = "rqvae.ckpt.safetensors"


@dataclass
class RQVAEConfig:
    hidden_dims: tuple[int, ...] = (512, 256, 128)
    latent_dim: int = 32
    levels: int = 3
    codebook_size: int = 256
    commitment: float = 0.25
    epochs: int = 50  # passes over all items (Games: 17 batches each; TIGER ran 20k, far beyond a CPU budget)
    batch_size: int = 1024
    lr: float = 1e-3
    kmeans_iters: int = 25
    dead_code_reset: bool = True
    reset_every: int = 10  # steps per dead-code window: codes unused over a window are reset
    checkpoint_every: int = 10  # epochs between resumable checkpoints
    # A level using fewer than this fraction of min(codebook_size, items) codes is reported as collapsed.
    collapse_fraction: float = 0.25

    def __post_init__(self):
        # Checked before any work; the CLI prints each parameter as its flag where it has one.
        for name in ("levels", "codebook_size", "epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(name, repr(value), "must be a positive integer")
        for name in ("latent_dim", "batch_size", "kmeans_iters", "reset_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LeantuneError(f"RQ-VAE {name} {value!r}: must be a positive integer")
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.hidden_dims):
            raise LeantuneError(f"RQ-VAE hidden_dims {self.hidden_dims!r}: must be positive integers")

    def key(self, embeddings_key: str, seed: int) -> str:
        # Only settings that change the codes: checkpointing and the collapse threshold do not.
        settings = {k: v for k, v in asdict(self).items() if k not in ("checkpoint_every", "collapse_fraction")}
        blob = json.dumps({"cfg": settings, "emb": embeddings_key, "seed": seed}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means; centres start at random points, empty clusters restart at random points."""
    n = x.shape[0]
    idx = torch.randperm(n, generator=generator)[:k] if n >= k else torch.randint(n, (k,), generator=generator)
    centres = x[idx].clone()
    if n < k:  # fewer points than codes: jitter the duplicates apart
        centres += 1e-3 * x.std() * torch.randn(centres.shape, generator=generator)
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        empty = counts == 0
        centres = torch.where(empty[:, None], centres, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            centres[empty] = x[torch.randint(n, (int(empty.sum()),), generator=generator)]
    return centres


class RQVAE(nn.Module):
    def __init__(self, input_dim: int, cfg: RQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = _mlp([input_dim, *cfg.hidden_dims, cfg.latent_dim])
        self.decoder = _mlp([cfg.latent_dim, *reversed(cfg.hidden_dims), input_dim])
        self.codebooks = nn.ParameterList(
            [nn.Parameter(torch.randn(cfg.codebook_size, cfg.latent_dim) * 0.01) for _ in range(cfg.levels)]
        )
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        # Sentence embeddings share a large common direction; centring and scaling them spreads
        # the latents, without which the first level collapses onto one or two codes.
        self.register_buffer("shift", torch.zeros(input_dim))
        self.register_buffer("scale", torch.ones(()))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Residual quantisation: (quantised latent, codes (B, levels), codebook loss, residuals per level)."""
        residual, quantised = z, torch.zeros_like(z)
        codes, residuals, loss = [], [], z.new_zeros(())
        for book in self.codebooks:
            residuals.append(residual)
            code = torch.cdist(residual.detach(), book.detach()).argmin(1)
            chosen = book[code]
            loss = loss + ((residual.detach() - chosen) ** 2).sum(-1).mean()
            loss = loss + self.cfg.commitment * ((residual - chosen.detach()) ** 2).sum(-1).mean()
            quantised = quantised + chosen
            residual = residual - chosen.detach()
            codes.append(code)
        return quantised, torch.stack(codes, 1), loss, residuals

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        x = self.standardise(x)
        z = self.encoder(x)
        quantised, codes, rq_loss, residuals = self.quantise(z)
        z_st = z + (quantised - z).detach()  # straight-through: decoder gradients reach the encoder
        recon = ((self.decoder(z_st) - x) ** 2).sum(-1).mean()
        return recon + rq_loss, codes, {"recon": recon.detach(), "rq": rq_loss.detach(), "residuals": residuals}

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, generator: torch.Generator) -> None:
        """k-means on the first batch, level by level (each level sees the residual of the previous)."""
        residual = self.encoder(self.standardise(x))
        for book in self.codebooks:
            book.data.copy_(kmeans(residual, book.shape[0], self.cfg.kmeans_iters, generator))
            residual = residual - book[torch.cdist(residual, book).argmin(1)]
        self.initialised.fill_(True)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        return torch.cat(
            [self.quantise(self.encoder(self.standardise(x[i : i + batch_size])))[1] for i in range(0, len(x), batch_size)]
        )


# --- semantic IDs -------------------------------------------------------------------------------


@dataclass
class SemanticIDStats:
    items: int
    codes_used: list[int]  # distinct codes per RQ level
    codebook_size: int
    perplexity: list[float]  # exp(entropy) of the code distribution per level
    unique_prefixes: int  # distinct 3-code tuples
    collision_rate: float  # fraction of items sharing their RQ tuple with another item
    max_collisions: int  # largest group of items on one RQ tuple (= size of the 4th token's range)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"items {self.items}, {len(self.codes_used)} RQ levels x {self.codebook_size} codes"]
        for level, (used, ppl) in enumerate(zip(self.codes_used, self.perplexity), 1):
            out.append(f"level {level}: {used}/{self.codebook_size} codes used ({used / self.codebook_size:.0%}), perplexity {ppl:.1f}")
        out.append(
            f"collisions: {self.collision_rate:.2%} of items share their RQ tuple "
            f"({self.unique_prefixes} distinct tuples; largest group {self.max_collisions}, so the 4th token has {self.max_collisions} values)"
        )
        out += [f"warning: {w}" for w in self.warnings]
        return out


@dataclass
class SemanticIDs:
    """item id -> code tuple (RQ levels + disambiguation token)."""

    item_ids: list[int]
    codes: np.ndarray  # (N, levels + 1) int64
    level_sizes: list[int]  # vocabulary size of each position (last one = max collisions)
    stats: SemanticIDStats | None = None
    key: str = ""

    def __post_init__(self):
        self.codes = np.asarray(self.codes, dtype=np.int64)
        self._row = {int(i): r for r, i in enumerate(self.item_ids)}
        self._by_tuple = {tuple(int(c) for c in row): int(i) for i, row in zip(self.item_ids, self.codes)}
        if len(self._by_tuple) != len(self.item_ids):
            raise LeantuneError("semantic IDs are not unique per item")

    @property
    def depth(self) -> int:
        return self.codes.shape[1]

    def tuple_of(self, item: int) -> tuple[int, ...]:
        return tuple(int(c) for c in self.codes[self._row[int(item)]])

    def item_of(self, codes) -> int | None:
        return self._by_tuple.get(tuple(int(c) for c in codes))

    def __contains__(self, item: int) -> bool:
        return int(item) in self._row

    def save(self, path: str | Path) -> None:
        write_json(
            path,
            {
                "key": self.key,
                "level_sizes": self.level_sizes,
                "stats": asdict(self.stats) if self.stats else None,
                "items": {str(i): [int(c) for c in row] for i, row in zip(self.item_ids, self.codes)},
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> "SemanticIDs":
        obj = read_json(path)
        try:
            items = obj["items"]
            ids = [int(k) for k in items]
            codes = np.array([items[k] for k in items], dtype=np.int64)
            stats = SemanticIDStats(**obj["stats"]) if obj.get("stats") else None
            sizes = [int(s) for s in obj["level_sizes"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(path, f"not a semantic-IDs file ({exc!r})") from None
        if codes.ndim != 2 or codes.shape[1] != len(sizes) or (codes < 0).any() or (codes >= np.array(sizes)).any():
            raise DataError(path, "codes do not match level_sizes")
        return cls(ids, codes, sizes, stats, obj.get("key", ""))


def assign_collision_tokens(rq_codes: np.ndarray) -> np.ndarray:
    """Append a 4th token numbering the items that share an RQ tuple (0 for the first, in row order)."""
    seen: dict[tuple, int] = defaultdict(int)
    extra = np.zeros(len(rq_codes), dtype=np.int64)
    for row, codes in enumerate(map(tuple, rq_codes.tolist())):
        extra[row] = seen[codes]
        seen[codes] += 1
    return np.concatenate([rq_codes.astype(np.int64), extra[:, None]], axis=1)


def semantic_id_stats(rq_codes: np.ndarray, codebook_size: int, collapse_fraction: float = 0.25) -> SemanticIDStats:
    n, levels = rq_codes.shape
    used, ppl, warnings = [], [], []
    expected = min(codebook_size, n)
    for level in range(levels):
        counts = np.bincount(rq_codes[:, level], minlength=codebook_size)
        p = counts[counts > 0] / n
        used.append(int((counts > 0).sum()))
        ppl.append(float(math.exp(-(p * np.log(p)).sum())))
        if used[-1] < collapse_fraction * expected:
            warnings.append(
                f"codebook collapse at level {level + 1}: only {used[-1]} of {codebook_size} codes used "
                f"(threshold {collapse_fraction:.0%} of {expected})"
            )
    groups = defaultdict(int)
    for t in map(tuple, rq_codes.tolist()):
        groups[t] += 1
    colliding = sum(c for c in groups.values() if c > 1)
    rate = colliding / n
    if rate > 0.5:
        warnings.append(f"{rate:.0%} of items collide on all RQ codes: the 4th token carries most of the identity")
    return SemanticIDStats(n, used, codebook_size, ppl, len(groups), rate, max(groups.values()), warnings)
