"""The one place that turns a ``--device`` value into a torch device name, and the free local port
that processes working together on this machine (DDP training, launched scorers, test servers) meet on."""
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
