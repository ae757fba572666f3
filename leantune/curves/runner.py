"""Learning curves: one LoRA adapter per (subset size, seed), each evaluated on the same test subset.

Folder layout (every file written atomically; re-running finishes only what is missing)::

    <out>/curve.json                 settings that fix the runs (a mismatch is refused)
    <out>/runs/size00000/result.json zero-shot (the base model; one run for all seeds)
    <out>/runs/size00025-seed0/      subset.json, adapter (finetune output), result.json
    <out>/results.csv, results.json  the table, the fit and the saturation point
    <out>/curve.png, per_attribute.png
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import LeantuneError, ParameterError
from ..io import claim_lock, read_json, write_json
from ..io import refuse_other_settings
from ..device import load_average, machine_summary, resolve_device, torch_threads
from ..tasks.base import DEFAULT_CURVE_SIZES as DEFAULT_SIZES
from ..tasks.base import apply_recipe
from ..train.config import ALL_LINEAR, FinetuneConfig


@dataclass
class CurveConfig:
    """Settings of a learning curve (``learning_curve``): task, model, subset sizes and seeds, training, fit."""

    task: str = "attributes"
    task_options: dict = field(default_factory=dict)  # passed to the task class, e.g. {"data": "oa-mine", "unit": "product"}
    model: str = "smollm2"
    sizes: tuple = DEFAULT_SIZES
    seeds: int = 3  # run seeds are seed, seed+1, ...
    seed: int = 0
    method: str = "random"  # how each subset is chosen: a method of ``leantune.pipelines.units`` (random nests)
    selector: str | None = None  # for a scored method: coverage, topk or stratified (None: the method's default)
    metric: str | None = None  # None: the task's primary metric
    eval_limit: int | None = 100  # test units evaluated (a seeded subset, the same for every run)
    eval_seed: int = 0
    valid_limit: int = 0  # validation units for early stopping; 0: none (fixed budget, cheaper)
    # Training budget (`schedule`): "epochs" trains `epochs` passes over each subset (more data, more
    # steps; Oliver & Wang's setting), optionally at least `min_steps` optimizer steps (a floor that makes
    # the smallest sizes a fixed-compute comparison); "steps" trains the same `steps` optimizer steps at
    # every size (data varies, compute does not; default: what the largest size gets under `epochs`).
    schedule: str = "epochs"
    epochs: float = 1.0
    min_steps: int = 0
    steps: int | None = None
    # The LoRA recipe every run trains with (``FinetuneConfig``); per run the curve sets max_steps (the
    # schedule), seed, device and the task's train_on_inputs and cutoff_len. bf16=True: autocast in
    # training and effort scoring (1.7x faster on this AMX CPU); evaluation stays fp32.
    finetune: FinetuneConfig = field(default_factory=lambda: curve_recipe())
    device: str = "cpu"
    gain_threshold: float = 0.01
    ceiling: float | None = 1.0  # the fitted plateau's upper bound (accuracy, F1, recall <= 1); None: unbounded
    bootstrap: int = 1000
    progress: bool = True

    # Settings that change what a run produces; sizes/seeds may grow and the analysis may change.
    RUN_KEYS = (
        "task", "task_options", "model", "method", "selector", "eval_limit", "eval_seed", "valid_limit", "schedule", "epochs",
        "min_steps", "steps",
    )
    # The fine-tuning settings that change a run (stored flat in curve.json, as before nesting).
    FINETUNE_RUN_KEYS = ("lr", "batch_size", "micro_batch_size", "r", "alpha", "dropout", "target_modules", "warmup_ratio",
                         "weight_decay", "lr_scheduler", "max_grad_norm", "group_by_length", "early_stopping_patience")
    # Keys added after curve folders already existed: their value there is this default.
    RUN_KEY_DEFAULTS = {"bf16": False, "schedule": "epochs", "steps": None, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
                        "warmup_ratio": 0.0, "weight_decay": 0.0, "lr_scheduler": "linear", "max_grad_norm": 1.0,
                        "group_by_length": False, "early_stopping_patience": 5}
    SCHEDULES = ("epochs", "steps")

    def __post_init__(self):
        from ..pipelines.units import check_method

        self.selector = check_method(self.method, self.selector, self.task)
        if isinstance(self.finetune, dict):  # e.g. read back from curve.json
            self.finetune = FinetuneConfig.from_dict({**self.finetune, "target_modules": tuple(self.finetune.get("target_modules", ()))})
        self.sizes = tuple(sorted({int(s) for s in self.sizes}))
        if not self.sizes or self.sizes[0] < 0:
            raise ParameterError("sizes", list(self.sizes), "need non-negative sizes")
        if self.seeds < 1:
            raise ParameterError("seeds", self.seeds, "need at least one seed")
        if self.gain_threshold <= 0:
            raise ParameterError("gain_threshold", self.gain_threshold, "must be positive")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ParameterError("eval_limit", self.eval_limit, "must be at least 1 (or omitted for the whole test split)")
        if self.ceiling is not None and not (math.isfinite(self.ceiling) and self.ceiling > 0):
            raise ParameterError("ceiling", self.ceiling, "must be a positive upper bound of the metric (0: unbounded)")
        if not math.isfinite(self.gain_threshold):
            raise ParameterError("gain_threshold", self.gain_threshold, "must be a finite number")
        if self.schedule not in self.SCHEDULES:
            raise ParameterError("schedule", repr(self.schedule), f"choose one of {', '.join(self.SCHEDULES)}")
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ParameterError("epochs", self.epochs, "must be a positive number")
        if self.min_steps < 0:
            raise ParameterError("min_steps", self.min_steps, "must be at least 0")
        if self.schedule == "steps":
            if self.min_steps:
                raise ParameterError("min_steps", self.min_steps, "only with schedule 'epochs' (schedule 'steps' trains the same steps at every size)")
            if self.steps is None:
                self.steps = max(1, math.ceil(self.epochs * max(self.sizes) / self.batch_size))
            if self.steps < 1:
                raise ParameterError("steps", self.steps, "must be at least 1")
        elif self.steps is not None:
            raise ParameterError("steps", self.steps, "only with schedule 'steps' (schedule 'epochs' trains a number of epochs)")

    def run_settings(self) -> dict:
        settings = {k: _plain(getattr(self, k)) for k in self.RUN_KEYS}
        settings.update({k: _plain(getattr(self.finetune, k)) for k in self.FINETUNE_RUN_KEYS})
        settings["bf16"] = self.bf16
        settings["task_options"] = task_options_key(self.task, self.task_options)
        return settings

    @property
    def bf16(self) -> bool:
        """bf16 autocast in training and effort scoring (``finetune.bf16``)."""
        return bool(self.finetune.bf16)

    @property
    def batch_size(self) -> int:
        return self.finetune.batch_size

    def steps_for(self, size: int) -> int:
        """Optimizer steps of the run at ``size`` units under the schedule."""
        if self.schedule == "steps":
            return self.steps
        return max(math.ceil(self.epochs * size / self.batch_size), self.min_steps, 1)

    def schedule_label(self) -> str:
        """The compute mode in words, for plots and reports."""
        if self.schedule == "steps":
            return f"schedule steps: {self.steps} optimizer steps of {self.batch_size} at every size"
        floor = f", at least {self.min_steps} steps" if self.min_steps else ""
        return f"schedule epochs: {self.epochs:g} epoch(s) per size{floor} (batch {self.batch_size})"


def curve_recipe(**overrides) -> FinetuneConfig:
    """The curve's default LoRA recipe: short runs (lr 1e-3, batch 8 in micro-batches of 4, r 8 / alpha 16 on
    q/v; 3e-4 had not learned the values after 25 steps, benchmarks/results/curve*.md); ``overrides`` change fields."""
    return FinetuneConfig(**{"r": 8, "alpha": 16, "lr": 1e-3, "batch_size": 8, "micro_batch_size": 4, "device": "cpu", **overrides})


RECIPES = ("curve", "model")  # CurveRecipe.source: where a curve's LoRA recipe comes from


@dataclass(frozen=True)
class CurveRecipe:
    """A curve's training recipe (``resolve_recipe``): the per-run ``FinetuneConfig``, epochs per size,
    the task's ``unit`` option (None: the task's default) and where the recipe came from."""

    finetune: FinetuneConfig
    epochs: float
    unit: str | None
    source: str  # "curve" (curve_recipe's short runs) or "model" (the task's recipe for the model)
    model: str = ""
    chosen_on: str | None = None  # source 'model': the unit the recipe was chosen on, when the task has units

    def describe(self) -> str:
        f = self.finetune
        modules = "all linear layers" if set(f.target_modules) == set(ALL_LINEAR) else "/".join(f.target_modules)
        origin = f"{self.model}'s default fine-tuning recipe" if self.source == "model" else "the curve's short-run recipe"
        unit = f", unit {self.unit}" if self.unit else ""
        if self.chosen_on and self.unit != self.chosen_on:
            unit += f" (the recipe was chosen on {self.chosen_on} units)"
        return (f"recipe ({origin}, then the flags given){unit}, {self.epochs:g} epoch(s), lr {f.lr:g}, "
                f"batch {f.batch_size}, LoRA r {f.r} / alpha {f.alpha} on {modules}")


def resolve_recipe(task: str, model: str, recipe: str = "curve", *, unit: str | None = None, epochs: float | None = None,
                   save_every: int | None = None, **finetune) -> CurveRecipe:
    """The LoRA recipe, epochs and unit a curve trains with. ``recipe`` 'curve': ``curve_recipe``'s short runs,
    1 epoch, the task's default unit; 'model': the task's default fine-tuning recipe for ``model``
    (``Task.model_recipe``; for attributes, what ``leantune attributes finetune`` trains with), its unit,
    epochs and checkpoint cadence included. Every setting given (not None) overrides the recipe's:
    ``unit``, ``epochs``, ``save_every`` (``eval_every``) and the ``FinetuneConfig`` fields in ``finetune``."""
    if recipe not in RECIPES:
        raise ParameterError("recipe", repr(recipe), f"choose one of {', '.join(RECIPES)}")
    if recipe == "curve":
        given = {key: value for key, value in finetune.items() if value is not None}
        return CurveRecipe(curve_recipe(eval_every=save_every, **given), 1.0 if epochs is None else epochs, unit, recipe, str(model))
    base = task_class(task).model_recipe(str(model))
    if base is None:
        raise ParameterError("recipe", repr(recipe), f"task {task!r} has no per-model recipe; use 'curve' and set the LoRA flags")
    merged = apply_recipe(base, {**finetune, "epochs": epochs, "eval_every": save_every})
    per_size = merged.pop("epochs")  # the curve's, not each run's (a run's budget is set per size)
    settings = {key: value for key, value in merged.items() if value is not None}
    return CurveRecipe(curve_recipe(**settings), per_size, unit or base.get("unit"), recipe, str(model), base.get("unit"))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def task_class(name: str):
    import importlib
    import pkgutil

    from .. import tasks
    from ..tasks.base import TASKS

    if name not in TASKS:  # task modules register themselves on import
        for info in pkgutil.iter_modules(tasks.__path__):
            importlib.import_module(f"{tasks.__name__}.{info.name}")
    return TASKS.get(name)


def task_default_sizes(task) -> tuple[int, ...]:
    """The curve sizes a task instance proposes (``Task.default_sizes``)."""
    return tuple(task.default_sizes())


def default_sizes(name: str, options: dict) -> tuple[int, ...]:
    """The curve sizes the registered task ``name`` proposes for these options."""
    return task_default_sizes(make_task(name, options))


def task_options_key(name: str, options: dict) -> dict:
    """The task options that change results: without progress switches and without values equal to
    the task's defaults, so ``--data oa-mine`` and no ``--data`` share a curve folder."""
    import inspect

    try:
        params = inspect.signature(task_class(name)).parameters
    except LeantuneError:  # unknown task: refused later, where it is built
        params = {}
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {k: v for k, v in options.items() if k != "progress" and not (k in defaults and defaults[k] == v)}


def make_task(name: str, options: dict):
    """Instantiate a registered task with the options its constructor accepts."""
    import inspect

    cls = task_class(name)
    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in options if k not in params and not takes_any]
    if unknown:
        raise LeantuneError(f"task {name!r} does not take option(s) {', '.join('--' + k for k in unknown)}")
    return cls(**options)


def check_metric(task, metric: str) -> None:
    """Refuse a ``--metric`` the task's evaluation never returns, before anything is trained.
    Per-unit-group keys (``attribute_f1/<name>``) depend on the data and are checked after
    the first evaluation instead."""
    if "/" in metric:
        return
    known = list(task.metric_names())
    if metric not in known:
        raise ParameterError("metric", repr(metric), f"not among the {task.name} task's metrics ({', '.join(known)})")


def run_dir(out: Path, size: int, seed: int | None) -> Path:
    return out / "runs" / (f"size{size:05d}" if seed is None else f"size{size:05d}-seed{seed}")


def _check_settings(out: Path, cfg: CurveConfig, write: bool = True) -> None:
    """Refuse a folder whose runs were made with other settings; record these (``write``) where the
    folder has none yet, or lacks some it predates. A folder's ``curve.json`` is left as it is
    otherwise, so processes filling one folder with other sizes or seeds do not rewrite it in turn
    (its ``config`` is the call that first recorded the settings)."""
    path = out / "curve.json"
    settings = cfg.run_settings()
    stored = read_json(path).get("run_settings", {}) if path.exists() else None
    if stored is not None:
        old = {**cfg.RUN_KEY_DEFAULTS, **stored}
        if "selector" not in old:  # folders from before --selector: scored methods took their top-k units
            old["selector"] = {"random": "random", "kcenter": "kcenter"}.get(old.get("method"), "topk")
        if "task_options" in old:
            old["task_options"] = task_options_key(cfg.task, old["task_options"])
        shared = [k for k in settings if k in old]  # a setting the folder predates is not compared
        refuse_other_settings({k: old[k] for k in shared}, {k: settings[k] for k in shared}, "a learning curve", out,
                              "use another output folder (or the same settings) so cached runs stay comparable")
    if write and stored != settings:
        write_json(path, {"run_settings": settings, "config": asdict(cfg)})


def run_plan(cfg: CurveConfig) -> list[tuple[int, int | None]]:
    """(size, seed) of every run of ``cfg`` in running order: zero-shot first (seed None, once), then
    each seed's sizes."""
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    plan = [(0, None)] if 0 in cfg.sizes else []
    return plan + [(n, s) for s in seeds for n in cfg.sizes if n > 0]


def finetune_config(cfg: CurveConfig, task, size: int, seed: int) -> FinetuneConfig:
    """``cfg.finetune`` for the run at ``size`` units: the schedule's steps (no validation set means no
    early stopping), the run's seed and device, and the task's loss mask and cutoff."""
    from dataclasses import replace

    return replace(cfg.finetune, max_steps=cfg.steps_for(size), train_on_inputs=task.train_on_inputs, cutoff_len=task.cutoff_len,
                   seed=seed, device=resolve_device(cfg.device))


def _evaluate(task, model, tokenizer, cfg: CurveConfig, folder: Path, adapter: Path | None) -> tuple[dict, float]:
    """Test metrics and their seconds (earlier sittings included); the per-unit results go to
    ``folder/per_unit.jsonl`` (for ``leantune compare``) and, where the task keeps them, the judged
    answers to ``folder/predictions.jsonl`` (for ``leantune attributes errors``). Where the task logs its
    answers as they come (``Task.generation_log``), an interrupted evaluation resumes from them."""
    from ..evaluation.units import write_evaluation
    from ..train import adapter_fingerprint

    log = task.generation_log(folder, {"model": cfg.model, "adapter": adapter_fingerprint(adapter),
                                       "split": "test", "limit": cfg.eval_limit, "seed": cfg.eval_seed})
    earlier = log.seconds() if log is not None else 0.0
    start = time.perf_counter()
    metrics, rows, answers = task.evaluate_answers(model, tokenizer, split="test", limit=cfg.eval_limit, seed=cfg.eval_seed, log=log)
    write_evaluation(folder, rows, answers)
    if log is not None:
        log.discard()  # its answers are written out now
    return metrics, earlier + time.perf_counter() - start


def run_zero_shot(task, cfg: CurveConfig, out: Path) -> dict:
    from ..models.llm import load_model

    model, tokenizer = load_model(cfg.model, device=resolve_device(cfg.device))
    metrics, eval_s = _evaluate(task, model, tokenizer, cfg, run_dir(out, 0, None), None)
    return {"size": 0, "seed": None, "status": "zero-shot", "metrics": metrics, "eval_s": eval_s, "train": None}


def run_one(task, cfg: CurveConfig, out: Path, size: int, seed: int, units: list[str]) -> dict:
    from ..models.llm import load_tokenizer
    from ..train import finetune, load_finetuned

    folder = run_dir(out, size, seed)
    write_json(folder / "subset.json", {"size": size, "seed": seed, "method": cfg.method, "units": units})
    tokenizer = load_tokenizer(cfg.model)
    train = task.train_examples(units, tokenizer)
    valid = _valid_examples(task, tokenizer, cfg, units) if cfg.valid_limit else None
    ft_cfg = finetune_config(cfg, task, size, seed)
    result = finetune(cfg.model, train, valid, folder / "train", ft_cfg, progress=cfg.progress)
    train_info = {k: _plain(getattr(result, k, None)) for k in ("status", "steps", "total_steps", "tokens_seen", "best_valid_loss", "wall_s", "reason")}
    train_info["adapter_dir"] = str(result.adapter_dir) if result.adapter_dir else None
    row = {"size": size, "seed": seed, "status": result.status, "train": train_info, "finetune": ft_cfg.to_dict()}
    if result.adapter_dir is None:  # diverged before any usable checkpoint: nothing to evaluate
        return {**row, "metrics": {}, "eval_s": 0.0}
    model, tokenizer = load_finetuned(cfg.model, result.adapter_dir, device=resolve_device(cfg.device))
    metrics, eval_s = _evaluate(task, model, tokenizer, cfg, folder, result.adapter_dir)
    return {**row, "metrics": metrics, "eval_s": eval_s}


def curve_subsets(task, cfg: CurveConfig, out: Path, pool: list[str], seed: int,
                  log: Callable[[str], None] | None = None) -> dict[int, list[str]]:
    """The units of each size's run for ``seed``, through the pruning path of every text task
    (``leantune.pipelines.units``): random draws nest (``training_subset``); a scored method's
    columns are computed once per seed (with the run's ``seed``, so each seed repeats the whole
    method, scoring included, and a run is the same whichever process fills it), cached in ``out``,
    and each size selects from them (nested only when the selector is greedy, as k-center and top-k are)."""
    from ..pipelines.units import select_units

    scores = curve_scores(task, cfg, out, seed, log=log)
    return {n: [pool[i] for i in select_units(scores, len(pool), cfg.method, n, seed, cfg.selector)] for n in cfg.sizes if n > 0}


def curve_scores(task, cfg: CurveConfig, out: Path, seed: int | None = None,
                 log: Callable[[str], None] | None = None) -> dict:
    """``score_units`` for the curve's method with ``seed`` (default ``cfg.seed``), cached as
    ``out/scores-<column>[-bf16]-seed<seed>.safetensors`` (``-bf16``: gradients under bf16 autocast,
    for effort and gradient influence). Processes filling one folder score a seed once: the one
    scoring holds ``<cache>.lock`` and the others wait for its file (``log`` says so)."""
    from safetensors.numpy import load_file, save_file

    from ..io import atomic_path, hold_lock
    from ..pipelines.units import UNIT_METHODS, score_units

    column = UNIT_METHODS[cfg.method][0]
    if column is None:
        return {}
    bf16 = cfg.bf16 and column in ("effort", "gradient_influence")  # their LoRA gradients are taken under bf16 autocast
    seed = cfg.seed if seed is None else seed
    path = out / f"scores-{column}{'-bf16' if bf16 else ''}-seed{seed}.safetensors"
    if path.is_file():
        return {column: load_file(str(path))[column]}
    lock_file = path.with_name(path.name + ".lock")

    def waiting():
        log(f"seed {seed}: another process is scoring it (it holds {lock_file}); waiting for {path.name}")

    with hold_lock(lock_file, on_wait=waiting if log else None):
        if path.is_file():  # made by another process meanwhile
            return {column: load_file(str(path))[column]}
        options = {"device": cfg.device, **({"effort_dtype": "bfloat16"} if cfg.bf16 else {})}
        scores = score_units(task, cfg.method, cfg.model, seed, options, work_dir=out / f"scoring-seed{seed}",
                             progress=cfg.progress)
        with atomic_path(path) as tmp:
            save_file({column: np.ascontiguousarray(scores[column], dtype=np.float32)}, str(tmp))
        return scores


def _valid_examples(task, tokenizer, cfg: CurveConfig, units: list[str]):
    """The task's validation examples: of the subset's own units where the task ties them (DEALRec
    validates on the selected users), else a seeded sample of ``valid_limit``."""
    if task.validates_on_train_units:
        return task.valid_examples(tokenizer, unit_ids=units)[: cfg.valid_limit]
    return task.valid_examples(tokenizer, limit=cfg.valid_limit, seed=cfg.eval_seed)


@dataclass
class CurveRun:
    out: Path
    rows: list  # one result dict per finished run
    trained: int  # runs trained by this call
    cached: int  # runs read from the folder


RUN_LOCK = "run.lock"  # held in a run's folder while one process trains and evaluates it


def run_curve(cfg: CurveConfig, out: str | Path, task=None, log: Callable[[str], None] = print, cached_only: bool = False) -> CurveRun:
    """Train and evaluate every missing (size, seed) run; cached runs are read back. With
    ``cached_only`` nothing is trained: the curve is what the folder holds so far (e.g. while
    another process is still filling it). Processes filling one folder at once share the work: a
    run another process is making (it holds the run's ``RUN_LOCK``) is left out, not made twice."""
    out = Path(out)
    task = task or make_task(cfg.task, cfg.task_options)
    metric = cfg.metric or task.primary_metric
    check_metric(task, metric)
    pool = task.train_pool()
    too_big = [n for n in cfg.sizes if n > len(pool)]
    if too_big:
        raise ParameterError("sizes", too_big, f"larger than the {task.name} training pool ({len(pool)} units)")
    _check_settings(out, cfg, write=not cached_only)  # a report-only call leaves the folder as it found it
    plan = run_plan(cfg)
    rows, trained, cached = [], 0, 0
    subsets: dict[int, dict] = {}

    def read_back(path: Path, label: str, how: str) -> None:
        nonlocal cached
        rows.append(read_json(path))
        cached += 1
        log(f"{label}: {how}, {metric} {rows[-1]['metrics'].get(metric, float('nan')):.4f}")

    for k, (size, seed) in enumerate(plan, 1):
        path = run_dir(out, size, seed) / "result.json"
        label = f"[{k}/{len(plan)}] size {size}" + ("" if seed is None else f" seed {seed}")
        if path.exists():
            read_back(path, label, "cached")
            continue
        if cached_only:
            log(f"{label}: not in {out} yet; left out (--cached-only)")
            continue
        lock = claim_lock(path.parent / RUN_LOCK)
        if lock is None:
            log(f"{label}: another process is making it (it holds {path.parent / RUN_LOCK}); left out")
            continue
        try:
            if path.exists():  # finished by another process since it was looked for
                read_back(path, label, "made by another process meanwhile")
                continue
            start = time.perf_counter()
            if seed is None:
                log(f"{label}: zero-shot evaluation of {cfg.model}")
                row = run_zero_shot(task, cfg, out)
            else:
                if seed not in subsets:
                    subsets[seed] = curve_subsets(task, cfg, out, pool, seed, log=log)
                log(f"{label}: training {cfg.steps_for(size)} steps on {size} units")
                row = run_one(task, cfg, out, size, seed, subsets[seed][size])
            # A run resumed from a checkpoint trained partly in earlier sittings: its training time (the trainer's
            # wall_s) counts them all, so the run's own time is at least that plus its evaluation.
            earlier = ((row.get("train") or {}).get("wall_s") or 0) + (row.get("eval_s") or 0)
            row["wall_s"] = max(time.perf_counter() - start, earlier)
            row["method"] = cfg.method
            row["load_avg"] = load_average()  # timings on a shared CPU need this context, and the machine
            row["machine"] = machine_summary(resolve_device(cfg.device), threads=False)  # AMX or not: bf16 differs 20x
            row["threads"] = torch_threads()
            write_json(path, row)
        finally:
            lock.release()
        if row["metrics"] and metric not in row["metrics"]:  # fail at the first run, not after all of them
            have = ", ".join(sorted(k for k in row["metrics"] if "/" not in k))
            raise ParameterError("metric", repr(metric), f"not among the {task.name} task's metrics ({have})")
        trained += 1
        log(f"{label}: {metric} {row['metrics'].get(metric, float('nan')):.4f} ({row['wall_s']:.0f} s)")
        rows.append(row)
    return CurveRun(out, rows, trained, cached)
