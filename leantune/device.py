"""The one place that turns a ``--device`` value into a torch device name, describes the machine a
timing was taken on, and finds the free local port that processes working together on this machine
(DDP training, launched scorers, test servers) meet on."""
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


def cpu_native_bf16() -> str:
    """The CPU's native bf16 instructions torch can use ("AMX", "AVX512-BF16", both joined by ", "),
    "" when it has none (bf16 autocast is then emulated and trains slower than fp32:
    ``benchmarks/results/bf16-train-avx2.md``), or "unknown" when this torch cannot tell."""
    import torch

    try:
        found = [name for name, probe in (("AMX", torch.cpu._is_amx_tile_supported), ("AVX512-BF16", torch.cpu._is_avx512_bf16_supported)) if probe()]
    except (AttributeError, RuntimeError):  # private probes: absent from some torch builds
        return "unknown"
    return ", ".join(found)


def bf16_cpu_warning(device: str, setting: str = "--bf16") -> str:
    """A one-line warning when ``setting`` (a bf16 option) runs on a CPU without native bf16 (no AMX
    or AVX512-BF16), where torch emulates bf16; "" on CUDA, on a CPU that has it, or when unknown."""
    if not str(device).startswith("cpu") or cpu_native_bf16():
        return ""
    return (f"{setting} on a CPU without native bf16 (no AMX or AVX512-BF16): bf16 is emulated there and slow "
            "(LoRA training 20.5x as slow as fp32 on an AVX2-only CPU, benchmarks/results/bf16-train-avx2.md); "
            "leave it off on this machine")


def _warn(message: str) -> None:
    """Emit ``message`` as a ``LeantuneWarning`` (the CLI prints it as one line) at the caller of the
    ``warn_if_...`` function that called this; nothing for ""."""
    if message:
        import warnings

        from .errors import LeantuneWarning

        warnings.warn(message, LeantuneWarning, stacklevel=4)


def warn_if_bf16_emulated(device: str, setting: str = "--bf16") -> None:
    """Emit ``bf16_cpu_warning`` as a ``LeantuneWarning`` when it applies."""
    _warn(bf16_cpu_warning(device, setting))


def micro_batch_warning(device: str, micro_batch_size: int, batch_size: int) -> str:
    """A one-line hint when a GPU run splits each optimizer step into several micro-batches: a GPU waits on
    the host for small models, so a forward pass costs about the same whatever its size; "" on a CPU or
    with one micro-batch a step."""
    if str(device).startswith("cpu") or micro_batch_size >= batch_size:
        return ""
    passes = -(-batch_size // micro_batch_size)
    return (f"--micro-batch-size {micro_batch_size} on {device}: {passes} forward passes an optimizer step of {batch_size}; "
            "on an H200 a 16-product step of SmolLM2's recipe ran 3.8x as fast as one micro-batch as in four of 4 "
            f"(benchmarks/results/gpu-step-time-h200); raise it towards {batch_size} unless GPU memory runs short")


def warn_if_small_micro_batches(device: str, micro_batch_size: int, batch_size: int) -> None:
    """Emit ``micro_batch_warning`` as a ``LeantuneWarning`` when it applies."""
    _warn(micro_batch_warning(device, micro_batch_size, batch_size))


def cpu_model() -> str:
    """The CPU's model name (``model name`` in /proc/cpuinfo on Linux), else ``platform.processor()``,
    else the architecture (``x86_64``)."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages, rounded to 0.1 ([] where the OS has none)."""
    import os

    try:
        return [round(x, 1) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return []


def machine_summary(device: str = "cpu", threads: bool = True) -> str:
    """One line naming what a timing ran on, for reports: the CPU model, its core count and native bf16
    (bf16 training runs 20x slower on a CPU without it), the GPU when ``device`` is CUDA, torch's version
    and, with ``threads``, this process's torch thread count, e.g.
    ``AMD EPYC, 2 CPUs, native bf16: none, torch 2.13.0+cpu, 2 threads``. Pass ``threads=False`` where
    the timed work ran in other processes or with a thread count the report states itself."""
    import os

    import torch

    bf16 = cpu_native_bf16() or "none"
    parts = [cpu_model(), f"{os.cpu_count()} CPUs", f"native bf16: {bf16}"]
    if str(device).startswith("cuda") and torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(torch.device(device))}")
    parts.append(f"torch {torch.__version__}")
    if threads:
        n = torch_threads()
        parts.append(f"{n} thread{'' if n == 1 else 's'}")
    return ", ".join(parts)


def torch_threads() -> int:
    """The CPU threads torch computes with in this process (``OMP_NUM_THREADS``, ``torch.set_num_threads``)."""
    import torch

    return torch.get_num_threads()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
