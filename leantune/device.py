"""The one place that turns a ``--device`` value into a torch device name."""
from __future__ import annotations

from .errors import ParameterError


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``, ``cuda`` and ``cuda:N`` pass
    through; anything else is a one-line error naming the value."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not device.startswith("cuda"):
        raise ParameterError("device", repr(device), "use cpu, cuda, cuda:N or auto")
    return device
