"""TIGER: generative retrieval over semantic IDs with a small T5 trained from scratch.

The encoder reads a hashed user token followed by the code tokens of the user's most recent
items (oldest first) and an end-of-sequence token; the decoder generates the next item's code
tuple, one token per level. Each level has its own token range, so code 5 at level 1 and code 5
at level 2 are different tokens:

    0 pad / decoder start · 1 eos · level 1 codes · level 2 codes · ... · user buckets

Generation is constrained beam search over a prefix trie of the real items' token tuples (as
``prefix_allowed_tokens_fn``, or the same trie as a vectorised logits processor, the default), so
every finished beam is a real item and the beams are distinct items. Training takes an explicit
list of training-sample ids (a pruned subset or all).
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import LeantuneError, ParameterError
from ..io import atomic_path, read_json
from .rqvae import SemanticIDs

PAD, EOS = 0, 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
SUMMARY_FILE = "train.json"


def default_dir(data_name: str) -> Path:
    """Where the CLI keeps a dataset's semantic IDs and TIGER runs."""
    return Path("runs") / f"tiger-{data_name}"


def read_semantic_ids(dataset_name: str, folder: str | Path | None = None):
    """``(ids, folder)``: the semantic IDs stored in ``folder`` (default ``runs/tiger-<data>/``), or
    ``(None, folder)`` when it holds none (``leantune.train.rqvae.semantic_ids_for`` then builds them)."""
    from .rqvae import SemanticIDs

    folder = Path(folder) if folder is not None else default_dir(dataset_name)
    stored = stored_semantic_ids(folder)
    return (SemanticIDs.load(stored) if stored is not None else None), folder


def stored_semantic_ids(folder: Path) -> Path | None:
    """The semantic-IDs file that ``folder`` names or holds, or None when it holds none."""
    from .rqvae import IDS_FILE

    if folder.is_file():
        return folder
    return folder / IDS_FILE if (folder / IDS_FILE).exists() else None


@dataclass
class TigerConfig:
    # model (TIGER paper sizes: 4+4 layers, d_model 128, 6 heads of 64, FFN 1024, dropout 0.1)
    d_model: int = 128
    num_layers: int = 4
    num_decoder_layers: int = 4
    num_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.1
    user_buckets: int = 2000
    max_history: int = 20  # most recent items the encoder reads
    # training
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 200  # then inverse-square-root decay, as in TIGER
    max_epochs: int = 20
    min_steps: int = 0  # small subsets: repeat epochs until at least this many steps have run
    max_steps: int = 0  # 0 = no cap
    eval_every_steps: int = 400  # validate at the end of the first epoch after this many steps
    patience: int = 3  # validations without improvement before stopping
    # Loss is the default: Recall@10 of a weak model on a validation subset is mostly zeros and
    # noise (a few hits in 1,000 users), which stops training at random.
    val_metric: str = "loss"  # or "recall@10" (constrained beam search)
    val_users: int = 2000  # seeded subset of validation users (0 = all)
    # generation
    beam_size: int = 20
    eval_batch_size: int = 64


# Model sizes by name. "paper" is TIGER's; "small" is ~20x cheaper per token, for CPU-only runs.
PRESETS = {
    "paper": {},
    "small": {"d_model": 64, "num_layers": 2, "num_decoder_layers": 2, "num_heads": 4, "d_kv": 16, "d_ff": 256},
}


def tiger_config(preset: str = "paper", **overrides) -> TigerConfig:
    if preset not in PRESETS:
        raise ParameterError("preset", repr(preset), f"choose one of {', '.join(PRESETS)}")
    return TigerConfig(**{**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}})


class TigerVocab:
    """Token ids of codes and users; see the module docstring for the layout."""

    def __init__(self, level_sizes: Sequence[int], user_buckets: int):
        self.level_sizes = [int(s) for s in level_sizes]
        self.offsets = [2 + sum(self.level_sizes[:i]) for i in range(len(self.level_sizes))]
        self.user_offset = 2 + sum(self.level_sizes)
        self.user_buckets = user_buckets
        self.size = self.user_offset + user_buckets

    @property
    def depth(self) -> int:
        return len(self.level_sizes)

    def code_tokens(self, codes: Sequence[int]) -> list[int]:
        return [o + int(c) for o, c in zip(self.offsets, codes)]

    def tokens_to_codes(self, tokens: Sequence[int]) -> list[int] | None:
        codes = []
        for level, tok in enumerate(tokens):
            c = int(tok) - self.offsets[level]
            if not 0 <= c < self.level_sizes[level]:
                return None
            codes.append(c)
        return codes

    def user_token(self, user: int) -> int:
        # crc32, not hash(): Python salts str hashes per process, and the bucket must be stable.
        return self.user_offset + zlib.crc32(str(user).encode()) % self.user_buckets


class TigerEncoder:
    """Turns samples into token tensors: history -> encoder input, target -> labels."""

    def __init__(self, sids: SemanticIDs, cfg: TigerConfig):
        self.sids, self.cfg = sids, cfg
        self.vocab = TigerVocab(sids.level_sizes, cfg.user_buckets)
        self.item_tokens = {i: self.vocab.code_tokens(sids.tuple_of(i)) for i in sids.item_ids}

    def input_ids(self, user: int, history: Sequence[int]) -> list[int]:
        toks = [self.vocab.user_token(user)]
        for item in history[-self.cfg.max_history :]:
            toks += self.item_tokens[item]
        return toks + [EOS]

    def batch(self, samples, with_labels: bool = True, device=None) -> dict[str, torch.Tensor]:
        seqs = [self.input_ids(s.user, s.history) for s in samples]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq)
        out = {"input_ids": ids, "attention_mask": (ids != PAD).long()}
        if with_labels:
            out["labels"] = torch.tensor([self.item_tokens[s.targets[0]] for s in samples], dtype=torch.long)
        return {k: v.to(device) for k, v in out.items()} if device is not None else out

    def check_items(self, samples) -> None:
        for s in samples:
            for item in (*s.history, *s.targets):
                if item not in self.item_tokens:
                    raise LeantuneError(f"item {item} (user {s.user}) has no semantic ID: rebuild them for this dataset")


class FastDropout(torch.nn.Module):
    """Inverted dropout with a ``rand`` mask: on CPU, ``nn.Dropout``'s ``bernoulli_`` took over a
    quarter of a training step of the small T5; the result has the same distribution."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * (torch.rand_like(x) >= self.p) / (1.0 - self.p)


def build_model(vocab: TigerVocab, cfg: TigerConfig):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=vocab.size,
        d_model=cfg.d_model,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        num_layers=cfg.num_layers,
        num_decoder_layers=cfg.num_decoder_layers,
        num_heads=cfg.num_heads,
        dropout_rate=cfg.dropout,
        feed_forward_proj="relu",
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
    )
    model = T5ForConditionalGeneration(config)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, torch.nn.Dropout):
                setattr(parent, name, FastDropout(child.p))
    return model


# --- constrained generation ---------------------------------------------------------------------


def build_trie(encoder: TigerEncoder) -> dict[tuple[int, ...], list[int]]:
    """Prefix (generated tokens so far) -> allowed next tokens, over the real items only."""
    children: dict[tuple[int, ...], set[int]] = {}
    for toks in encoder.item_tokens.values():
        for level in range(len(toks)):
            children.setdefault(tuple(toks[:level]), set()).add(toks[level])
    return {prefix: sorted(next_tokens) for prefix, next_tokens in children.items()}


def prefix_fn(trie: dict[tuple[int, ...], list[int]]):
    # A beam can only leave the trie when fewer real items than beams remain; it then gets PAD,
    # which maps to no item and is dropped when decoding.
    dead_end = [PAD]

    def allowed(batch_id: int, sent: torch.Tensor) -> list[int]:
        return trie.get(tuple(sent[1:].tolist()), dead_end)  # sent[0] is the decoder start token

    return allowed


class TrieConstraint:
    """The prefix trie as a vectorised logits processor: the same allowed tokens as ``prefix_fn``.

    ``prefix_allowed_tokens_fn`` calls Python once per beam and step (1.4M calls for Games' test
    users with 20 beams); here every level keeps its valid prefixes as sorted integer keys and a
    (prefixes x level size) table of allowed codes, so one ``searchsorted`` masks all beams.
    """

    def __init__(self, encoder: TigerEncoder, device=None):
        vocab, codes = encoder.vocab, encoder.sids.codes
        sizes = np.array(vocab.level_sizes, dtype=np.int64)
        strides = np.array([int(np.prod(sizes[j + 1 :])) for j in range(len(sizes))], dtype=np.int64)
        self.offsets = torch.tensor(vocab.offsets, device=device)
        self.sizes = torch.tensor(sizes, device=device)
        self.strides = torch.tensor(strides, device=device)
        self.keys, self.allowed = [], []
        for level in range(vocab.depth):
            keys = (codes[:, :level] * strides[:level]).sum(1)
            uniq, row = np.unique(keys, return_inverse=True)
            table = np.zeros((len(uniq), sizes[level]), dtype=bool)
            table[row, codes[:, level]] = True
            self.keys.append(torch.as_tensor(uniq, device=device))
            self.allowed.append(torch.as_tensor(table, device=device))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        level = input_ids.shape[1] - 1  # input_ids[:, 0] is the decoder start token
        codes = input_ids[:, 1:] - self.offsets[:level]
        in_range = ((codes >= 0) & (codes < self.sizes[:level])).all(1)
        key = (codes.clamp(min=0) * self.strides[:level]).sum(1)
        keys = self.keys[level]
        row = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
        found = in_range & (keys[row] == key)
        allowed = self.allowed[level][row] & found[:, None]
        start = int(self.offsets[level])
        out = torch.full_like(scores, -math.inf)
        block = scores[:, start : start + allowed.shape[1]]
        out[:, start : start + allowed.shape[1]] = torch.where(allowed, block, torch.full_like(block, -math.inf))
        out[~found, PAD] = scores[~found, PAD]  # a beam off the trie may only pad, as in prefix_fn
        return out


@torch.no_grad()
def recommend(
    model,
    encoder: TigerEncoder,
    samples,
    k: int,
    trie=None,
    beam_size: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
    vectorised: bool = True,
) -> list[list[int]]:
    """Top-``k`` distinct real items per sample, best first, by constrained beam search.

    ``vectorised`` masks with :class:`TrieConstraint`; otherwise the trie goes to ``generate`` as
    ``prefix_allowed_tokens_fn`` (same beams, slower).
    """
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList

    beam = max(k, beam_size or k)
    if vectorised:
        constraint = {"logits_processor": LogitsProcessorList([TrieConstraint(encoder, model.device)])}
    else:
        constraint = {"prefix_allowed_tokens_fn": prefix_fn(trie if trie is not None else build_trie(encoder))}
    model.eval()
    out: list[list[int]] = []
    for start in tqdm(range(0, len(samples), batch_size), desc="generate", disable=not progress):
        chunk = samples[start : start + batch_size]
        batch = encoder.batch(chunk, with_labels=False, device=model.device)
        gen = model.generate(
            **batch,
            num_beams=beam,
            num_return_sequences=beam,
            max_new_tokens=encoder.vocab.depth,
            min_new_tokens=encoder.vocab.depth,
            **constraint,
            do_sample=False,
            length_penalty=0.0,
            early_stopping=True,
        )
        gen = gen[:, 1:].view(len(chunk), beam, -1).tolist()
        for beams in gen:
            ranked: list[int] = []
            for toks in beams:
                codes = encoder.vocab.tokens_to_codes(toks)
                item = encoder.sids.item_of(codes) if codes is not None else None
                if item is not None and item not in ranked:
                    ranked.append(item)
            out.append(ranked[:k])
    return out


def save_weights(model, path: Path, key: str) -> None:
    """Write TIGER weights (``model.safetensors``, atomically) tagged with the run ``key``; ``load_tiger`` reads them."""
    from safetensors.torch import save_model

    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata={"key": key})


def load_tiger(model_dir: str | Path, semantic_ids: SemanticIDs, device: str = "cpu"):
    """The best weights of a ``train_tiger`` folder, with its encoder."""
    from safetensors.torch import load_model

    model_dir = Path(model_dir)
    meta = read_json(model_dir / "tiger_config.json")
    cfg = TigerConfig(**meta["config"])
    if meta.get("ids_key") != semantic_ids.key or list(meta["level_sizes"]) != list(semantic_ids.level_sizes):
        raise LeantuneError(f"{model_dir}: trained on other semantic IDs (key {meta.get('ids_key')}, not {semantic_ids.key}); pass the semantic IDs it was trained with")
    if not (model_dir / MODEL_FILE).exists():
        raise LeantuneError(f"{model_dir / MODEL_FILE}: no trained weights (run `leantune tiger train` first)")
    encoder = TigerEncoder(semantic_ids, cfg)
    model = build_model(encoder.vocab, cfg)
    load_model(model, str(model_dir / MODEL_FILE))
    return model.to(device).eval(), encoder
