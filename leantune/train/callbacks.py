"""Trainer pieces: pausing at a fraction of the schedule, a progress bar with the loss, a
divergence guard and the run's seconds in each checkpoint. Imported lazily (it pulls in transformers)."""
from __future__ import annotations

import inspect
import json
import os
import time

import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback

from ..data.tokenize import IGNORE_INDEX


class DivergedError(RuntimeError):
    """A training or validation loss was NaN/inf; raised before the bad step is applied or saved."""


def accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM under ``model`` (a peft wrapper or not) takes a boolean ``logits_to_keep``
    mask and passes loss keyword arguments (``shift_labels``) on to its loss, as transformers' decoder
    LMs do from the releases whose ``slice_logits_to_keep`` accepts a mask. Anything else (an older
    transformers, a model with its own forward) trains with logits at every position, as before."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    try:
        if slice_logits_to_keep(torch.zeros(1, 2, 1), torch.tensor([[True, False]])).shape != (1, 1):
            return False
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        source = inspect.getsource(type(base).forward)
    except (TypeError, ValueError, OSError, IndexError, RuntimeError):
        return False
    return ("logits_to_keep" in params and "slice_logits_to_keep" in source
            and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()))


def answer_only_logits(inputs: dict) -> dict:
    """The same batch, asking the model for logits only where a label is scored.

    With the loss on the answer only, most positions of a prompt + answer carry label -100, yet a causal
    LM projects every position onto the whole vocabulary (262,144 tokens for Gemma 3) before the loss
    drops them. Here ``logits_to_keep`` is the boolean mask of scored positions (the labels shifted by
    one), so only those rows are projected, and ``shift_labels`` holds their targets in the same order;
    the loss and its gradient are those of the full computation. Inputs without labels pass unchanged."""
    labels = inputs.get("labels")
    if labels is None:
        return inputs
    shifted = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
    keep = shifted != IGNORE_INDEX
    return {**inputs, "logits_to_keep": keep, "shift_labels": shifted[keep]}


class GuardedTrainer(Trainer):
    """Trainer that raises ``DivergedError`` on a non-finite loss, before backward and optimizer step.

    ``answer_logits_only`` (default on where the model supports it): compute logits only at scored
    positions (``answer_only_logits``), which saves time and memory when the loss is on the answer
    only and the vocabulary is large. ``chunked_loss`` (default on for transformers' causal LMs): their
    loss is ``train.loss.causal_lm_loss``, the same cross-entropy without a float32 copy of the logits."""

    def __init__(self, *args, answer_logits_only: bool = True, chunked_loss: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.answer_logits_only = answer_logits_only and accepts_logits_to_keep(self.model)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.chunked_loss = chunked_loss and getattr(base, "loss_type", None) == "ForCausalLM"
        if self.chunked_loss:
            from .loss import causal_lm_loss

            base.loss_function = causal_lm_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.answer_logits_only:
            inputs = answer_only_logits(inputs)
        output = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = (output[0] if return_outputs else output).detach()
        if not _finite_everywhere(loss):
            phase = "training" if model.training else "validation"
            raise DivergedError(
                f"non-finite {phase} loss ({loss.float().mean().item()}) at step {self.state.global_step + 1} "
                f"(epoch {self.state.epoch or 0:.2f}); try a lower learning rate"
            )
        return output


def _finite_everywhere(loss: torch.Tensor) -> bool:
    """Whether ``loss`` is finite in this process and, under data parallelism, in every other one: all
    ranks then stop at the same step instead of one waiting for the others' gradients."""
    finite = bool(torch.isfinite(loss).all())
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        flag = torch.tensor([1.0 if finite else 0.0])
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        finite = bool(flag.item() > 0)
    return finite


class FiniteWeightsCallback(TrainerCallback):
    """Raise ``DivergedError`` when an optimizer step left non-finite trainable weights (e.g. from
    overflowing gradients), so such weights are never validated as "good" or checkpointed.
    Checks only the trainable (LoRA) parameters: cheap next to a training step, and one wait for the
    device a step however many tensors they are (an accelerator runs ahead of the host otherwise)."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            return
        where = trainable[0][1].device
        finite = torch.stack([torch.isfinite(p.detach()).all().to(where) for _, p in trainable])
        if bool(finite.all()):
            return
        name = trainable[int((~finite).nonzero()[0, 0])][0]
        raise DivergedError(f"non-finite weights in {name} after step {state.global_step}; try a lower learning rate")


class ScheduleCallback(TrainerCallback):
    """Stop at step ``target`` (a pause when below ``total``) and always validate and save there,
    and at the last step, so every stopping point leaves a scored, resumable checkpoint."""

    def __init__(self, target: int, total: int, validate: bool):
        self.target, self.total, self.validate = target, total, validate

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.target or state.global_step >= self.total:
            control.should_save = True
            control.should_evaluate = self.validate
        if state.global_step >= self.target:
            control.should_training_stop = True
        return control


WALL_FILE = "wall.json"


class WallClockCallback(TrainerCallback):
    """Write ``{"wall_s", "sittings"}`` into each checkpoint: one ``{"machine", "from_step", "to_step", "wall_s"}``
    per sitting, ``prior_sittings`` then this one on ``machine`` since ``start`` (``time.perf_counter``)
    (``checkpoint_sittings``), so a timing says what each part of the run trained on; and the run's seconds
    up to the checkpoint, theirs summed (``checkpoint_wall``), so a run resumed after an interruption
    reports the time of all its sittings."""

    def __init__(self, start: float, prior_sittings: list[dict] | tuple = (), machine: str = ""):
        self.start, self.prior_sittings, self.machine, self.from_step = start, list(prior_sittings), machine, 0
        self.prior = sittings_wall(self.prior_sittings)

    def on_train_begin(self, args, state, control, **kwargs):
        self.from_step = state.global_step  # the step resumed from (0 for a fresh run)

    def sittings(self, step: int) -> list[dict]:
        """The earlier sittings and this one, up to ``step``."""
        here = {"machine": self.machine, "from_step": self.from_step, "to_step": step,
                "wall_s": round(time.perf_counter() - self.start, 3)}
        return [*self.prior_sittings, here]

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            with open(os.path.join(folder, WALL_FILE), "w", encoding="utf-8") as fh:
                json.dump({"wall_s": self.prior + time.perf_counter() - self.start,
                           "sittings": self.sittings(state.global_step)}, fh)


def _read_wall_file(checkpoint) -> dict:
    try:
        with open(os.path.join(checkpoint, WALL_FILE), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def checkpoint_wall(checkpoint) -> float | None:
    """The seconds a run took up to ``checkpoint`` (a checkpoint folder), when it recorded them."""
    value = _read_wall_file(checkpoint).get("wall_s")
    return float(value) if isinstance(value, (int, float)) else None


def sittings_wall(sittings: list[dict]) -> float:
    """The seconds of ``sittings`` together (a sitting without a number counts 0)."""
    return sum(float(s["wall_s"]) for s in sittings if isinstance(s.get("wall_s"), (int, float)))


def checkpoint_sittings(checkpoint) -> list[dict]:
    """The sittings a run took up to ``checkpoint`` (``WallClockCallback``). A checkpoint written before
    sittings were recorded gives its seconds as one sitting from step 0 on an unrecorded machine (""),
    and one without any record gives []."""
    data = _read_wall_file(checkpoint)
    rows = data.get("sittings")
    if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
        return rows
    wall = checkpoint_wall(checkpoint)
    if wall is None:
        return []
    step = str(os.path.basename(os.path.normpath(checkpoint))).rpartition("-")[2]
    return [{"machine": "", "from_step": 0, "to_step": int(step) if step.isdigit() else None, "wall_s": wall}]


class ProgressCallback(TrainerCallback):
    """One tqdm bar over optimizer steps with the latest training and validation loss.

    ``total`` is where this run stops; a run that stops part-way through a longer schedule (``schedule``,
    e.g. a screen at 20% of it) counts to its stop and names the schedule in its description."""

    def __init__(self, total: int, enabled: bool = True, schedule: int | None = None):
        self.total, self.enabled, self.bar, self.postfix = total, enabled, None, {}
        self.desc = "fine-tune" if schedule in (None, total) else f"fine-tune (to step {total} of {schedule})"

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=self.total, initial=min(state.global_step, self.total), desc=self.desc, unit="step",
                        disable=not (self.enabled and state.is_world_process_zero))

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        if "loss" in logs:
            self.postfix["loss"] = f"{logs['loss']:.3f}"
        if "eval_loss" in logs:
            self.postfix["valid"] = f"{logs['eval_loss']:.3f}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
