"""Trainer pieces: pausing at a fraction of the schedule, a progress bar with the loss, and a
divergence guard. Imported lazily (it pulls in transformers)."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback


class DivergedError(RuntimeError):
    """A training or validation loss was NaN/inf; raised before the bad step is applied or saved."""


class GuardedTrainer(Trainer):
    """Trainer that raises ``DivergedError`` on a non-finite loss, before backward and optimizer step."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        output = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = (output[0] if return_outputs else output).detach()
        if not torch.isfinite(loss).all():
            phase = "training" if model.training else "validation"
            raise DivergedError(
                f"non-finite {phase} loss ({loss.float().mean().item()}) at step {self.state.global_step + 1} "
                f"(epoch {self.state.epoch or 0:.2f}); try a lower learning rate"
            )
        return output


class FiniteWeightsCallback(TrainerCallback):
    """Raise ``DivergedError`` when an optimizer step left non-finite trainable weights (e.g. from
    overflowing gradients), so such weights are never validated as "good" or checkpointed.
    Checks only the trainable (LoRA) parameters: cheap next to a training step."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is None:
            return
        for name, param in model.named_parameters():
            if param.requires_grad and not torch.isfinite(param.detach()).all():
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


class ProgressCallback(TrainerCallback):
    """One tqdm bar over optimizer steps with the latest training and validation loss."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled, self.bar, self.postfix = total, enabled, None, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=self.total, initial=state.global_step, desc="fine-tune", unit="step", disable=not self.enabled)

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
