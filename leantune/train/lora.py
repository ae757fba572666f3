"""LoRA fine-tuning of a causal LM with peft and the Hugging Face Trainer.

One output folder per run::

    out_dir/manifest.json     model, settings and data fingerprints (a folder is never reused for other data)
    out_dir/checkpoints/      Trainer checkpoints (adapter safetensors, optimizer, scheduler, RNG, state; wall.json: seconds so far)
    out_dir/adapter/          the adapter to use: best validation loss so far (or last weights without validation)
    out_dir/result.json       FinetuneResult of the last call

``stop_after_fraction`` trains part of the schedule that ``cfg`` defines (learning-rate decay of the
full run) and leaves a checkpoint; a later call with the same folder continues from the newest
complete checkpoint. An interrupted run (Ctrl-C, crash) resumes the same way.

``cfg.processes`` > 1 trains on the CPU as that many DDP processes (gloo, started here with
``torch.multiprocessing.spawn``): each takes its share of every optimizer step's micro-batches; rank 0
writes checkpoints, adapter and ``result.json``. A run may resume with another number of processes.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

from ..errors import LeantuneError
from ..io import atomic_dir, read_json, write_json
from ..io import refuse_other_settings
from ..tasks.base import TextExample
from .config import FinetuneConfig, FinetuneResult
from .data import examples_fingerprint, tokenize_examples

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_DIR = "checkpoints"  # the Trainer checkpoints inside a fine-tuning run's folder
FINAL_STATUSES = ("finished", "early_stopped", "diverged")
TRAINING_RECORD = "leantune_training.json"  # in a run's adapter folder: what trained it (model, training seed)


def finetune(
    model_spec: str,
    train: Sequence[TextExample],
    valid: Sequence[TextExample] | None,
    out_dir,
    cfg: FinetuneConfig | None = None,
    stop_after_fraction: float | None = None,
    progress: bool = True,
    callbacks=(),
) -> FinetuneResult:
    """Fine-tune a LoRA adapter on ``train``; validate (and early-stop) on ``valid`` when given."""
    cfg = cfg or FinetuneConfig()
    out = Path(out_dir)
    if not train:
        raise LeantuneError("fine-tuning needs at least one training example")
    if stop_after_fraction is not None and not 0 < stop_after_fraction <= 1:
        raise LeantuneError(f"stop_after_fraction must be in (0, 1], got {stop_after_fraction}")
    valid = list(valid or [])
    total = cfg.total_steps(len(train))
    target = total if stop_after_fraction is None else max(1, math.ceil(stop_after_fraction * total))

    if cfg.processes > 1:
        _check_processes(cfg, callbacks)
    _check_manifest(out, model_spec, cfg, train, valid)
    previous = _read_result(out)
    if previous is not None and (previous.status in FINAL_STATUSES or previous.steps >= target):
        return previous  # finished, or already paused at (or past) the requested point
    if cfg.processes > 1:
        return _spawn_ranks(model_spec, train, valid, out, cfg, total, target, stop_after_fraction, progress, previous)
    return _train(model_spec, train, valid, out, cfg, total, target, stop_after_fraction, progress, previous, callbacks)


def _check_processes(cfg: FinetuneConfig, callbacks) -> None:
    from ..device import resolve_device
    from ..errors import ParameterError

    if resolve_device(cfg.device) != "cpu":
        raise ParameterError("processes", cfg.processes, "several processes are for CPU training; on a GPU use one")
    if callbacks:
        raise ParameterError("processes", cfg.processes, "not with trainer callbacks (e.g. tuning's early scoring): use 1")


def _spawn_ranks(model_spec, train, valid, out: Path, cfg: FinetuneConfig, total, target, stop_after_fraction, progress, previous) -> FinetuneResult:
    """Train in ``cfg.processes`` CPU processes (torch DDP over gloo on this machine); rank 0 writes
    checkpoints, adapter and ``result.json``, which this process then reads."""
    import torch.multiprocessing as mp

    from ..device import free_port
    from ..models.llm import resolve_model

    resolve_model(model_spec)  # convert a shipped model once here, not in every process at the same time
    port = free_port()
    job = (model_spec, list(train), list(valid), out, cfg, total, target, stop_after_fraction, progress, previous)
    try:
        mp.spawn(_rank_main, args=(cfg.processes, port, job), nprocs=cfg.processes, join=True)
    except mp.ProcessRaisedException as exc:
        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
        raise LeantuneError(f"fine-tuning in {cfg.processes} processes failed: {lines[-1] if lines else exc}") from None
    result = _read_result(out)
    if result is None:
        raise LeantuneError(f"fine-tuning in {cfg.processes} processes left no result in {out}")
    return result


def _rank_main(rank: int, world: int, port: int, job: tuple) -> None:
    import torch

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    threads = max(1, torch.get_num_threads() // world)  # the caller's threads, shared out
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # else accelerate sets its own count (physical cores / processes)
    _train(*job, callbacks=())


def _train(model_spec, train, valid, out: Path, cfg: FinetuneConfig, total, target, stop_after_fraction, progress, previous,
           callbacks) -> FinetuneResult | None:
    """The training loop of ``finetune`` (one process, or one rank of several: only rank 0 writes)."""
    from ..device import machine_summary, resolve_device
    from .callbacks import DivergedError, ProgressCallback, WallClockCallback, checkpoint_sittings

    start = time.perf_counter()
    machine = machine_summary(resolve_device(cfg.device))
    checkpoint = latest_checkpoint(out / CHECKPOINT_DIR)
    # Earlier sittings: up to the checkpoint resumed from (an interrupted run), else a pause's result.
    prior_sittings = (checkpoint_sittings(checkpoint) if checkpoint else []) or _result_sittings(previous)
    clock = WallClockCallback(start, prior_sittings, machine)
    trainer, model = _build_trainer(model_spec, train, valid, out, cfg, total, target, progress, [clock, *callbacks])
    status, reason = None, ""
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except DivergedError as exc:
        status, reason = "diverged", str(exc)
    finally:
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, ProgressCallback):
                cb.close()

    state = trainer.state
    if not trainer.is_world_process_zero():
        return None
    if status == "diverged":
        adapter_dir = _adapter_from_last_good_checkpoint(out, _training_record(model_spec, cfg))
        steps = state.global_step
    else:
        steps = state.global_step
        if steps >= total:
            status = "finished"
        elif steps >= target:
            status, reason = "paused", f"stopped after {steps} of {total} steps (stop_after_fraction={stop_after_fraction})"
        else:
            status, reason = "early_stopped", f"validation loss did not improve for {cfg.early_stopping_patience} evaluations"
        adapter_dir = _save_adapter(model, out / "adapter", _training_record(model_spec, cfg))

    history = _history(state.log_history)
    valid_losses = [h["valid_loss"] for h in history if h.get("valid_loss") is not None]
    result = FinetuneResult(
        adapter_dir=adapter_dir,
        status=status,
        steps=steps,
        total_steps=total,
        tokens_seen=int(state.num_input_tokens_seen or 0),
        history=history,
        best_valid_loss=min(valid_losses) if valid_losses else None,
        wall_s=clock.prior + time.perf_counter() - start,
        reason=reason,
        n_train=len(train),
        n_valid=len(valid),
        machine=machine,
        sittings=clock.sittings(steps),
    )
    write_json(out / "result.json", result.to_dict())
    return result


def _result_sittings(previous: FinetuneResult | None) -> list[dict]:
    """The sittings of an earlier (paused) result; one written before sittings were recorded gives its
    seconds as one sitting on an unrecorded machine, since its ``machine`` names only its last sitting."""
    if previous is None:
        return []
    if previous.sittings:
        return list(previous.sittings)
    return [{"machine": "", "from_step": 0, "to_step": previous.steps, "wall_s": previous.wall_s}] if previous.wall_s else []


def _quiet_peft_plumbing() -> None:
    """Silence the deprecation warning peft's own calls raise in transformers 5.x (``is_gradient_checkpointing``)
    when it wraps a model for training or loads an adapter: nothing a user can act on."""
    import warnings

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def load_finetuned(model_spec: str, adapter_dir, dtype: str = "float32", device: str = "cpu"):
    """The base model with a saved LoRA adapter on top -> ``(peft_model, tokenizer)``."""
    from peft import PeftModel

    from ..models.llm import load_model

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise LeantuneError(f"{adapter_dir}: not a LoRA adapter folder (no adapter_config.json)")
    model, tokenizer = load_model(model_spec, dtype=dtype, device=device)
    _quiet_peft_plumbing()
    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    model.to(device)
    model.eval()
    return model, tokenizer


def adapter_fingerprint(adapter_dir) -> str | None:
    """SHA-256 (20 hex digits) of a LoRA adapter folder's weights, for cache keys and logs; None without a folder."""
    import hashlib

    if not adapter_dir:
        return None
    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.exists():
        raise LeantuneError(f"{adapter_dir}: not a LoRA adapter folder (no adapter_model.safetensors)")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:20]


def latest_checkpoint(folder: Path) -> Path | None:
    """Newest *complete* Trainer checkpoint (``trainer_state.json`` is written last)."""
    if not folder.is_dir():
        return None
    complete = [
        p for p in folder.iterdir()
        if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit()
        and (p / "trainer_state.json").exists()
    ]
    return max(complete, key=_checkpoint_step, default=None)


def _checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a checkpoint folder (``checkpoint-<step>``) was saved at."""
    return int(checkpoint.name[len(CHECKPOINT_PREFIX):])


def checkpointed_steps(out) -> int:
    """Optimizer steps that the fine-tuning run in ``out`` (``finetune``'s folder) has checkpointed and
    would resume from: the step of its newest complete checkpoint, 0 where it has none."""
    checkpoint = latest_checkpoint(Path(out) / CHECKPOINT_DIR)
    return _checkpoint_step(checkpoint) if checkpoint else 0


def _check_manifest(out: Path, model_spec: str, cfg: FinetuneConfig, train, valid) -> None:
    manifest = {
        "model": str(model_spec),
        "config": cfg.training_dict(),
        "train": {"n": len(train), "sha": examples_fingerprint(train)},
        "valid": {"n": len(valid), "sha": examples_fingerprint(valid)},
    }
    path = out / "manifest.json"
    if path.exists():
        refuse_other_settings(read_json(path), manifest, "a fine-tuning run", out)
        return
    write_json(path, manifest)


def _read_result(out: Path) -> FinetuneResult | None:
    path = out / "result.json"
    if not path.exists():
        return None
    result = FinetuneResult.from_dict(read_json(path))
    if result.adapter_dir is not None and not Path(result.adapter_dir).exists():
        return None
    return result


def _build_trainer(model_spec, train, valid, out: Path, cfg: FinetuneConfig, total: int, target: int, progress, callbacks):
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback as HFProgressCallback

    from ..models.llm import load_model, resolve_model
    from .callbacks import FiniteWeightsCallback, GuardedTrainer, ProgressCallback, ScheduleCallback

    _quiet_peft_plumbing()
    # Prepare (convert, or build the tiny model) before seeding: building draws random numbers, and the
    # LoRA initialisation must not depend on whether the model was already cached.
    resolve_model(model_spec)
    transformers.set_seed(cfg.seed)
    from ..device import resolve_device, warn_if_bf16_emulated, warn_if_small_micro_batches

    device = resolve_device(cfg.device)
    use_cpu = device == "cpu"
    bf16 = cfg.uses_bf16(device)
    if bf16:
        warn_if_bf16_emulated(device, "--bf16")
    warn_if_small_micro_batches(device, cfg.micro_batch_size, cfg.batch_size)

    model, tokenizer = load_model(model_spec, dtype="float32", device="cpu")
    tokenizer.padding_side = "right"
    model.config.use_cache = False
    lora = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise LeantuneError(f"LoRA target_modules {list(cfg.target_modules)}: {exc}") from None

    train_rows = tokenize_examples(tokenizer, train, cfg.cutoff_len, cfg.train_on_inputs)
    valid_rows = tokenize_examples(tokenizer, valid, cfg.cutoff_len, cfg.train_on_inputs)
    eval_every = cfg.eval_every or cfg.steps_per_epoch(len(train))
    has_valid = bool(valid_rows)
    args = TrainingArguments(
        output_dir=str(out / CHECKPOINT_DIR),
        per_device_train_batch_size=cfg.micro,
        per_device_eval_batch_size=cfg.micro,
        gradient_accumulation_steps=cfg.accumulation,
        max_steps=total,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=int(round(cfg.warmup_ratio * total)),
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_strategy="steps",
        logging_steps=1,
        logging_nan_inf_filter=False,
        eval_strategy="steps" if has_valid else "no",
        eval_steps=eval_every if has_valid else None,
        save_strategy="steps",
        save_steps=eval_every,
        save_total_limit=2,  # the newest and (with validation) the best are kept
        load_best_model_at_end=has_valid,
        metric_for_best_model="eval_loss" if has_valid else None,
        greater_is_better=False if has_valid else None,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives a resume
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=use_cpu,
        ddp_backend="gloo" if cfg.processes > 1 else None,
        ddp_find_unused_parameters=False if cfg.processes > 1 else None,
        bf16=bf16,
        dataloader_num_workers=0,
    )
    # User callbacks first and the weight check last, so it sees a step's final weights before any save.
    cbs = [*callbacks, ScheduleCallback(target=target, total=total, validate=has_valid)]
    if has_valid and cfg.early_stopping_patience:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    cbs += [ProgressCallback(total=target, enabled=progress, schedule=total), FiniteWeightsCallback()]
    trainer = GuardedTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=valid_rows or None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, pad_to_multiple_of=8, padding=True, return_tensors="pt"),
        callbacks=cbs,
    )
    for unwanted in (PrinterCallback, HFProgressCallback):
        trainer.remove_callback(unwanted)
    return trainer, model


def _training_record(model_spec: str, cfg: FinetuneConfig) -> dict:
    return {"model": str(model_spec), "seed": cfg.seed}


def save_training_record(adapter_dir, record: dict) -> None:
    """Write what trained an adapter (``{"model", "seed"}``) into its folder, beside peft's files."""
    write_json(Path(adapter_dir) / TRAINING_RECORD, record)


def load_training_record(adapter_dir) -> dict | None:
    """What trained the adapter in ``adapter_dir`` (``save_training_record``'s ``{"model", "seed"}``), or None
    for an adapter saved before leantune wrote it, or by another tool."""
    path = Path(adapter_dir) / TRAINING_RECORD
    if not path.exists():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("seed"), int):
        raise LeantuneError(f"{path}: expected an object with an integer 'seed'")
    return record


def _save_adapter(model, dest: Path, record: dict) -> Path:
    """Write the adapter (safetensors) and its training record to a temporary sibling, then swap it into place."""
    with atomic_dir(dest) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        save_training_record(tmp, record)
    return dest


def _adapter_from_last_good_checkpoint(out: Path, record: dict) -> Path | None:
    checkpoint = latest_checkpoint(out / CHECKPOINT_DIR)
    if checkpoint is None:
        return None
    dest = out / "adapter"
    with atomic_dir(dest) as tmp:
        for name in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copy2(checkpoint / name, tmp / name)
        save_training_record(tmp, record)
    return dest


def _history(log_history: list[dict]) -> list[dict]:
    """Trainer logs -> one row per logged step: epoch, step, train_loss, valid_loss."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        step = entry.get("step")
        if step is None or ("loss" not in entry and "eval_loss" not in entry):
            continue
        row = rows.setdefault(step, {"epoch": entry.get("epoch"), "step": step, "train_loss": None, "valid_loss": None})
        if "loss" in entry:
            row["train_loss"] = float(entry["loss"])
        if "eval_loss" in entry:
            row["valid_loss"] = float(entry["eval_loss"])
    return [rows[s] for s in sorted(rows)]
