"""The one training-checkpoint format of leantune's own training loops (RQ-VAE, TIGER, SASRec).

One safetensors file holds the model's weights (``model.<name>``; tied weights stored once and
restored by name), the optimizer's state (``opt.<param id>.<slot>``, its param groups in the
metadata), torch's RNG state (``rng.torch``), any extra tensors the loop keeps (``extra.<name>``,
e.g. SASRec's best-epoch weights) and a JSON ``state`` (epoch, history, identity, ...) in the
metadata. Written atomically, so an interrupted save leaves the previous checkpoint intact.
LoRA fine-tuning keeps the Hugging Face adapter format instead (``leantune.train``).
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_path


def save_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                        extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write weights, optimizer, RNG, ``extra`` tensors and the JSON ``state`` to ``path``."""
    from safetensors.torch import save_file

    tensors, aliases, seen = {}, {}, {}
    for k, v in model.state_dict().items():
        ptr = (v.data_ptr(), tuple(v.shape))
        if ptr in seen:  # tied weights (T5's shared embedding): stored once, restored by name
            aliases[k] = seen[ptr]
        else:
            seen[ptr] = k
            tensors[f"model.{k}"] = v.detach().cpu().contiguous()
    opt = optimizer.state_dict()
    for pid, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    for k, v in (extra or {}).items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt["param_groups"]), "aliases": json.dumps(aliases)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def checkpoint_state(path: str | Path) -> dict | None:
    """The JSON ``state`` of a checkpoint, read without its tensors; ``None`` for a file in another format."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return json.loads(meta["state"]) if "state" in meta else None


def load_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """Restore weights, optimizer (when given) and RNG from ``path``; returns the JSON ``state``."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    for alias, source in json.loads(meta.get("aliases", "{}")).items():
        weights[alias] = weights[source]
    model.load_state_dict(weights)
    if optimizer is not None:
        slots: dict[int, dict] = defaultdict(dict)
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                slots[int(pid)][name] = v
        optimizer.load_state_dict({"state": dict(slots), "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    return json.loads(meta["state"])


def load_extra_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``extra`` tensors saved with a checkpoint."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {k[6:]: fh.get_tensor(k) for k in fh.keys() if k.startswith("extra.")}
