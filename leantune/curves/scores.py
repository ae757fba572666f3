"""Score columns for selection methods in a learning curve, for any task.

A task may supply its own columns (``task.selection_scores(columns, seed=, work_dir=, model=, device=)``).
Otherwise the curve computes what needs no task-specific surrogate, from the task's training texts:

* ``embedding``: the base LLM's mean-pooled last hidden state over each training prompt (k-center,
  cluster);
* ``effort``: DEALRec's effort (``leantune.scoring.effort``: gradient norm of the last layer's
  LoRA-B on prompt + response), the loss on the answer only when the task trains that way.

Columns are cached as safetensors in the curve folder, keyed by column name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import LeantuneError
from ..io import atomic_path

GENERIC_COLUMNS = ("embedding", "effort")


def prompt_embeddings(model_spec: str, prompts: Sequence[str], device: str = "cpu", batch_size: int = 16, progress: bool = True) -> np.ndarray:
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


def text_effort(model_spec: str, examples, device: str, seed: int, mask_prompt: bool, progress: bool = True, bf16: bool = False) -> np.ndarray:
    from ..scoring.effort import EffortConfig, EffortModel, encode_example

    cfg = EffortConfig(model=model_spec, mask_prompt=mask_prompt, progress=progress, dtype="bfloat16" if bf16 else "float32")
    scorer = EffortModel(cfg, device, seed)
    return scorer.scores([encode_example(ex, scorer.tokenizer, cfg.max_tokens, mask_prompt) for ex in examples])


def check_method(task, method: str) -> None:
    """Refuse an unusable --method before any run starts (not hours later, at its first subset)."""
    if method == "random":
        return
    from .subsets import resolve_selector

    columns = resolve_selector(method, task.name).columns()
    missing = [c for c in columns if c not in GENERIC_COLUMNS]
    if missing and not hasattr(task, "selection_scores"):
        raise LeantuneError(
            f"method {method!r} not available for task {task.name!r}: it needs score column(s) {missing} that this task "
            f"does not provide (generic columns: {', '.join(GENERIC_COLUMNS)}; method 'random' always works)"
        )


def curve_scores(
    task, columns: Sequence[str], pool: Sequence[str], work_dir: Path, model_spec: str, seed: int, device: str, method: str, bf16: bool = False,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file, save_file

    if hasattr(task, "selection_scores"):
        return task.selection_scores(tuple(columns), seed=seed, work_dir=work_dir, model=model_spec, device=device)
    missing = [c for c in columns if c not in GENERIC_COLUMNS]
    if missing:
        raise LeantuneError(f"method {method!r} not available for task {task.name!r}: no score column(s) {missing}")
    scores = {}
    for name in columns:
        path = Path(work_dir) / f"scores-{name}{'-bf16' if bf16 and name == 'effort' else ''}-seed{seed}.safetensors"
        if path.exists():
            scores[name] = load_file(path)[name]
            continue
        from ..models.llm import load_tokenizer

        examples = task.train_examples(list(pool), load_tokenizer(model_spec))
        if name == "embedding":
            scores[name] = prompt_embeddings(model_spec, [e.prompt for e in examples], device, progress=progress)
        else:
            mask = not getattr(task, "train_on_inputs", True)
            scores[name] = text_effort(model_spec, examples, device, seed, mask, progress=progress, bf16=bf16).astype(np.float32)
        with atomic_path(path) as tmp:
            save_file({name: scores[name]}, str(tmp))
    return scores
