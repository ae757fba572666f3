"""SASRec, the surrogate next-item model that DEALRec scores samples with.

Reference settings (DEALRec's ``code/prune``): hidden 64, 2 blocks, 2 heads, dropout 0.5, max
length 50, post-LayerNorm blocks with a ReLU feed-forward of width ``hidden``, N(0, 0.02) init,
Adam lr 1e-3, batch 500. Two departures, both for speed or soundness:

* the loss is the all-positions next-item cross-entropy over the full item set (standard for
  SASRec today, and the same loss the influence scorer differentiates), not BCE with one negative;
* a position whose causal context is all padding attends to itself, so the representation of an
  empty history is well defined (no all-masked softmax) and does not depend on how much padding a
  batch carries. With ``train_empty_prefix`` the model also learns that representation: each user's
  first training item is predicted from the empty prefix, so the 7% of Games training samples with
  an empty history get a meaningful loss rather than one from an untrained vector.

Sequences are left-padded with 0; the last column is the most recent item and always sits at
position ``max_len - 1``. Batches are trimmed to their longest sequence (mean Games history is 6 of
50) and bucketed by length, which with the rand-mask dropout makes an epoch ~10x cheaper.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import SequenceDataset
from ..data.batching import length_batches  # noqa: F401  (also re-exported: leantune.models.sasrec.length_batches)
from ..errors import LeantuneError, ParameterError
from ..metrics import DEFAULT_KS, ranking_metrics
from ..io import atomic_path, read_json, write_json

MODEL_FILE = "model.safetensors"
META_FILE = "surrogate.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
VALID_METRIC = "ndcg@10"


@dataclass
class SASRecConfig:
    hidden: int = 64
    blocks: int = 2
    heads: int = 2
    dropout: float = 0.5
    max_len: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 500
    max_epochs: int = 200
    patience: int = 5  # validations without a better NDCG@10 before stopping; 0 = never stop early
    eval_every: int = 1  # epochs between validations
    train_empty_prefix: bool = True  # also predict each user's first item from the empty history
    restore_best: bool = True  # keep the best validation epoch (False: the last epoch, e.g. early-training models)
    init_std: float = 0.02

    def __post_init__(self):
        # Checked before any work; the CLI prints each parameter as its flag where it has one.
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ParameterError("lr", self.lr, "must be a positive number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise LeantuneError(f"SASRec weight_decay {self.weight_decay}: must be a finite number >= 0")
        if not 0 <= self.dropout < 1:
            raise ParameterError("dropout", self.dropout, "must be in [0, 1)")
        for name, least in (("hidden", 1), ("max_len", 1), ("batch_size", 1), ("max_epochs", 0), ("patience", 0),
                            ("blocks", 1), ("heads", 1), ("eval_every", 1)):
            if getattr(self, name) < least:
                raise ParameterError(name, getattr(self, name), f"must be at least {least}")
        if self.hidden % self.heads:
            raise ParameterError("hidden", self.hidden, f"must be a multiple of the {self.heads} attention heads")

    @classmethod
    def from_dict(cls, data: dict) -> "SASRecConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------------------------------------
# The network


class RandDropout(nn.Module):
    """Dropout from a ``rand`` mask: nn.Dropout's ``bernoulli_`` took 59% of a CPU step here."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, dtype=x.dtype) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        if hidden % heads:
            raise LeantuneError(f"SASRec hidden size {hidden} is not a multiple of heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_drop = RandDropout(dropout)
        self.out = nn.Linear(hidden, hidden)
        self.out_drop = RandDropout(dropout)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ff1 = nn.Linear(hidden, hidden)
        self.ff2 = nn.Linear(hidden, hidden)
        self.ff_drop = RandDropout(dropout)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(h // self.heads)) + mask
        att = self.attn_drop(att.softmax(-1))
        ctx = (att @ v).transpose(1, 2).reshape(b, t, h)
        x = self.norm1(x + self.out_drop(self.out(ctx)))
        ff = self.ff_drop(F.relu(self.ff2(F.relu(self.ff1(x)))))
        return self.norm2(x + ff)


class SASRec(nn.Module):
    """Self-attentive sequential recommender with tied input/output item embeddings."""

    def __init__(self, num_items: int, cfg: SASRecConfig | None = None):
        super().__init__()
        cfg = cfg or SASRecConfig()
        self.cfg = cfg
        self.num_items = num_items
        self.item_emb = nn.Embedding(num_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.emb_norm = nn.LayerNorm(cfg.hidden, eps=1e-12)
        self.emb_drop = RandDropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.hidden, cfg.heads, cfg.dropout) for _ in range(cfg.blocks))
        self.apply(self._init)

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.init_std)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()

    def seed_dropout(self, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        for module in self.modules():
            if isinstance(module, RandDropout):
                module.generator = gen

    def encode(self, seqs: torch.Tensor, item_vecs: torch.Tensor | None = None) -> torch.Tensor:
        """[B, T] right-aligned ids (T <= max_len) -> [B, T, H] hidden states at every position.

        ``item_vecs`` ([B, T, H]) replaces ``item_emb(seqs)``, for gradients with respect to the
        input rows of the (tied) item embedding alone.
        """
        _, t = seqs.shape
        if item_vecs is None:
            item_vecs = self.item_emb(seqs)
        pos = torch.arange(self.cfg.max_len - t, self.cfg.max_len, device=seqs.device)
        x = self.emb_drop(self.emb_norm(item_vecs + self.pos_emb(pos)))
        eye = torch.eye(t, dtype=torch.bool, device=seqs.device)
        allowed = torch.tril(torch.ones(t, t, dtype=torch.bool, device=seqs.device)) & ((seqs > 0)[:, None, :] | eye)
        mask = torch.zeros(allowed.shape, dtype=x.dtype, device=seqs.device).masked_fill(~allowed, -1e9)[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return x

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Representation at the last position: [B, T] left-padded ids -> [B, H]."""
        return self.encode(seqs)[:, -1]

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of items 1..num_items (column j = item j+1), without the padding column."""
        return hidden @ self.item_emb.weight[1:].T

    def logits(self, seqs: torch.Tensor) -> torch.Tensor:
        """[B, num_items + 1] next-item scores; column 0 (padding) is -inf."""
        return F.pad(self.item_logits(self(seqs)), (1, 0), value=-math.inf)


class FullSoftmaxCE(torch.autograd.Function):
    """Mean cross-entropy of ``hidden @ emb.T`` against ``targets`` (0-based), for training.

    Same value and gradients as ``F.cross_entropy(hidden @ emb.T, targets)`` with fewer passes over
    the [N, num_items] logits (the dominant cost of an epoch): the softmax is formed in place and
    no zero-filled gradient buffer is allocated.
    """

    @staticmethod
    def forward(ctx, hidden, emb, targets):
        logits = hidden @ emb.T
        lse = torch.logsumexp(logits, 1)
        loss = (lse - logits.gather(1, targets[:, None]).squeeze(1)).mean()
        ctx.save_for_backward(hidden, emb, targets, logits, lse)
        return loss

    @staticmethod
    def backward(ctx, grad):
        hidden, emb, targets, logits, lse = ctx.saved_tensors
        probs = logits.sub_(lse[:, None]).exp_()  # logits are not needed again
        probs[torch.arange(len(targets)), targets] -= 1
        probs.mul_(grad / len(targets))
        return probs @ emb, probs.T @ hidden, None


def sample_loss(model: SASRec, seqs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy of predicting ``targets`` [B] from left-padded ``seqs`` [B, T].

    The model's train/eval mode is left as it is; scorers call it in eval mode (no dropout).
    """
    return F.cross_entropy(model.item_logits(model(seqs)), targets - 1, reduction="none")


# ---------------------------------------------------------------------------------------------
# Batching


def pad_histories(histories: Sequence[Sequence[int]], max_len: int) -> torch.LongTensor:
    """Left-pad with 0 to ``max_len`` columns, keeping the most recent ``max_len`` items."""
    out = torch.zeros(len(histories), max_len, dtype=torch.long)
    for row, hist in enumerate(histories):
        hist = list(hist)[-max_len:] if max_len else []
        if hist:
            out[row, max_len - len(hist):] = torch.as_tensor(hist, dtype=torch.long)
    return out


def trim_left(seqs: torch.Tensor, keep: int = 1) -> torch.Tensor:
    """Drop the padding columns every row shares (keeping at least ``keep`` columns).

    The result equals the untrimmed batch at every real position, because positions are counted
    from the right and padding keys are masked.
    """
    real = (seqs > 0).any(0).nonzero()
    first = int(real[0]) if len(real) else seqs.shape[1] - 1
    return seqs[:, min(first, seqs.shape[1] - keep):]


@torch.no_grad()
def topk_items(model: SASRec, histories: Sequence[Sequence[int]], k: int, batch_size: int = 1024) -> np.ndarray:
    """Top-``k`` item ids per history (all items ranked, padding excluded), best first."""
    k = min(k, model.num_items)
    was_training = model.training
    model.eval()
    seqs = pad_histories(histories, model.cfg.max_len)
    out = np.zeros((len(histories), k), dtype=np.int64)
    lengths = np.array([min(len(h), model.cfg.max_len) for h in histories])
    for idx in length_batches(lengths, batch_size, None):
        scores = model.item_logits(model(trim_left(seqs[idx])))
        out[idx] = (torch.topk(scores, k, dim=1).indices + 1).numpy()
    model.train(was_training)
    return out


def evaluate(model: SASRec, dataset: SequenceDataset, split: str = "test", ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    histories, targets = dataset.eval_split(split)
    if not targets:
        raise LeantuneError(f"dataset {dataset.name!r} has no {split} targets to evaluate on")
    return ranking_metrics(topk_items(model, histories, max(ks)), targets, ks)


# ---------------------------------------------------------------------------------------------
# The saved folder (``leantune.train.sasrec.train_surrogate`` writes it)


def save_surrogate(model: SASRec, out_dir: str | Path, meta: dict) -> None:
    """Write a finished surrogate: weights (``model.safetensors``) and ``surrogate.json`` (``meta``:
    at least ``status`` "done", ``num_items`` and ``config``), each atomically."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    write_json(out_dir / META_FILE, meta)


def load_surrogate(out_dir: str | Path) -> SASRec:
    """Load a finished surrogate (eval mode) from a ``save_surrogate`` / ``train_surrogate`` folder."""
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    meta = read_json(out_dir / META_FILE)
    if meta.get("status") != "done" or not (out_dir / MODEL_FILE).exists():
        raise LeantuneError(f"{out_dir}: surrogate training has not finished; re-run it to resume")
    model = SASRec(int(meta["num_items"]), SASRecConfig.from_dict(meta["config"]))
    model.load_state_dict(load_file(str(out_dir / MODEL_FILE)))
    return model.eval()


