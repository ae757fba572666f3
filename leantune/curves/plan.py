"""What a learning curve will cost, before it runs (``leantune curve --plan``).

``plan_curve`` counts the runs still missing from the curve folder, the optimizer steps they still
need (an interrupted run resumes from its newest checkpoint) and their test evaluations;
``measure_costs`` times a few optimizer steps of the curve's own recipe and the evaluation of a few
test units on this machine; ``CurvePlan.lines`` turns both into the core-hours the missing runs
need. The estimate is linear in steps and evaluated units; steps timed now leave out model loading and
the first step's warm-up, and a few timed units stand for all of them, so read it to the nearest factor of two.
Both costs are priced from the fine-tuned runs the folder already holds where they ran on this machine
with this many torch threads (``finished_costs``): their recorded seconds per optimizer step and per
evaluated unit, measured while they ran, which a few steps timed now cannot match when other work shares
the machine. Before any such run the steps are timed here (and the plan says when the machine was busy
while they were), and the evaluation on the base model, whose answers run longer than a fine-tuned
model's (an upper estimate).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ParameterError
from .runner import CurveConfig, _check_settings, finetune_config, make_task, run_dir, run_plan


@dataclass(frozen=True)
class PlannedRun:
    size: int  # 0: the zero-shot evaluation
    seed: int | None
    steps: int  # optimizer steps (0 for zero-shot)
    cached: bool  # its result is already in the curve folder
    checkpointed: int = 0  # of ``steps``, those an interrupted run has checkpointed and resumes from (missing runs only)


@dataclass
class CurvePlan:
    runs: list[PlannedRun]
    batch_size: int
    eval_units: int | None  # test units per evaluation (None: the task cannot say before running)
    schedule: str  # ``CurveConfig.schedule_label()``

    @property
    def missing(self) -> list[PlannedRun]:
        return [r for r in self.runs if not r.cached]

    @property
    def train_steps(self) -> int:
        """Optimizer steps the missing runs still need (less those interrupted runs have checkpointed)."""
        return sum(r.steps - r.checkpointed for r in self.missing)

    @property
    def checkpointed_steps(self) -> int:
        return sum(r.checkpointed for r in self.missing)

    def estimate_s(self, costs: dict) -> float | None:
        """Seconds of the missing runs at ``costs`` (``measure_costs``), or None without an evaluation size."""
        if self.eval_units is None:
            return None
        return self.train_steps * costs["s_per_step"] + len(self.missing) * self.eval_units * costs["s_per_eval_unit"]

    def lines(self, costs: dict | None = None) -> list[str]:
        """The plan as printed lines: one per size, totals and, with ``costs``, the estimate."""
        by_size: dict[int, list[PlannedRun]] = {}
        for r in self.runs:
            by_size.setdefault(r.size, []).append(r)
        out = [self.schedule, "", "| size | runs (missing) | optimizer steps each | examples each |", "|---:|---:|---:|---:|"]
        for size, runs in sorted(by_size.items()):
            missing = sum(not r.cached for r in runs)
            steps = runs[0].steps
            label = "0 (zero-shot)" if size == 0 else str(size)
            out.append(f"| {label} | {len(runs)} ({missing}) | {steps} | {steps * self.batch_size} |")
        units = "?" if self.eval_units is None else str(self.eval_units)
        resumed = [r for r in self.missing if r.checkpointed]
        out += ["", f"missing: {len(self.missing)} of {len(self.runs)} runs, {self.train_steps:,} optimizer steps of "
                f"{self.batch_size}, {len(self.missing)} evaluations of {units} test units"]
        if resumed:
            runs = ", ".join(f"size {r.size} seed {r.seed} at step {r.checkpointed} of {r.steps}" for r in resumed)
            out.append(f"checkpointed: {self.checkpointed_steps:,} steps of interrupted runs, which resume from them ({runs})")
        if costs:
            where = f"measured here ({costs['threads']} torch thread(s), load average {costs['load_avg']})" if costs.get("timed", True) else (
                f"priced from the folder's runs ({costs['threads']} torch thread(s), as this process has)")
            out.append(f"{where}: "
                       f"{costs['s_per_step']:.1f} s per optimizer step ({costs.get('step_source', 'timed here')}), "
                       f"{costs['s_per_eval_unit']:.1f} s per test unit ({costs.get('eval_source', 'timed here')})")
            out += [costs[k] for k in ("busy", "hint") if costs.get(k)]
            total = self.estimate_s(costs)
            if total is None:
                out.append("estimate: the task cannot count its whole test split before running; pass --eval-limit")
            else:
                train = self.train_steps * costs["s_per_step"]
                out.append(f"estimate: {_duration(total)} for one process of {costs['threads']} torch thread(s) "
                           f"({_duration(train)} training, {_duration(total - train)} evaluation)")
        return out


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def plan_curve(cfg: CurveConfig, out: str | Path, task=None) -> CurvePlan:
    """The runs of ``cfg``, which of them ``out`` already holds and how far its interrupted ones got;
    nothing is trained or loaded."""
    from ..train import checkpointed_steps

    out = Path(out)
    task = task or make_task(cfg.task, cfg.task_options)
    _check_settings(out, cfg, write=False)  # a folder of other runs is refused, as the curve itself would
    runs = []
    for size, seed in run_plan(cfg):
        folder = run_dir(out, size, seed)
        cached = (folder / "result.json").is_file()
        steps = 0 if seed is None else cfg.steps_for(size)
        done = 0 if cached or seed is None else min(checkpointed_steps(folder / "train"), steps)
        runs.append(PlannedRun(size, seed, steps, cached, done))
    return CurvePlan(runs, cfg.batch_size, _eval_units(cfg, task), cfg.schedule_label())


def _eval_units(cfg: CurveConfig, task) -> int | None:
    """Test units each evaluation of ``cfg`` answers: ``--eval-limit`` capped at the test split's size
    (None when the task cannot count its test split before running and no limit is set)."""
    size = task.eval_size("test")
    if size is None:
        return cfg.eval_limit
    return min(cfg.eval_limit, size) if cfg.eval_limit else size


def finished_costs(out: str | Path, eval_units: int | None, device: str = "cpu") -> dict:
    """What the fine-tuned runs in curve folder ``out`` cost where they ran on this machine
    (``machine_summary``) with as many torch threads as this process has: ``{"s_per_step": (median
    seconds per optimizer step, runs), "s_per_eval_unit": (median seconds per test unit, runs)}``, each
    key present only where some run gives it (a step: the run's training seconds over all its sittings,
    model loading included, over its steps; an evaluation: on ``eval_units`` units). Runs made before
    runs recorded their machine count as made elsewhere. ``"other_threads"``: {thread count: runs} of
    the fine-tuned runs made on this machine with another thread count (present only when there are some)."""
    import statistics

    from ..device import machine_summary, resolve_device, torch_threads
    from ..io import read_json

    here, threads = machine_summary(resolve_device(device), threads=False), torch_threads()
    per_step, per_unit, other = [], [], {}
    for path in sorted(Path(out).glob("runs/size*-seed*/result.json")):
        row = read_json(path)
        if row.get("machine") != here or not row.get("size"):
            continue
        if row.get("threads") != threads:
            if isinstance(row.get("threads"), int):
                other[row["threads"]] = other.get(row["threads"], 0) + 1
            continue
        train = row.get("train") or {}
        if train.get("steps") and train.get("wall_s"):
            per_step.append(float(train["wall_s"]) / int(train["steps"]))
        if eval_units and row.get("eval_s"):
            per_unit.append(float(row["eval_s"]) / eval_units)
    found = {}
    if per_step:
        found["s_per_step"] = (statistics.median(per_step), len(per_step))
    if per_unit:
        found["s_per_eval_unit"] = (statistics.median(per_unit), len(per_unit))
    if other:
        found["other_threads"] = dict(sorted(other.items()))
    return found


def measure_costs(cfg: CurveConfig, task=None, steps: int = 3, eval_units: int = 2, log=print,
                  out: str | Path | None = None) -> dict:
    """Seconds per optimizer step of ``cfg``'s recipe and per evaluated test unit. Each comes from the
    fine-tuned runs curve folder ``out`` holds, where it has some made on this machine with these torch
    threads (``finished_costs``); otherwise it is timed here in a throw-away folder: the median of
    ``steps`` optimizer steps after the first, on random training units, and the evaluation of
    ``eval_units`` test units on the base model after one unit of warm-up (a base model's answers often
    run longer than a fine-tuned one's, so that part is an upper estimate). ``step_source`` and
    ``eval_source`` say which, ``timed`` whether either was timed now; ``busy`` (when present) warns
    that the machine had more work than cores while steps were timed here."""
    import torch

    from ..device import load_average, resolve_device
    from ..models.llm import load_model

    if steps < 2:
        raise ParameterError("steps", steps, "at least 2 (the first optimizer step is a warm-up)")
    if eval_units < 1:
        raise ParameterError("eval_units", eval_units, "at least 1")
    task = task or make_task(cfg.task, cfg.task_options)
    finished = finished_costs(out, _eval_units(cfg, task), cfg.device) if out is not None else {}
    costs: dict = {"threads": torch.get_num_threads(), "timed": not {"s_per_step", "s_per_eval_unit"} <= finished.keys()}
    if "s_per_step" in finished:
        costs["s_per_step"], n = finished["s_per_step"]
        costs["step_source"] = f"the median of {n} fine-tuned run(s) in the folder, trained on this machine"
    else:
        before = load_average()
        costs["s_per_step"], costs["step_source"] = _time_steps(cfg, task, steps, log), f"{steps} steps timed here"
        busy = busy_warning(before, costs["threads"])
        if busy:
            costs["busy"] = busy
    if "s_per_eval_unit" in finished:
        costs["s_per_eval_unit"], n = finished["s_per_eval_unit"]
        costs["eval_source"] = f"evaluation: the median of {n} fine-tuned run(s) in the folder, evaluated on this machine"
    else:
        log(f"timing the evaluation of {eval_units + 1} test units")
        model, tok = load_model(cfg.model, device=resolve_device(cfg.device))
        task.evaluate_units(model, tok, split="test", limit=1, seed=cfg.eval_seed)  # warm-up
        start = time.perf_counter()
        task.evaluate_units(model, tok, split="test", limit=eval_units, seed=cfg.eval_seed + 1)
        costs["s_per_eval_unit"] = (time.perf_counter() - start) / eval_units
        costs["eval_source"] = ("evaluation timed on the base model, whose answers run longer than a fine-tuned "
                                "model's: an upper estimate")
    if costs["timed"] and finished.get("other_threads"):
        made = ", ".join(f"{n} with {t} thread(s)" for t, n in finished["other_threads"].items())
        t = max(finished["other_threads"], key=finished["other_threads"].get)
        costs["hint"] = (f"the folder's runs made on this machine ran with other thread counts ({made}): run the plan with "
                         f"OMP_NUM_THREADS={t} to price from them, timing nothing")
    return {**costs, "load_avg": load_average()}


def _time_steps(cfg: CurveConfig, task, steps: int, log=print) -> float:
    """The median seconds of ``steps`` optimizer steps of ``cfg``'s recipe after the first (a warm-up), on
    random training units, trained in a throw-away folder."""
    import statistics
    from dataclasses import replace

    import numpy as np
    from transformers import TrainerCallback

    from ..models.llm import load_tokenizer
    from ..train import finetune

    pool = task.train_pool()
    rng = np.random.default_rng(cfg.seed)
    units = [pool[i] for i in rng.choice(len(pool), size=min(len(pool), steps * cfg.batch_size), replace=False)]
    train = task.train_examples(units, load_tokenizer(cfg.model))
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not stamps:
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    ft = replace(finetune_config(cfg, task, steps * cfg.batch_size, cfg.seed), max_steps=steps)
    log(f"timing {steps} optimizer steps of {cfg.batch_size} ({cfg.model})")
    with tempfile.TemporaryDirectory(prefix="leantune-plan-") as tmp:
        finetune(cfg.model, train, None, Path(tmp) / "train", ft, progress=False, callbacks=[Clock()])
    step_s = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(step_s[1:])


def busy_warning(load_avg: list[float], threads: int, cpus: int | None = None) -> str | None:
    """A line warning that timings taken now overstate an idle machine's: None unless the 1-minute
    ``load_avg`` taken before timing, plus the ``threads`` the timing adds, passes the ``cpus`` (default:
    this machine's) by more than half a core."""
    import os

    cpus = cpus or os.cpu_count() or 1
    if not load_avg or load_avg[0] + threads <= cpus + 0.5:
        return None
    return (f"busy: load average {load_avg[0]} before timing, plus {threads} thread(s) timed, on {cpus} CPU(s); "
            f"the step time overstates what an idle machine (or one thread a core) does: read the estimate as an upper bound")
