"""Settings and result of a LoRA fine-tuning run.

Defaults are the BIGRec/DEALRec recipe: LoRA r 8, alpha 16, dropout 0.05 on q_proj/v_proj,
lr 1e-4, effective batch 128 (gradient accumulation over micro-batches of 4), cutoff 512 tokens,
loss on prompt and response, up to 50 epochs with early stopping on validation loss (patience 5).
(The reference also warms the learning rate up over 20 steps; here warm-up is ``warmup_ratio``.)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import LeantuneError, ParameterError

STATUSES = ("finished", "early_stopped", "paused", "diverged")
# Every linear layer of a Llama/Gemma-style block: `--target-modules all`.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def parse_target_modules(text: str) -> tuple[str, ...]:
    """``--target-modules``: comma-separated module names, or ``all`` (ALL_LINEAR); empty is refused."""
    modules = ALL_LINEAR if text.strip() == "all" else tuple(m.strip() for m in text.split(",") if m.strip())
    if not modules:
        raise ParameterError("target_modules", repr(text), "name at least one module (e.g. q_proj,v_proj) or 'all'")
    return modules


@dataclass
class FinetuneConfig:
    """Settings of one LoRA fine-tune (defaults: the BIGRec/DEALRec recipe: rank 8, alpha 16, lr 1e-4, batch 128)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 1e-4
    batch_size: int = 128  # effective batch: micro_batch_size x gradient accumulation
    micro_batch_size: int = 4
    epochs: float = 50
    max_steps: int | None = None  # overrides epochs when set
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    cutoff_len: int = 512
    train_on_inputs: bool = True  # False masks the prompt out of the loss
    early_stopping_patience: int | None = 5  # in evaluations; None or 0 disables early stopping
    eval_every: int | None = None  # optimizer steps between validations; None = once per epoch
    max_grad_norm: float = 1.0
    group_by_length: bool = False  # length-grouped micro-batches: less padding, not the reference order
    seed: int = 0
    device: str = "auto"  # "auto" (cuda when available), "cpu", "cuda"
    bf16: bool | None = None  # None = on for cuda devices that support it, off on CPU
    # CPU data-parallel processes (gloo): each takes its share of every optimizer step's micro-batches,
    # so a 2-core machine trains one run on both cores; the steps and batches stay those of one process
    # (at an epoch's end a process may repeat a few of the epoch's first examples to even out the shares).
    processes: int = 1

    def __post_init__(self):
        self.target_modules = tuple(self.target_modules)
        checks = [
            (self.r > 0, "r must be positive"),
            (self.alpha > 0, "alpha must be positive"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.lr > 0, "lr must be positive"),
            (math.isfinite(self.lr) and math.isfinite(self.alpha), f"lr and alpha must be finite (lr {self.lr}, alpha {self.alpha})"),
            (self.batch_size > 0 and self.micro_batch_size > 0, "batch sizes must be positive"),
            (self.epochs > 0 or (self.max_steps or 0) > 0, "epochs or max_steps must be positive"),
            (self.max_steps is None or self.max_steps > 0, "max_steps must be positive"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.cutoff_len >= 8, "cutoff_len must be at least 8"),
            (self.eval_every is None or self.eval_every > 0, "eval_every must be positive"),
            (bool(self.target_modules), "target_modules must not be empty"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), f"device {self.device!r} unknown"),
            (self.processes >= 1, f"processes must be at least 1, got {self.processes}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LeantuneError(f"fine-tuning setting: {message}")
        if self.processes > 1 and self.micro_steps % self.processes:  # batch sizes are known positive here
            raise LeantuneError(f"fine-tuning setting: processes {self.processes} must divide the {self.micro_steps} micro-batches "
                                f"of an optimizer step (batch_size {self.batch_size} / micro_batch_size {self.micro})")

    @property
    def micro(self) -> int:
        return min(self.micro_batch_size, self.batch_size)

    @property
    def micro_steps(self) -> int:
        """Micro-batches per optimizer step, over all processes."""
        return max(1, self.batch_size // self.micro)

    @property
    def accumulation(self) -> int:
        """Gradient-accumulation steps of each process."""
        return max(1, self.micro_steps // self.processes)

    def steps_per_epoch(self, n_examples: int) -> int:
        micro_batches = math.ceil(n_examples / self.micro)
        return max(1, math.ceil(micro_batches / self.micro_steps))

    def total_steps(self, n_examples: int) -> int:
        if self.max_steps:
            return self.max_steps
        return max(1, math.ceil(self.epochs * self.steps_per_epoch(n_examples)))

    def uses_bf16(self, device: str) -> bool:
        """Whether training on the resolved ``device`` runs under bf16 autocast: ``bf16`` when set,
        otherwise on CUDA cards that support it and never on the CPU."""
        if self.bf16 is not None:
            return self.bf16
        import torch

        return device != "cpu" and torch.cuda.is_bf16_supported()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise LeantuneError(f"fine-tuning settings: unknown keys {sorted(unknown)}")
        return cls(**data)

    def training_dict(self) -> dict:
        """The settings that change the trained weights (device and process count excluded on purpose:
        a run may resume on another device or with another number of processes)."""
        data = self.to_dict()
        data.pop("device")
        data.pop("processes")
        return data


@dataclass
class FinetuneResult:
    adapter_dir: Path | None  # None when a run diverged before any good checkpoint existed
    status: str  # one of STATUSES
    steps: int
    total_steps: int
    tokens_seen: int
    history: list[dict] = field(default_factory=list)  # {epoch, step, train_loss, valid_loss}
    best_valid_loss: float | None = None
    wall_s: float = 0.0
    reason: str = ""
    n_train: int = 0
    n_valid: int = 0
    # What the sitting that ended the run trained on (``device.machine_summary``: CPU model, native bf16,
    # GPU, torch threads); wall_s counts every sitting of a resumed run. "" in results written before.
    machine: str = ""
    # One {"machine", "from_step", "to_step", "wall_s"} per sitting, oldest first ("" machine: a sitting from
    # before they were recorded); [] in results written before.
    sittings: list[dict] = field(default_factory=list)

    def time_summary(self) -> str:
        """The run's training seconds, and over how many sittings when it was resumed: ``"1234 s over 3 sittings"``."""
        n = len(self.sittings)
        return f"{self.wall_s:.0f} s" + (f" over {n} sittings" if n > 1 else "")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["adapter_dir"] = str(self.adapter_dir) if self.adapter_dir else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneResult":
        """The result ``to_dict`` gave, read back from JSON: the losses a diverged run wrote as "nan" or
        "inf" (``io.write_json``) come back as floats."""
        from ..io import read_float, read_loss_history

        data = dict(data)
        data["adapter_dir"] = Path(data["adapter_dir"]) if data.get("adapter_dir") else None
        data["best_valid_loss"] = read_float(data.get("best_valid_loss"), "best_valid_loss")
        data["history"] = read_loss_history(data.get("history", []))
        return cls(**data)
