"""``leantune curve``: data-efficiency learning curve with a saturating fit."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import MODEL_NAMES_HELP, PROCESSES_HELP, SEED_HELP, SEED_MAX, app

CURVE_HELP = (
    "Train one LoRA adapter per (subset size, seed) on nested subsets (random, or chosen by --method), evaluate each on the same "
    "test subset, fit metric(n) = a - b*n^(-c) and report the saturation point (with a bootstrap interval "
    "over seeds and test units), each size's step over the previous size and over zero-shot with a paired interval over the "
    "test units (steps.md: does adding data change the metric at all?), for attribute extraction each attribute's curve with "
    "its interval over the test products and its last step's paired interval, the steps picked out as clear of zero redrawn "
    "at the false-coverage-rate level 1 - alpha*R/m for the selection (per_attribute.md/.json, a panel per attribute "
    "in per_attribute.png), the results table (CSV + JSON) and plots (PNG). Every run is cached in --out; re-running "
    "finishes only what is missing.\n\n"
    "Compute mode (--schedule, named in the plot and results): 'epochs' trains --epochs passes over each "
    "subset (more data, more steps; --min-steps adds a floor, which makes the smallest sizes a fixed-compute "
    "comparison); 'steps' trains the same --steps optimizer steps at every size (data varies, compute does not).\n\n"
    "CPU cost (SmolLM2-135M, OA-Mine products at ~220 tokens each): one optimizer step of 8 products took "
    "11-13 s on a 2-core CPU with --bf16 and one thread per process, two processes side by side, and an "
    "evaluation of 50 test products ~2 min (benchmarks/results/curve-random.md); the default sizes at 1 epoch "
    "are 360 steps per seed (~1.2 h per core). To use both cores, run two processes into one --out, best with different "
    "--seed/--seeds (e.g. --seed 0 --seeds 2 and --seed 2 --seeds 1); a run one process is making (it holds the run's "
    "run.lock) is left out by the other, never made twice, and a seed's scores (--method effort etc.) are made once: the "
    "other process waits for them. Then the full command with "
    "--cached-only for the joint fit. Shrink it with --sizes/--seeds/--eval-limit, or use --device cuda "
    "for the full one (e.g. --eval-limit 0). --plan lists the missing runs and estimates their hours on this "
    "machine before anything is trained (from the folder's own runs made here, else a few timed steps); --save-every checkpoints long runs so a stopped "
    "curve loses at most that many steps.\n\n"
    "Examples:\n\n"
    "  leantune curve --sizes 0,25,50,100 --seeds 2 --eval-limit 50 --bf16\n\n"
    "  leantune curve --unit question --seeds 3 --bf16 --plan     # what it would cost here, nothing trained\n\n"
    "  leantune curve --model gemma3-270m --recipe model --bf16 --micro-batch-size 8   # Gemma's own recipe (products, 3 epochs)\n\n"
    "  leantune curve --unit question --sizes 0,500,2000,6500,13795 --schedule steps --steps 400\n\n"
    "  leantune curve --task recommendation --data games --sizes 0,256,1024 --seeds 2"
)


def _parse_sizes(text: str) -> list[int]:
    from ..errors import LeantuneError

    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise LeantuneError(f"--sizes {text!r}: expected comma-separated integers, e.g. 0,25,50,100") from None
    if not sizes:
        raise LeantuneError("--sizes is empty")
    return sizes


@app.command("curve", help=CURVE_HELP,
             short_help="Learning curve: a LoRA run per (subset size, seed), a fitted curve and the saturation point with its "
                        "interval.")
def curve(
    task: str = typer.Option("attributes", "--task", help="Registered task: 'attributes' (micro-F1) or 'recommendation' (recall@20)."),
    data: Optional[str] = typer.Option(None, "--data", help="Task data (default: the task's own, e.g. oa-mine / games)."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="Training-subset sizes in units; 0 = zero-shot base model. Default: the task's (attributes: 0,25,...,800,1288 products or 0,100,400,1600,3200,6500,13795 questions)."),
    seeds: int = typer.Option(3, "--seeds", help="Random subsets (and adapters) per size."),
    unit: Optional[str] = typer.Option(None, "--unit", help="attributes only: 'product' (default) or 'question' (one sample per attribute; pool 13,795)."),
    method: str = typer.Option("random", "--method", help="How each subset is chosen (the pruning path of `prune --task sft`): random (nested), effort, loss, gradient-influence or kcenter."),
    selector: Optional[str] = typer.Option(None, "--selector", help="For effort, loss or gradient-influence: coverage, topk or stratified (default: coverage for effort/loss, topk for gradient-influence)."),
    model: str = typer.Option("smollm2", "--model", help=f"Base model: {MODEL_NAMES_HELP} or a local folder."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric to fit (default: the task's primary metric; e.g. f1 for attributes)."),
    eval_limit: int = typer.Option(100, "--eval-limit", help="Test products/users evaluated per run (the same seeded subset for all runs); 0 = the whole test split."),
    schedule: str = typer.Option("epochs", "--schedule", help="Compute per size: 'epochs' (--epochs passes over each subset) or 'steps' (--steps optimizer steps at every size)."),
    recipe: str = typer.Option(
        "curve", "--recipe", help="Where the LoRA recipe's defaults come from: 'curve' (short runs: 1 epoch, lr 1e-3, batch 8, r 8 / "
        "alpha 16 on q/v) or 'model' (what `attributes finetune` trains --model with: its unit, epochs, lr, batch, LoRA modules "
        "and checkpoint cadence; gemma3-270m: products, 3 epochs, batch 8, r 8 / alpha 16 on all linear layers, a checkpoint "
        "every 20 steps). Any of --unit/--epochs/--lr/--batch-size/--r/--alpha/--target-modules/--save-every given overrides it."
    ),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="--schedule epochs: passes over each subset (also sets the default --steps). Default: the recipe's (curve: 1)."),
    min_steps: int = typer.Option(0, "--min-steps", help="--schedule epochs: at least this many optimizer steps, so small subsets still learn the answer format (0: none)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="--schedule steps: optimizer steps of every run (default: what the largest size gets under --epochs)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="LoRA learning rate. Default: the recipe's (curve: 1e-3, which suits these short runs; the BIGRec recipe uses 1e-4 over many epochs)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Effective batch size. Default: the recipe's (curve: 8)."),
    micro_batch_size: int = typer.Option(4, "--micro-batch-size", help="Examples per forward pass (on a GPU use the whole batch unless memory runs short: 3.8x as fast on an H200, benchmarks/results/gpu-step-time-h200)."),
    r: Optional[int] = typer.Option(None, "--r", help="LoRA rank. Default: the recipe's (curve: 8)."),
    alpha: Optional[int] = typer.Option(None, "--alpha", help="LoRA alpha. Default: the recipe's (curve: 16)."),
    target_modules: Optional[str] = typer.Option(None, "--target-modules", help="Comma-separated module names LoRA adapts, or 'all' (every linear layer; the attribute recipes'). Default: the recipe's (curve: q_proj,v_proj)."),
    save_every: Optional[int] = typer.Option(
        None, "--save-every", min=1, help="Optimizer steps between checkpoints of each run (default: the recipe's; the curve's is once "
        "per epoch, which for a 1-epoch run is only its end); an interrupted run resumes from its newest checkpoint when the curve is run again. "
        "Change it only between whole runs: a half-trained run keeps the value it started with."
    ),
    valid_limit: int = typer.Option(0, "--valid-limit", help="Validation units for early stopping (0: none, a fixed budget; cheaper)."),
    gain_threshold: float = typer.Option(0.01, "--gain-threshold", help="Saturation: the size beyond which one doubling of the data gains less than this."),
    ceiling: float = typer.Option(1.0, "--ceiling", help="Upper bound of the fitted plateau a (accuracy, F1 and recall cannot pass 1.0); 0 = unbounded (e.g. a loss)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap resamples over seeds for the saturation interval."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    bf16: bool = typer.Option(
        False, "--bf16", help="bf16 autocast for training and effort scores: ~1.7x faster training on CPUs with AMX "
        "or AVX512-BF16 (check `lscpu | grep -E 'amx|avx512_bf16'`), slower without (a warning says so); evaluation stays fp32. Results differ slightly, so a curve folder keeps one setting."
    ),
    processes: int = typer.Option(1, "--processes", min=1, help=PROCESSES_HELP + " Not a curve setting: a folder may continue with another value."),
    cached_only: bool = typer.Option(False, "--cached-only", help="Train nothing: fit and plot the runs already in --out (e.g. while another process fills it)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Curve folder (default: runs/curve-<task>-<unit>-<method>-<model>)."),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX, help=SEED_HELP + " Run seeds are seed, seed+1, ..."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    plan: bool = typer.Option(
        False, "--plan", help="Train nothing: list the runs still missing from --out, their optimizer steps and evaluations "
        "(an interrupted run counts only the steps after its newest checkpoint), "
        "and estimate their core-hours: from the folder's runs made on this machine with as many torch threads (their recorded "
        "seconds per step and per test unit; nothing is timed), else from --plan-steps optimizer steps and a few test units "
        "timed here (a minute or two; flagged when the machine is busy)."
    ),
    plan_steps: int = typer.Option(3, "--plan-steps", help="--plan: optimizer steps to time (at least 2; 0: count only, time nothing)."),
) -> None:
    from ..curves import CurveConfig, learning_curve, make_task
    from ..curves.runner import resolve_recipe, task_default_sizes
    from ..train import parse_target_modules

    chosen_recipe = resolve_recipe(
        task, model, recipe, unit=unit, epochs=epochs, save_every=save_every, lr=lr, batch_size=batch_size,
        micro_batch_size=micro_batch_size, r=r, alpha=alpha, bf16=True if bf16 else None, processes=processes,
        target_modules=None if target_modules is None else parse_target_modules(target_modules),
    )
    unit = chosen_recipe.unit

    options = {}
    if data is not None:
        options["data"] = data
    if unit is not None:
        options["unit"] = unit
    if quiet:
        options["progress"] = False
    # The task is built here only when its default sizes are needed, and then handed on (not built twice).
    built = None if sizes is not None else make_task(task, options)
    chosen = tuple(_parse_sizes(sizes)) if built is None else task_default_sizes(built)
    cfg = CurveConfig(
        task=task, task_options=options, model=model, sizes=chosen, seeds=seeds, seed=seed,
        method=method, selector=selector, metric=metric, eval_limit=eval_limit or None, schedule=schedule, epochs=chosen_recipe.epochs,
        min_steps=min_steps, steps=steps, finetune=chosen_recipe.finetune, valid_limit=valid_limit, gain_threshold=gain_threshold,
        ceiling=ceiling or None, bootstrap=bootstrap, device=device, progress=not quiet,
    )
    out = out or Path("runs") / f"curve-{task}-{unit or 'default'}-{method}{'-' + selector if selector else ''}-{Path(model).name}"
    print(chosen_recipe.describe())
    if plan:
        from ..curves.plan import measure_costs, plan_curve

        if plan_steps == 1 or plan_steps < 0:
            raise typer.BadParameter("at least 2 (the first step is a warm-up), or 0 to time nothing", param_hint="--plan-steps")
        built = built or make_task(task, options)
        planned = plan_curve(cfg, out, task=built)
        costs = measure_costs(cfg, built, steps=plan_steps, out=out) if plan_steps and planned.missing else None
        for line in planned.lines(costs):
            print(line)
        return
    result = learning_curve(cfg, out, task=built, cached_only=cached_only)
    print(f"runs: {result.run.trained} trained now, {result.run.cached} cached")
    for line in result.lines:
        print(line)
    for name, path in result.files.items():
        print(f"{name}: {path}")
