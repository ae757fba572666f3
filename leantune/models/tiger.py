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

import hashlib
import json
import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.batching import length_batches
from ..errors import LeantuneError
from ..metrics import ranking_metrics
from ..io import atomic_path, read_json, write_json
from .checkpoint import checkpoint_state, load_training_state, save_training_state
from .rqvae import SemanticIDs

PAD, EOS = 0, 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"
SUMMARY_FILE = "train.json"


def default_dir(data_name: str) -> Path:
    """Where the CLI keeps a dataset's semantic IDs and TIGER runs."""
    return Path("runs") / f"tiger-{data_name}"


def stored_semantic_ids(folder: Path) -> Path | None:
    """The semantic-IDs file that ``folder`` names or holds, or None when it holds none."""
    from .rqvae import IDS_FILE

    if folder.is_file():
        return folder
    return folder / IDS_FILE if (folder / IDS_FILE).exists() else None


def semantic_ids_for(dataset, folder: str | Path | None = None, seed: int = 0, progress: bool = True):
    """The dataset's semantic IDs: read from ``folder`` (default ``runs/tiger-<data>/``, the folder
    ``leantune tiger`` uses) or, when it holds none, built there. Returns ``(ids, folder, built)``."""
    from .rqvae import SemanticIDs, build_semantic_ids

    folder = Path(folder) if folder is not None else default_dir(dataset.name)
    stored = stored_semantic_ids(folder)
    if stored is not None:
        return SemanticIDs.load(stored), folder, False
    return build_semantic_ids(dataset, folder, seed=seed, progress=progress), folder, True


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
        raise LeantuneError(f"--preset {preset!r}: choose one of {', '.join(PRESETS)}")
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


def mean_loss(model, encoder: TigerEncoder, samples, batch_size: int = 256) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            total += float(model(**encoder.batch(chunk, device=model.device)).loss) * len(chunk)
    return total / len(samples)


# --- training -----------------------------------------------------------------------------------


@dataclass
class TigerRun:
    out_dir: str
    n_samples: int
    epochs: int
    steps: int
    best_epoch: int
    best_val: float
    val_metric: str
    wall_s: float
    stopped: str  # "early-stopping" | "max-epochs" | "max-steps"
    history: list[dict] = field(default_factory=list)
    key: str = ""


def select_train_samples(dataset, sample_ids: Sequence[int] | None):
    """The training samples with these ``sample_id``s (the user's line index, as ``leantune prune``
    writes them), in the given order; all of them when ``sample_ids`` is None. A user without
    training items has no training sample, so ids are looked up, not used as list positions."""
    samples = dataset.train_samples
    if sample_ids is None:
        return list(samples)
    ids = [int(i) for i in sample_ids]
    if not ids:
        raise LeantuneError("no training samples selected")
    by_id = {s.sample_id: s for s in samples}
    bad = [i for i in ids if i not in by_id]
    if bad:
        users = len(dataset.users)
        if 0 <= bad[0] < users:
            raise LeantuneError(f"sample id {bad[0]} is not a training sample of {dataset.name}: "
                                f"user {dataset.users[bad[0]]} has no training items")
        raise LeantuneError(f"sample id {bad[0]} out of range: {dataset.name} has sample ids 0..{users - 1}")
    if len(set(ids)) != len(ids):
        raise LeantuneError("sample ids contain duplicates")
    return [by_id[i] for i in ids]


def validation_samples(dataset, n: int, seed: int):
    samples = dataset.valid_samples
    if not samples:
        raise LeantuneError(f"{dataset.name}: no validation samples for early stopping")
    if n and n < len(samples):
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.choice(len(samples), n, replace=False))]
    return list(samples)


def run_key(dataset, sids: SemanticIDs, samples, cfg: TigerConfig, seed: int) -> str:
    """Identity of a training run. The epoch cap is not part of it: a run stopped by its cap can be
    extended by training again with a higher one (see :func:`train_tiger`)."""
    settings = {k: v for k, v in asdict(cfg).items() if k != "max_epochs"}
    blob = json.dumps(
        {"data": [dataset.name, len(dataset.train_samples)], "sids": sids.key, "cfg": settings, "seed": seed,
         "samples": hashlib.sha256(",".join(str(s.sample_id) for s in samples).encode()).hexdigest()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def train_tiger(
    dataset,
    semantic_ids: SemanticIDs,
    sample_ids: Sequence[int] | None,
    out_dir: str | Path,
    cfg: TigerConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str = "cpu",
) -> TigerRun:
    """Train TIGER on the given training samples (all when ``sample_ids`` is None).

    Early stopping on a seeded validation subset (Recall@10 by constrained beam search, or loss);
    the best weights go to ``model.safetensors``. A finished folder with the same inputs is reused;
    an interrupted one resumes from ``train_state.safetensors`` at the last finished epoch. A run
    that stopped at its epoch cap keeps that state, so training it again with a higher
    ``max_epochs`` continues where it stopped (the same weights as a run started with the higher cap:
    batches and the learning-rate schedule do not depend on the cap; the old cap's final validation
    stays in the history). A cap below the epochs a finished run already trained retrains it.
    """
    from tqdm.auto import tqdm

    cfg = cfg or TigerConfig()
    if cfg.val_metric not in ("loss", "recall@10"):
        raise LeantuneError(f"val_metric {cfg.val_metric!r}: choose 'recall@10' or 'loss'")
    out_dir = Path(out_dir)
    samples = select_train_samples(dataset, sample_ids)
    encoder = TigerEncoder(semantic_ids, cfg)
    encoder.check_items(samples)
    key = run_key(dataset, semantic_ids, samples, cfg, seed)
    summary_path, state_path = out_dir / SUMMARY_FILE, out_dir / STATE_FILE
    steps_per_epoch = math.ceil(len(samples) / cfg.batch_size)
    max_epochs = max(cfg.max_epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    if summary_path.exists() and (out_dir / MODEL_FILE).exists():
        done = read_json(summary_path)
        if done.get("key") == key and done.get("status") == "done":
            finished = TigerRun(**done["run"])
            capped = finished.stopped == "max-epochs"
            if finished.epochs == max_epochs or (not capped and finished.epochs < max_epochs):
                return finished  # what training with this cap gives
            if not (capped and finished.epochs < max_epochs and state_path.exists()):
                state_path.unlink(missing_ok=True)  # the cap is below what ran: train again from the start
            summary_path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "tiger_config.json", {"config": asdict(cfg), "level_sizes": semantic_ids.level_sizes, "ids_key": semantic_ids.key, "seed": seed, "key": key})

    val = validation_samples(dataset, cfg.val_users, seed)
    torch.manual_seed(seed)
    model = build_model(encoder.vocab, cfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lengths = np.array([min(len(s.history), cfg.max_history) for s in samples])
    state = {"epoch": 0, "step": 0, "best": None, "best_epoch": 0, "bad": 0, "last_eval_step": 0, "history": [], "wall_s": 0.0, "key": key}
    if state_path.exists() and (checkpoint_state(state_path) or {}).get("key") == key:
        state = load_training_state(state_path, model, optimizer)
    # Linear warm-up, then inverse-square-root decay; last_epoch restores the position on resume.
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / cfg.warmup_steps, math.sqrt(cfg.warmup_steps / max(s + 1, cfg.warmup_steps))),
        last_epoch=state["step"] - 1,
    )
    higher_better = cfg.val_metric != "loss"

    def stop_reason() -> str | None:
        if state["bad"] >= cfg.patience:
            return "early-stopping"
        if cfg.max_steps and state["step"] >= cfg.max_steps:
            return "max-steps"
        return "max-epochs" if state["epoch"] >= max_epochs else None

    bar = tqdm(total=max_epochs * steps_per_epoch, initial=state["step"], desc=f"tiger ({len(samples)} samples)", disable=not progress)
    while stop_reason() is None:
        t0 = time.perf_counter()
        model.train()
        rng = np.random.default_rng([seed, state["epoch"]])
        epoch_loss = 0.0
        for idx in length_batches(lengths, cfg.batch_size, rng):
            loss = model(**encoder.batch([samples[i] for i in idx], device=device)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            state["step"] += 1
            epoch_loss += float(loss.detach()) * len(idx)
            bar.update(1)
            bar.set_postfix(epoch=state["epoch"] + 1, loss=f"{float(loss.detach()):.3f}")
            if cfg.max_steps and state["step"] >= cfg.max_steps:
                break
        state["epoch"] += 1
        row = {"epoch": state["epoch"], "step": state["step"], "train_loss": epoch_loss / len(samples)}
        last = state["epoch"] >= max_epochs or bool(cfg.max_steps and state["step"] >= cfg.max_steps)
        if state["step"] - state["last_eval_step"] >= cfg.eval_every_steps or last:
            state["last_eval_step"] = state["step"]
            value = _validate(model, encoder, val, cfg)
            row["val_" + cfg.val_metric] = value
            improved = state["best"] is None or (value > state["best"] if higher_better else value < state["best"])
            if improved:
                state.update(best=value, best_epoch=state["epoch"], bad=0)
                _save_weights(model, out_dir / MODEL_FILE, key)
            else:
                state["bad"] += 1
        state["wall_s"] += time.perf_counter() - t0
        row["wall_s"] = round(state["wall_s"], 2)
        state["history"].append(row)
        if progress:
            bar.write(_row_text(row))
        save_training_state(state_path, model, optimizer, state)
    bar.close()
    run = TigerRun(
        str(out_dir), len(samples), state["epoch"], state["step"], state["best_epoch"], float(state["best"]),
        cfg.val_metric, round(state["wall_s"], 2), stop_reason(), state["history"], key,
    )
    write_json(summary_path, {"status": "done", "key": key, "run": asdict(run)})
    if run.stopped != "max-epochs":  # kept otherwise: a higher cap continues from it
        state_path.unlink(missing_ok=True)
    return run


def _validate(model, encoder: TigerEncoder, val, cfg: TigerConfig) -> float:
    if cfg.val_metric == "loss":
        return mean_loss(model, encoder, val)
    ranked = recommend(model, encoder, val, 10, beam_size=cfg.beam_size, batch_size=cfg.eval_batch_size)
    return ranking_metrics(ranked, [s.targets for s in val], ks=(10,))["recall@10"]


def _row_text(row: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def _save_weights(model, path: Path, key: str) -> None:
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
        raise LeantuneError(f"{model_dir}: trained on other semantic IDs (key {meta.get('ids_key')}, not {semantic_ids.key}); pass the --ids it was trained with")
    if not (model_dir / MODEL_FILE).exists():
        raise LeantuneError(f"{model_dir / MODEL_FILE}: no trained weights (run `leantune tiger train` first)")
    encoder = TigerEncoder(semantic_ids, cfg)
    model = build_model(encoder.vocab, cfg)
    load_model(model, str(model_dir / MODEL_FILE))
    return model.to(device).eval(), encoder
