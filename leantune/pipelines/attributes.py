"""Attribute extraction end to end (``leantune attributes evaluate|finetune``): the library side.

``evaluate_attributes`` generates and judges every question of a split with the base model or an
adapter (zero- or few-shot) and writes ``metrics.json`` and ``predictions.jsonl``;
``finetune_attributes`` draws the training units (``training_subset``), fine-tunes with the shared
trainer and evaluates the adapter the same way; ``attribute_finetune_config`` builds its settings from
the model's default recipe. The CLI only parses flags and prints.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ParameterError
from ..io import write_json


@dataclass
class AttributesEvaluation:
    metrics: dict
    rows: list  # one judged question each (raw output included)
    out: Path
    name: str  # what was evaluated: zero-shot, N-shot, or the adapter's run name
    wall_s: float


def evaluation_name(adapter: Path | None, shots: int) -> str:
    """zero-shot, ``N-shot``, or the adapter's run folder name (with ``-N-shot``)."""
    name = adapter.parent.name if adapter is not None and adapter.name == "adapter" else (adapter.name if adapter else "zero-shot")
    if shots:
        name = f"{name}-{shots}-shot" if adapter is not None else f"{shots}-shot"
    return name


def default_cue_space(adapter, shots: int) -> bool:
    """Whether a prompt without a chat template ends in "Answer: " (True) or "Answer:" (False) when
    the caller does not say. Prompting a base model without an adapter ends without the space: the
    tokenizer merges the space into the answer's first token (Gemma's "▁{"), so a prompt ending on a
    lone "▁" asks for a token sequence the model rarely writes. On Gemma 3 270M's 150 validation
    products, ending without it lifted micro-F1 from 0.269 to 0.318 at 3 shots and from 0.000 to
    0.071 at zero shots (README). An adapter is evaluated with the prompts it was trained on
    ("Answer: ", as every leantune fine-tune writes them). ``shots`` is kept for callers that pass it."""
    return adapter is not None


def evaluate_attributes(data: str = "oa-mine", model: str = "smollm2", adapter: Path | None = None, *, unit: str = "product",
                        split: str = "test", limit: int | None = None, batch_size: int = 16, strict_json: bool = False,
                        shots: int = 0, device: str = "cpu", out: Path | None = None, seed: int = 0,
                        progress: bool = True, cue_space: bool | None = None) -> AttributesEvaluation:
    """Micro-F1, P/R, accuracy and per-attribute scores of ``model`` (with ``adapter``) on ``split``;
    ``limit`` evaluates a seeded subset of products, ``shots`` puts solved training products in each prompt;
    ``cue_space=False`` ends prompts without a chat template in "Answer:" rather than "Answer: "
    (``leantune.tasks.attributes_prompts``); the default (None) is ``default_cue_space(adapter, shots)``.
    ``metrics["f1_ci95"]`` is micro-F1's 95% interval over the evaluated products (a percentile bootstrap
    that draws each product's questions together; ``leantune.evaluation.compare.metric_interval``)."""
    from ..device import resolve_device
    from ..evaluation.compare import load_evaluation, metric_interval
    from ..models.llm import load_model
    from ..tasks.attributes import AttributeTask, write_predictions

    if split not in ("test", "valid"):
        raise ParameterError("split", repr(split), "choose 'test' or 'valid'")
    if limit is not None and limit < 1:
        raise ParameterError("limit", limit, "must be at least 1 (omit it for every product)")
    if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
        raise ParameterError("adapter", adapter, "not a LoRA adapter folder (no adapter_config.json)")
    from ..tasks.attributes_generate import GenerationLog
    from ..train import adapter_fingerprint, load_finetuned, load_training_record

    if cue_space is None:
        cue_space = default_cue_space(adapter, shots)
    name = evaluation_name(Path(adapter) if adapter is not None else None, shots)
    out = Path(out) if out is not None else Path("runs") / f"attributes-eval-{name}-{unit}"
    # What the generated answers depend on; a log written under other settings is refused (before
    # the data or the model is loaded), not mixed in.
    log_settings = {"data": data, "model": model, "adapter": str(adapter) if adapter is not None else None,
                    "adapter_sha256": adapter_fingerprint(adapter), "unit": unit, "split": split, "limit": limit, "seed": seed,
                    "shots": shots, **({} if cue_space else {"cue_space": False})}  # logs from before the option stay valid
    log = GenerationLog.in_folder(out, log_settings)
    log.check()
    dev = resolve_device(device)
    task = AttributeTask(data=data, unit=unit, batch_size=batch_size, strict_json=strict_json, shots=shots, progress=progress,
                         cue_space=cue_space)
    lm, tokenizer = load_finetuned(model, adapter, device=dev) if adapter is not None else load_model(model, device=dev)
    earlier = log.seconds()  # the sittings before this one, when it resumes
    start = time.perf_counter()
    metrics, rows = task.predict(lm, tokenizer, split=split, limit=limit, seed=seed, log=log)
    wall = earlier + time.perf_counter() - start
    settings = {"data": data, "model": model, "adapter": adapter, "unit": unit, "split": split, "limit": limit,
                "seed": seed, "strict_json": strict_json, "shots": shots, "cue_space": cue_space, "device": dev, "wall_s": wall}
    if (record := load_training_record(adapter) if adapter is not None else None) is not None:
        settings["train_seed"] = record["seed"]  # the adapter's training seed: what `compare` lists as the run's seed
    write_predictions(out / "predictions.jsonl", rows)  # and per_unit.jsonl, which the interval resamples
    metrics["f1_ci95"] = list(metric_interval(load_evaluation(out), "f1")[1:])
    write_json(out / "metrics.json", {"settings": settings, "metrics": metrics})
    log.discard()  # the answers are in predictions.jsonl now
    return AttributesEvaluation(metrics, rows, out, name, wall)


@dataclass
class AttributesFinetune:
    result: object  # leantune.train.FinetuneResult
    units: list
    out: Path
    metrics: dict | None  # test metrics of the adapter (None when not evaluated)


def check_limits(train_limit: int | None, valid_limit: int | None, eval_limit: int | None) -> None:
    """``finetune_attributes``' unit counts: at least 1 training unit, 0 or more validation and test products."""
    for name, value, least in (("train_limit", train_limit, 1), ("valid_limit", valid_limit, 0), ("eval_limit", eval_limit, 0)):
        if value is not None and value < least:
            raise ParameterError(name, value, f"must be at least {least}")


def attribute_finetune_config(model: str, *, unit: str | None = None, **settings):
    """The ``FinetuneConfig`` of ``model``'s default recipe (``tasks.attributes.default_recipe``) and the unit
    it trains on. Each recipe setting (unit, epochs, lr, r, alpha, target_modules, batch_size; eval_every for
    the recipe's save_every) that is not None overrides the recipe's; the others (micro_batch_size, seed,
    device, ...) go to the config as given."""
    from ..tasks.attributes import AttributeTask, default_recipe
    from ..tasks.base import apply_recipe
    from ..train import FinetuneConfig

    recipe = default_recipe(model)
    return FinetuneConfig(train_on_inputs=AttributeTask.train_on_inputs, **apply_recipe(recipe, settings)), unit or recipe["unit"]


def finetune_attributes(cfg, data: str = "oa-mine", model: str = "smollm2", *, unit: str | None = None,
                        train_limit: int | None = None, valid_limit: int = 0, eval_limit: int | None = 100,
                        out: Path | None = None, progress: bool = True) -> AttributesFinetune:
    """LoRA fine-tuning (``cfg``: a ``FinetuneConfig``; its seed draws the ``train_limit`` units) on the
    training units, early-stopped on ``valid_limit`` validation products when given, then evaluated
    on ``eval_limit`` seeded test products (0 or None: not evaluated)."""
    from ..data.units import training_subset
    from ..models.llm import load_tokenizer
    from ..tasks.attributes import AttributeTask, default_recipe, write_predictions
    from ..train import finetune, load_finetuned

    check_limits(train_limit, valid_limit, eval_limit)
    unit = unit or default_recipe(model)["unit"]
    task = AttributeTask(data=data, unit=unit, progress=progress)
    pool = task.train_pool()
    units = training_subset(pool, None if train_limit is None or train_limit >= len(pool) else train_limit, cfg.seed)
    out = Path(out) if out is not None else Path("runs") / f"attributes-{unit}-n{len(units)}-s{cfg.seed}"
    write_json(out / "subset.json", {"size": len(units), "seed": cfg.seed, "units": units})
    tokenizer = load_tokenizer(model)
    train = task.train_examples(units, tokenizer)
    valid = task.valid_examples(tokenizer, limit=valid_limit, seed=cfg.seed) if valid_limit else None
    result = finetune(model, train, valid, out / "train", cfg, progress=progress)
    metrics = None
    if eval_limit and result.adapter_dir is not None:
        lm, tok = load_finetuned(model, result.adapter_dir, device=cfg.device)
        metrics, rows = task.predict(lm, tok, "test", limit=eval_limit, seed=0)
        write_json(out / "metrics.json", {"settings": {"data": data, "model": model, "unit": unit, "limit": eval_limit, "seed": 0},
                                          "metrics": metrics})
        write_predictions(out / "predictions.jsonl", rows)
    return AttributesFinetune(result, units, out, metrics)
