"""Ground generated text to catalogue items, as the BIGRec/DEALRec evaluation does.

Facts taken from the reference evaluation (DEALRec ``code/finetune/data/evaluate.py``):

* the embedding of a text is the last-layer hidden state of its last token (``hidden_states[-1][:, -1]``,
  i.e. after the final norm) under the *base* model, without the LoRA adapter;
* texts are tokenised with the tokenizer's default special tokens (LLaMA adds BOS there; SmolLM2's
  tokenizer adds nothing), no EOS, no quotes; item titles are used as they are, generated texts have
  surrounding double quotes stripped;
* items are ranked by L2 distance (``torch.cdist``) between the generated text's and every item
  title's embedding, all items, nothing excluded.

One deliberate difference: the reference left-pads batches without adjusting position ids, so an
embedding depends slightly on what else is in its batch. Here position ids follow the attention
mask, so a text gets the same vector whatever it is batched with (and cached vectors are reusable).

Item embeddings are computed once per (model weights, item titles) and cached as safetensors under
``$LEANTUNE_HOME/llm-item-embeddings/<key>.safetensors``; the key hashes the model's weight file,
the titles and this recipe's version, so changed weights or items never reuse stale vectors.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ..data.batching import token_budget_batches
from ..io import atomic_path, read_json, write_json
from ..paths import cache_dir

RECIPE_VERSION = "last-token-l2-v1"


def clean_prediction(text: str) -> str:
    return text.strip().strip('"').strip()


def base_model_of(model):
    """The model without a LoRA adapter active: a context manager usable with any model."""
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def inner_model(model):
    """The transformers model inside a peft wrapper (the model itself when it is not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _decoder(model):
    inner = inner_model(model)
    return inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model


def text_embeddings(model, tokenizer, texts: Sequence[str], batch_size: int = 512, progress: bool = False,
                    desc: str = "embed", batch_tokens: int = 4096):
    """Last-layer, last-token hidden states of ``texts`` under the base model -> (n, hidden) float32 CPU tensor.

    Texts are sorted by length and batched up to ``batch_size`` texts or ``batch_tokens`` padded
    tokens, whichever comes first: item titles are short (13 tokens on average on Games), and
    batches of a few thousand tokens run about twice as fast on CPU as batches of 64 titles."""
    import torch

    device = next(model.parameters()).device
    # An empty text (a model that generated only special tokens) has no token of its own here,
    # since SmolLM2's tokenizer adds no BOS; it is embedded as the BOS (or EOS) token alone.
    filler = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    token_ids = [ids or [filler] for ids in tokenizer(list(texts))["input_ids"]] if texts else []
    order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
    hidden = model.config.hidden_size if hasattr(model.config, "hidden_size") else None
    out = torch.empty(len(texts), hidden or 0)
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), base_model_of(model), tqdm(total=len(texts), desc=desc, unit="text", disable=not progress) as bar:
            decoder = _decoder(model)
            for idx in token_budget_batches(order, [len(ids) for ids in token_ids], batch_size, batch_tokens):
                enc = tokenizer.pad({"input_ids": [token_ids[i] for i in idx]}, return_tensors="pt", padding=True).to(device)
                mask = enc["attention_mask"]
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                states = decoder(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions).last_hidden_state
                vectors = states[:, -1, :].float().cpu()
                if out.shape[1] != vectors.shape[1]:
                    out = torch.empty(len(texts), vectors.shape[1])
                out[torch.as_tensor(idx)] = vectors
                bar.update(len(idx))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return out


def rank_items(query_vectors, item_vectors, item_ids, k: int = 50, chunk: int = 256):
    """Item ids ordered by L2 distance to each query, nearest first -> (n_queries, k) numpy array."""
    import torch

    item_ids = torch.as_tensor(item_ids)
    k = min(k, len(item_ids))
    tops = []
    for start in range(0, len(query_vectors), chunk):
        dist = torch.cdist(query_vectors[start : start + chunk].float(), item_vectors.float(), p=2)
        tops.append(item_ids[torch.topk(dist, k, dim=1, largest=False).indices])
    return torch.cat(tops).numpy() if tops else item_ids[:0].reshape(0, k).numpy()


def weights_fingerprint(folder: str | os.PathLike) -> str:
    """Content hash of a model folder's weights and config; memoised per (path, size, mtime)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix == ".safetensors" or p.name == "config.json")
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    memo_path = cache_dir("llm-item-embeddings") / "fingerprints.json"
    memo = read_json(memo_path) if memo_path.exists() else {}
    entry = memo.get(str(folder.resolve()))
    if entry and entry["stamp"] == stamp:
        return entry["sha"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    sha = digest.hexdigest()[:20]
    memo[str(folder.resolve())] = {"stamp": stamp, "sha": sha}
    write_json(memo_path, memo)
    return sha


def model_folder(model) -> Path:
    return Path(inner_model(model).config._name_or_path)


def item_embeddings(model, tokenizer, dataset, batch_size: int = 512, progress: bool = True, use_cache: bool = True):
    """(item_ids, vectors) for every item of ``dataset`` under the base model, cached by content."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    ids = sorted(dataset.items)
    titles = [dataset.title(i) for i in ids]
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    key_src = json.dumps([RECIPE_VERSION, weights_fingerprint(model_folder(model)), dtype, ids, titles])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    path = cache_dir("llm-item-embeddings") / f"{key}.safetensors"
    if use_cache and path.exists():
        tensors = load_file(str(path))
        return tensors["item_ids"].numpy(), tensors["vectors"]
    vectors = text_embeddings(model, tokenizer, titles, batch_size=batch_size, progress=progress, desc="item embeddings")
    item_ids = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    if use_cache:
        with atomic_path(path) as tmp:
            save_file({"item_ids": item_ids, "vectors": vectors.contiguous()}, str(tmp))
    return item_ids.numpy(), vectors
