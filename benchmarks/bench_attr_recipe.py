"""Which fine-tuning recipe makes attribute extraction work: a recipe grid chosen on validation,
then zero-shot, few-shot and fine-tuned micro-F1 on every test product, with intervals.

Three phases, each resumable (one JSON per finished cell in ``--work``) and shardable, so several
processes (or one GPU shared by several processes) fill one work folder side by side:

* ``grid``: every recipe of ``--grid`` without a finished cell (here or in the committed report) is
  trained once (seed 0) on all training products (or questions) and scored on **all validation
  products** — the test split is never looked at here;
* ``test``: the recipe with the best validation micro-F1, the CLI's previous default recipe, the
  zero-shot model and 3-/10-shot prompts are evaluated on **all test products** (fine-tuned ones and
  few-shot draws over ``--seeds``), each writing ``per_unit.jsonl`` for ``leantune compare``;
* ``report``: tables (validation grid; test F1 with paired intervals against zero-shot and against
  the default recipe) into ``benchmarks/results/<name>/``.

Where the whole grid costs more than a machine has (a CPU: days), ``screen`` trains each recipe only to
``--fraction`` of its own schedule (the learning rate decays as in the full run, so the run continues
from there) and scores it on validation; ``missing --top K`` then names the K best-screened recipes of
each unit (product, question) for ``grid --recipes``, which resumes them from the screen's checkpoint
(checkpoints are not tracked: on a machine without them the run starts over, and ``missing --top``
counts its steps so). The report sets each recipe's early F1 beside its final one where both exist,
with their rank agreement, so the screen's choice can be checked rather than trusted (leantune's
early-performance idea, applied to its own grid).

    python3 benchmarks/bench_attr_recipe.py --phase grid --device cuda --shard 0 --shards 4 --work W &
    ...                                                                                       # shards 1-3
    python3 benchmarks/bench_attr_recipe.py --phase test --device cuda --shard 0 --shards 4 --work W &
    python3 benchmarks/bench_attr_recipe.py --phase report --work W --name attr-recipe-smollm2

    python3 benchmarks/bench_attr_recipe.py --phase screen --fraction 0.2 --work W     # a CPU: screen first,
    python3 benchmarks/bench_attr_recipe.py --phase grid --recipes $(python3 benchmarks/bench_attr_recipe.py \\
        --phase missing --top 2 --work W) --work W                                        # then finish the best two

``--grid tiny`` is a seconds-long version on the random tiny model, for checking the plumbing.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from _common import RESULTS, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.io import read_json, write_json  # noqa: E402
from leantune.tasks.attributes import write_predictions  # noqa: E402
from leantune.tasks.attributes_generate import GENERATION_LOG  # noqa: E402
from leantune.train.config import ALL_LINEAR  # noqa: E402

MODULES = {"qv": ("q_proj", "v_proj"), "all": ALL_LINEAR}


@dataclass(frozen=True)
class Recipe:
    unit: str = "product"
    epochs: float = 3.0
    lr: float = 1e-3
    r: int = 8
    alpha: int = 16
    modules: str = "qv"
    batch_size: int = 8
    warmup_ratio: float = 0.0

    @property
    def name(self) -> str:
        warm = f"-w{self.warmup_ratio:g}" if self.warmup_ratio else ""
        return f"{self.unit}-e{self.epochs:g}-lr{self.lr:g}-r{self.r}a{self.alpha}-{self.modules}-b{self.batch_size}{warm}"


# `leantune attributes finetune`'s defaults before this benchmark chose a new one (3 epochs, lr 1e-3,
# r 8/16 on q,v, batch 8): the "default" rows below are this recipe.
CLI_DEFAULT = Recipe()
# The screen's check counts how many of its best SCREEN_TOP recipes are also the best SCREEN_TOP at the end
# (the README finishes the best two: `--phase missing --top 2`).
SCREEN_TOP = 2
# Below this many recipes with both scores, a bootstrap over recipes mostly redraws the same few: no interval.
SCREEN_MIN_BOOT = 6
GRIDS = {
    "smollm2": [
        Recipe(epochs=1),  # the learning curve's recipe at all 1,288 products
        CLI_DEFAULT,
        Recipe(epochs=3, modules="all"),
        Recipe(epochs=5, lr=1e-3, r=16, alpha=32, modules="all", batch_size=16),
        Recipe(epochs=5, lr=5e-4, r=16, alpha=32, modules="all", batch_size=16),
        Recipe(epochs=5, lr=2e-3, r=16, alpha=32, modules="all", batch_size=16),
        Recipe(epochs=10, lr=5e-4, r=16, alpha=32, modules="all", batch_size=16, warmup_ratio=0.03),
        Recipe(epochs=10, lr=1e-3, r=8, alpha=16, batch_size=16),
        Recipe(epochs=10, lr=2e-4, r=64, alpha=128, modules="all", batch_size=16, warmup_ratio=0.03),
        Recipe(epochs=15, lr=5e-4, r=32, alpha=64, modules="all", batch_size=16, warmup_ratio=0.03),
        Recipe(unit="question", epochs=1, lr=1e-3, r=16, alpha=32, modules="all", batch_size=32),
        Recipe(unit="question", epochs=2, lr=5e-4, r=16, alpha=32, modules="all", batch_size=32),
        Recipe(unit="question", epochs=3, lr=5e-4, r=16, alpha=32, modules="all", batch_size=32, warmup_ratio=0.03),
        Recipe(unit="question", epochs=2, lr=2e-3, r=8, alpha=16, batch_size=32),
    ],
    "tiny": [Recipe(epochs=1, batch_size=4), Recipe(epochs=2, lr=2e-3, modules="all", batch_size=4),
             Recipe(unit="question", epochs=1, batch_size=8)],
}
FEW_SHOTS = (3, 10)


def _as_recipe(recipe: dict) -> Recipe:
    """A library recipe (``leantune.tasks.attributes.default_recipe``) as a grid recipe."""
    modules = {v: k for k, v in MODULES.items()}.get(tuple(recipe["target_modules"]))
    if modules is None:
        raise SystemExit(f"the library's default recipe targets {recipe['target_modules']}, which is none of the grid's module sets {sorted(MODULES)}")
    return Recipe(unit=recipe["unit"], epochs=recipe["epochs"], lr=recipe["lr"], r=recipe["r"], alpha=recipe["alpha"],
                  modules=modules, batch_size=recipe["batch_size"])


def task_default_recipe() -> Recipe:
    """The task's recipe (``leantune.tasks.attributes.RECIPE``, chosen on SmolLM2's grid; ``leantune attributes
    finetune``'s default for models without one of their own) as a grid recipe, so a model without a grid
    of its own gets a fine-tuned row ("task-default")."""
    from leantune.tasks.attributes import RECIPE

    return _as_recipe(RECIPE)


def model_default_recipe(model: str) -> Recipe:
    """``leantune attributes finetune --model MODEL``'s default recipe as a grid recipe."""
    from leantune.tasks.attributes import default_recipe

    return _as_recipe(default_recipe(model))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=["grid", "screen", "test", "report", "missing", "best"], required=True,
                   help="grid: train and validate recipes; screen: train each recipe to --fraction of its schedule and "
                        "validate it there (a later grid run continues it); test: evaluate on the test split; report: write "
                        "the README; missing: print, one per line, the grid's recipes that have no cell here or in the "
                        "committed report and no run under way in --work (what a GPU lease should train: its --recipes), or "
                        "with --top K the K best-screened recipes without a finished cell; best: print the recipe the "
                        "finished cells choose (nothing when none has finished)")
    p.add_argument("--grid", choices=sorted(GRIDS), default="smollm2",
                   help="recipe grid; 'tiny': seconds on the random tiny model, for plumbing checks")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", default="oa-mine", help="attribute data: 'oa-mine' or a folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--work", type=Path, required=True,
                   help="cells, adapters and per-unit results; under benchmarks/results/<name>/cells the small records are tracked "
                        "by git (that folder's .gitignore) and adapters are not")
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="test phase: fine-tuning and few-shot draw seeds")
    p.add_argument("--only", nargs="*", default=None,
                   help="test: run only these labels (zero-shot, 3-shot, 10-shot, default, task-default, best); task-default is "
                        "the task's recipe, run where it is not already the grid's choice")
    p.add_argument("--recipes", nargs="*", default=None,
                   help="grid, screen: train only these recipes of --grid, by name (e.g. question-e1-lr0.001-r16a32-all-b32), "
                        "finished or not; default: every recipe without a finished cell here or in the committed report")
    p.add_argument("--deadline-s", type=float, default=0, help="grid/test: start no new cell after this many seconds (0: none)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in training on CPU (on CUDA it is on anyway)")
    p.add_argument("--micro-batch-size", type=int, default=0, help="examples per forward pass (0: the whole batch)")
    p.add_argument("--processes", type=int, default=1,
                   help="CPU training processes per run (DDP over gloo): a 2-core machine trains one run on both cores")
    p.add_argument("--save-every", type=int, default=0,
                   help="optimizer steps between checkpoints a stopped run resumes from (0: once per epoch); fixed per run folder")
    p.add_argument("--progress", action="store_true", help="grid/test: progress bars over each run's training steps and each evaluation's prompts")
    p.add_argument("--gen-batch-size", type=int, default=64, help="prompts per generation batch")
    p.add_argument("--valid-limit", type=int, default=0, help="grid/screen: validation products scored (0: all)")
    p.add_argument("--fraction", type=float, default=0.2,
                   help="screen: the fraction of each recipe's own schedule trained before it is scored (0 < f < 1)")
    p.add_argument("--top", type=int, default=0,
                   help="missing: the K recipes of each unit (product, question) with the best screened validation F1 that "
                        "have no finished cell (0: the unscreened listing); within a unit, since a question recipe "
                        "screens low against product ones at the same fraction")
    p.add_argument("--test-limit", type=int, default=0, help="test: test products scored (0: all)")
    p.add_argument("--name", default=None, help="report: folder under benchmarks/results (default: attr-recipe-<model>)")
    p.add_argument("--machine", default="", help="report: the machine the cells ran on (e.g. 'NVIDIA H200, torch 2.11')")
    p.add_argument("--note", default="", help="report: a paragraph on how the cells were run (conditions, what is missing)")
    args = p.parse_args(argv)
    if args.grid == "tiny":
        args.model = "tiny"
    if not 0 < args.fraction < 1:
        p.error(f"--fraction {args.fraction}: give a fraction of the schedule between 0 and 1 (e.g. 0.2)")
    if args.top < 0:
        p.error(f"--top {args.top}: give 0 (no screen) or more")
    args.name = args.name or f"attr-recipe-{Path(args.model).name}"
    if args.recipes is not None:
        unknown = sorted(set(args.recipes) - {r.name for r in GRIDS[args.grid]})
        if unknown:
            p.error(f"--recipes: {', '.join(unknown)} not in --grid {args.grid} "
                    f"(its recipes: {', '.join(r.name for r in GRIDS[args.grid])})")
    return args


# Written into a work folder under benchmarks/results/ (``--work benchmarks/results/<name>/cells``):
# git then keeps what lets a grid or a long evaluation continue on another machine, and nothing big.
CELLS_GITIGNORE = """\
# Cells of bench_attr_recipe.py, kept in the repo so the grid and the test evaluations continue on the
# next machine. Only the small records are tracked: grid cells, test metrics, per-unit rows and the
# generation logs a long evaluation resumes from. Adapters, checkpoints and predictions are not.
*
!*/
!.gitignore
!/grid/*.json
!/grid/valid/*/metrics.json
!/grid/valid/*/per_unit.jsonl
!/grid/screen/*.json
!/grid/screen/valid/*/metrics.json
!/grid/screen/valid/*/per_unit.jsonl
!/test/**/metrics.json
!/test/**/per_unit.jsonl
!/test/**/generation.partial.jsonl
"""


def track_small_records(work: Path) -> None:
    """Give a work folder inside benchmarks/results/ the .gitignore that tracks only its small records."""
    work = work.resolve()
    ignore = work / ".gitignore"
    if work.is_relative_to(RESULTS.resolve()) and not (ignore.is_file() and ignore.read_text() == CELLS_GITIGNORE):
        work.mkdir(parents=True, exist_ok=True)
        ignore.write_text(CELLS_GITIGNORE)  # written by this script: an older version is brought up to date


def _finetune_config(recipe: Recipe, seed: int, device: str, micro: int, bf16: bool = False, save_every: int = 0, processes: int = 1):
    from leantune.tasks.attributes import AttributeTask
    from leantune.train import FinetuneConfig

    return FinetuneConfig(r=recipe.r, alpha=recipe.alpha, target_modules=MODULES[recipe.modules], lr=recipe.lr,
                          batch_size=recipe.batch_size, micro_batch_size=micro or recipe.batch_size, epochs=recipe.epochs,
                          warmup_ratio=recipe.warmup_ratio, train_on_inputs=AttributeTask.train_on_inputs,
                          early_stopping_patience=None, seed=seed, device=device, bf16=True if bf16 else None,
                          eval_every=save_every or None, processes=processes)


def _cell_bf16(cell: dict) -> str:
    """The grid table's bf16 column; cells written before the field existed: CUDA ones trained in bf16."""
    used = cell.get("bf16", True if str(cell.get("device", "")).startswith("cuda") else None)
    return "?" if used is None else ("yes" if used else "no")


def _cell_device(cell: dict) -> str:
    """The grid table's "trained on" column: the machine the cell recorded, else its device, marked as
    such (cells from before machines were recorded: the report's "Cells ran on" line names it)."""
    sittings = cell.get("sittings") or []
    machines = list(dict.fromkeys(str(s["machine"]) for s in sittings if s.get("machine")))
    if not machines and cell.get("machine"):
        machines = [str(cell["machine"])]
    text = " + ".join(machines) if machines else f"{cell.get('device') or '?'} (machine not recorded)"
    if len(sittings) > 1:  # a run resumed across sittings: how many, and whether the earliest went unrecorded
        unrecorded = sum(1 for s in sittings if not s.get("machine"))
        text += f" ({len(sittings)} sittings" + (f", {unrecorded} not recorded" if unrecorded else "") + ")"
    return text.replace("|", "/")


def _train(args, recipe: Recipe, seed: int, device: str, out: Path, fraction: float | None = None):
    from leantune.models.llm import load_tokenizer
    from leantune.tasks.attributes import AttributeTask
    from leantune.train import finetune

    task = AttributeTask(data=args.data, unit=recipe.unit, progress=False)
    tokenizer = load_tokenizer(args.model)
    train = task.train_examples(task.train_pool(), tokenizer)
    return finetune(args.model, train, None, out, _finetune_config(recipe, seed, device, args.micro_batch_size, args.bf16, args.save_every, args.processes),
                    stop_after_fraction=fraction, progress=args.progress)


def _evaluate(args, device, split, limit, seed, adapter=None, shots=0, unit="product", log_folder=None):
    """Metrics, judged rows and seconds; with ``log_folder`` every answer is logged as it comes, so a
    cut-off evaluation (a long few-shot one on a CPU) resumes where it stopped."""
    from leantune.models.llm import load_model
    from leantune.tasks.attributes import AttributeTask
    from leantune.tasks.attributes_generate import GenerationLog
    from leantune.train import load_finetuned

    task = AttributeTask(data=args.data, unit=unit, batch_size=args.gen_batch_size, shots=shots, progress=args.progress)
    lm, tok = load_finetuned(args.model, adapter, device=device) if adapter else load_model(args.model, device=device)
    log = None
    if log_folder is not None:
        log = GenerationLog.in_folder(log_folder,
                            {"model": args.model, "data": args.data, "adapter": str(adapter) if adapter else None, "unit": unit,
                             "split": split, "limit": limit or None, "seed": seed, "shots": shots})
    earlier = log.seconds() if log is not None else 0.0  # a resumed evaluation counts its earlier sittings too
    t0 = time.perf_counter()
    metrics, rows = task.predict(lm, tok, split, limit=limit or None, seed=seed, log=log)
    return metrics, rows, earlier + time.perf_counter() - t0


def _mine(items: list, costs: list[float], shard: int, shards: int) -> list:
    """Greedy longest-first assignment of items to shards; every shard computes the same split."""
    load = [0.0] * shards
    owner = {}
    for i in sorted(range(len(items)), key=lambda i: -costs[i]):
        s = min(range(shards), key=lambda k: load[k])
        owner[i] = s
        load[s] += costs[i]
    return [items[i] for i in range(len(items)) if owner[i] == shard]


def _cost(recipe: Recipe) -> float:
    """Optimizer steps on OA-Mine (1,288 products, 13,795 questions): small models are step-bound on a GPU."""
    import math

    return recipe.epochs * math.ceil((13795 if recipe.unit == "question" else 1288) / recipe.batch_size)


def _selected(args) -> list[Recipe]:
    """The recipes a ``grid`` or ``screen`` call trains: those named by ``--recipes``, else every recipe of
    ``--grid`` without a finished cell here or carried (one finished on another machine is not trained again)."""
    if args.recipes is not None:
        return [r for r in GRIDS[args.grid] if r.name in args.recipes]
    done = {c["name"] for c in grid_cells(args)}
    return [r for r in GRIDS[args.grid] if r.name not in done]


def grid_phase(args, device: str, start: float) -> None:
    """``--phase grid``: each recipe (``--recipes``, else every one without a finished cell) trained to the end of
    its schedule (seed 0, continuing a screened run from its checkpoint where this work folder has it) and scored
    on validation (``grid/<recipe>.json`` and its rows)."""
    _train_and_validate(args, _selected(args), device, start, fraction=None)


def screen_phase(args, device: str, start: float) -> None:
    """``--phase screen``: each recipe (``--recipes``, else every one without a finished cell) trained to
    ``--fraction`` of its own schedule, scored on validation there (``grid/screen/<recipe>.json`` and its
    rows); the run stays paused at a checkpoint, so ``--phase grid`` later continues it to the end."""
    _train_and_validate(args, _selected(args), device, start, fraction=args.fraction)


def _train_and_validate(args, recipes: list[Recipe], device: str, start: float, fraction: float | None) -> None:
    """The one loop of ``grid`` and ``screen``: this shard's recipes without a record, each trained (to the end,
    or paused at ``fraction`` of its schedule), scored on validation and written as one JSON record."""
    from leantune.train import checkpointed_steps

    kind = "grid" if fraction is None else "screen"
    folder = args.work / "grid" / ("" if fraction is None else "screen")
    for recipe in _mine(recipes, [_cost(r) for r in recipes], args.shard, args.shards):
        record = folder / f"{recipe.name}.json"
        if record.is_file():
            continue
        if args.deadline_s and time.time() - start > args.deadline_s:
            print(f"[shard {args.shard}] deadline: {recipe.name} not {'started' if fraction is None else 'screened'}", flush=True)
            continue
        run = args.work / "runs" / recipe.name / "s0"
        if fraction is None and (folder / "screen" / f"{recipe.name}.json").is_file() and not checkpointed_steps(run):
            # Checkpoints are not tracked: a recipe screened on another machine (or in a lost folder) starts over.
            print(f"[shard {args.shard}] {recipe.name}: screened, but its checkpoint is not in {args.work}; "
                  "training from step 0", flush=True)
        result = _train(args, recipe, 0, device, run, fraction=fraction)
        if fraction is not None and result.status != "paused":  # trained past the point already (or diverged): no early score
            print(f"[shard {args.shard}] {recipe.name}: {result.status} at step {result.steps} of {result.total_steps}, "
                  f"not paused at {fraction:g} of its schedule; not screened", flush=True)
            continue
        metrics = eval_s = None
        if result.adapter_dir is not None:
            metrics, rows, eval_s = _evaluate(args, device, "valid", args.valid_limit, 0, result.adapter_dir, unit=recipe.unit)
            write_valid_rows(args.work, recipe.name, rows, metrics, kind=kind)
        # train_s: the run's training seconds over all its sittings (a screen's and the grid's), not this call's
        common = {"recipe": recipe.__dict__, "name": recipe.name, "steps": result.steps, "train_s": result.wall_s,
                  "eval_s": eval_s, "valid": metrics, "device": device, "machine": result.machine,
                  "sittings": result.sittings,
                  "bf16": _finetune_config(recipe, 0, device, args.micro_batch_size, args.bf16).uses_bf16(device)}
        if fraction is None:
            write_json(record, {**common, "status": result.status, "tokens": result.tokens_seen})
            print(f"[shard {args.shard}] {recipe.name}: {result.status}, {result.steps} steps in {result.wall_s:.0f} s, "
                  f"valid F1 {metrics['f1'] if metrics else float('nan'):.3f}", flush=True)
        else:
            write_json(record, {**common, "fraction": fraction, "total_steps": result.total_steps,
                                "valid_limit": args.valid_limit or None})
            print(f"[shard {args.shard}] {recipe.name}: screened at step {result.steps} of {result.total_steps} in "
                  f"{result.wall_s:.0f} s, valid F1 {metrics['f1']:.3f}", flush=True)


def screen_records(args) -> list[dict]:
    """The screened recipes of ``--grid`` in ``--work`` (``grid/screen/<recipe>.json``), best early F1 first."""
    recs = [read_json(f) for r in GRIDS[args.grid] if (f := args.work / "grid" / "screen" / f"{r.name}.json").is_file()]
    return sorted(recs, key=lambda c: -c["valid"]["f1"])


def screen_lines(args, cells: list[dict], out: Path) -> list[str]:
    """Report lines: each screened recipe's early validation F1 beside its final one (a finished cell), and
    how well the early ranks agree with the final ones where both exist."""
    from scipy.stats import kendalltau

    from leantune.tuning.analysis import agreement_interval, early_epoch_span, early_epochs, rank_agreement
    from leantune.tuning.report import plot_early_final

    recs = screen_records(args)
    if not recs:
        return []
    final = {c["name"]: c["valid"]["f1"] for c in cells if c["valid"]}
    fractions = sorted({r["fraction"] for r in recs})
    # Each machine named once: a column of keys (m1, m2, ...) only where the screen ran on more than one.
    machines = list(dict.fromkeys(_cell_device(r) for r in recs))
    key = {m: f"m{i}" for i, m in enumerate(machines, 1)}
    where = (f"Every recipe screened on {machines[0]}" if len(machines) == 1 else
             "Screened on " + "; ".join(f"{k}: {m}" for m, k in key.items()))
    # A fraction of each recipe's own schedule is not equal compute: a long schedule is screened after more
    # epochs, with less of its run left to gain (SmolLM2's 15-epoch recipe: first early, fourth at the end).
    points = [(r["recipe"]["epochs"], r["steps"], r["total_steps"]) for r in recs]
    done = [early_epochs(*point) for point in points]
    span = early_epoch_span(points)
    spread = (f" The screen point lies at {span[0]:.1f} to {span[1]:.1f} epochs here (`epochs`), so the screen does "
              "not compare recipes at equal compute: one screened after more epochs may have less of its run left to gain."
              if span else "")
    lines = ["", f"## Screen: each recipe at {' / '.join(f'{f:g}' for f in fractions)} of its own schedule (validation, seed 0)", "",
             "Trained to that point of its own schedule (the learning rate decaying as in the full run), scored on validation "
             "there; `--phase grid` continues a screened run from its checkpoint where the work folder holds it "
             f"(checkpoints are not tracked: on another machine the run starts over). {where}.{spread}", "",
             "| screen rank | recipe | steps (of) | epochs | valid F1 early | valid F1 final |" + (" machine |" if len(machines) > 1 else ""),
             "|---:|---|---|---:|---:|---:|" + ("---|" if len(machines) > 1 else "")]
    for i, (r, e) in enumerate(zip(recs, done), 1):
        f = final.get(r["name"])
        lines.append(f"| {i} | {r['name']} | {r['steps']} ({r['total_steps']}) | {e:.1f} | {r['valid']['f1']:.3f} | "
                     f"{'–' if f is None else f'{f:.3f}'} |" + (f" {key[_cell_device(r)]} |" if len(machines) > 1 else ""))
    both = [(i, r) for i, r in enumerate(recs, 1) if r["name"] in final]
    early, late = [r["valid"]["f1"] for _, r in both], [final[r["name"]] for _, r in both]
    if len(both) < 3:
        lines += ["", f"Early against final: {len(both)} screened recipe(s) have a finished cell; the rank agreement needs 3 or "
                      "more, so the screen's order is not checked yet."]
    elif len(set(early)) == 1 or len(set(late)) == 1:
        lines += ["", f"Early against final over the {len(both)} recipes with both: every {'early' if len(set(early)) == 1 else 'final'} "
                      "F1 is the same, so there is no order to compare."]
    else:
        k = min(SCREEN_TOP, len(both))
        # Below SCREEN_MIN_BOOT recipes a bootstrap would mostly redraw the same few: the point values only.
        agree = (agreement_interval if len(both) >= SCREEN_MIN_BOOT else rank_agreement)(early, late, k)
        plot_early_final(early, late, [str(i) for i, _ in both], agree, out / "screen-early-vs-final.png",
                         metric="micro-F1", what="recipes")
        top = late[early.index(max(early))] == max(late)
        # How often a random order of these recipes agrees at least as well (exact for a few recipes without ties).
        chance = kendalltau(early, late, alternative="greater").pvalue

        def ci(key: str) -> str:
            lo_hi = agree.get(f"{key}_ci")
            return "" if lo_hi is None else f" [{lo_hi[0]:+.2f}, {lo_hi[1]:+.2f}]"

        spread = ("95% bootstrap intervals over recipes" if len(both) >= SCREEN_MIN_BOOT else
                  f"no bootstrap interval below {SCREEN_MIN_BOOT} recipes: resampling so few repeats them")
        lines += ["", f"Early against final over the {len(both)} recipes with both (`screen-early-vs-final.png`, points "
                      f"labelled by screen rank): Spearman {agree['spearman']:+.2f}{ci('spearman')}, Kendall "
                      f"{agree['kendall']:+.2f}{ci('kendall')} ({spread}); a random order of these recipes agrees at least as "
                      f"well with chance {chance:.2g} (one-sided Kendall test); top-{k} overlap {agree['topk_overlap']} of {k}; "
                      f"the screen's best of them is {'also' if top else 'not'} the best at the end."]
    if len({r["recipe"]["unit"] for r in recs}) > 1:
        # The gain from the screen point to the end, per unit, from the recipes that have both here.
        gains: dict[str, list[float]] = {}
        for _, r in both:
            gains.setdefault(r["recipe"]["unit"], []).append(final[r["name"]] - r["valid"]["f1"])
        if len(gains) > 1:
            spans = ", ".join(f"the {len(g)} {u} recipe{'s' if len(g) > 1 else ''} {_span(g)}"
                              for u, g in sorted(gains.items(), reverse=True))
            why = f"from their screen points to the end of their runs, F1 gained: {spans}"
        else:
            why = "the README's screen check on SmolLM2 found the question recipe gaining more after its screen point"
        lines += ["", f"Both units are screened: a question recipe's early F1 is not on the product recipes' footing ({why}), "
                      "so early F1 ranks within a unit (a table per unit below) and `--phase missing --top K` names the K best of "
                      "each."]
    return lines + valid_comparison(args, recs, out, kind="screen")


def _span(values: list[float]) -> str:
    """``+0.10 to +0.16`` (or one value) for a report sentence."""
    lo, hi = min(values), max(values)
    return f"{lo:+.2f}" if round(lo, 2) == round(hi, 2) else f"{lo:+.2f} to {hi:+.2f}"


def write_valid_rows(work: Path, name: str, rows: list, metrics: dict, kind: str = "grid") -> None:
    """A grid cell's judged validation answers and per-question rows (``grid/valid/<recipe>/``; a screen's:
    ``grid/screen/valid/<recipe>/``), so cells can be compared paired over the same validation products
    (git tracks the rows, a few hundred kB a cell)."""
    folder = work / "grid" / ("valid" if kind == "grid" else "screen/valid") / name
    write_predictions(folder / "predictions.jsonl", rows)  # and per_unit.jsonl beside it
    write_json(folder / "metrics.json", {"settings": {"recipe": name, "split": "valid", "seed": 0}, "metrics": metrics})


def valid_comparison(args, cells: list[dict], out: Path, kind: str = "grid") -> list[str]:
    """Report lines: every grid cell with validation rows against the best of them, paired over the validation
    products (one seed a cell, so the interval is over products only). ``kind="screen"``: the screen records,
    one table per unit (product recipes against the best product recipe, question recipes against the best
    question recipe), since early F1 ranks within a unit."""
    rows = args.work / "grid" / ("valid" if kind == "grid" else "screen/valid")
    here = [c for c in cells if c["valid"] and (rows / c["name"] / "per_unit.jsonl").is_file()]
    if kind == "grid":
        if len(here) < 2:
            return []
        return ["", f"### Validation F1 of the {len(here)} cells with per-question rows, against the best of them (paired "
                    "over the validation products; one seed a cell, so the seed spread is not in the interval)", "",
                _against_best(here, rows, out / "grid-valid-f1"), "",
                f"Cells without rows (trained before 2026-12-04) are not in this table: {len(cells) - len(here)}."]
    lines = []
    for unit in sorted({c["recipe"]["unit"] for c in here}):  # product, then question
        group = [c for c in here if c["recipe"]["unit"] == unit]
        if len(group) >= 2:
            lines += ["", f"### Early validation F1 of the {len(group)} screened {unit} recipes, against the best of them "
                          "(paired over the validation products; one seed a recipe, so the seed spread is not in the "
                          "interval). A recipe whose interval holds 0 is not told apart from the best by the screen: "
                          "`--top` should reach it.", "", _against_best(group, rows, out / f"screen-{unit}-valid-f1")]
    return lines


# `leantune attributes finetune --model M`'s default (leantune.tasks.attributes.MODEL_RECIPES) follows the grid
# on a resolved difference only: it moves to the grid's choice when that cell beats it on validation with a paired
# 95% interval clear of zero (rule stated 2026-12-07). A move on a difference the 150 validation products cannot
# resolve would change the default, and every figure made with it (curves, votes), on noise; and the test split
# never decides it.
def default_lines(args, cells: list[dict], best: Recipe | None, default: Recipe, out: Path) -> list[str]:
    """Report lines: this model's CLI default (``default``) against the grid's choice (``best``, None before
    any cell finished), and what the rule above makes of it."""
    if best is None:
        return []
    head = f"`leantune attributes finetune --model {args.model}` trains {default.name} by default"
    if default == best:
        return ["", f"{head}: the grid's choice."]
    rule = ("(it moves to the grid's choice only when that cell beats it on validation with a paired 95% interval "
            "clear of zero)")
    if default.name not in {c["name"] for c in cells if c["valid"]}:
        return ["", f"{head}; it has no finished cell in this grid, so the grid's choice ({best.name}) cannot be set "
                    f"against it here {rule}."]
    rows = args.work / "grid" / "valid"
    if not all((rows / name / "per_unit.jsonl").is_file() for name in (default.name, best.name)):
        return ["", f"{head}; the grid's choice, {best.name}, is not paired with it (one of the two cells kept no "
                    f"per-question rows), so the default stays {rule}."]
    row = next(r for r in read_json(out / "grid-valid-f1" / "comparison.json")["rows"] if r["name"] == default.name)
    diff = f"{row['diff']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], paired MDE {row['mde_paired']:.3f}"
    if row["ci_high"] < 0:
        return ["", f"{head}, but the grid's choice, {best.name}, beats it on validation ({default.name} − {best.name}: "
                    f"{diff}): by the rule {rule}, the default should move to {best.name} (edit `MODEL_RECIPES` in "
                    "leantune/tasks/attributes.py)."]
    return ["", f"{head}: the grid's choice, {best.name}, is not told apart from it on validation ({default.name} − "
                f"{best.name}: {diff}), so the default stays {rule}."]


def _against_best(cells: list[dict], rows: Path, folder: Path) -> str:
    """The cells' validation rows (``rows/<recipe>/``) compared with the best cell's, written to ``folder``;
    returns the comparison's markdown table."""
    from leantune.evaluation.compare import compare, load_evaluation

    top = max(cells, key=lambda c: c["valid"]["f1"])
    group = [load_evaluation(rows / c["name"], name=c["name"]) for c in [top] + [c for c in cells if c is not top]]
    cmp = compare(group, baseline=top["name"], metric="f1")
    cmp.write(folder)
    return cmp.to_markdown().strip()


def _previous(args) -> dict:
    """The committed report's ``summary.json`` (``benchmarks/results/<name>/``), or {}."""
    f = RESULTS / args.name / "summary.json"
    return read_json(f) if f.is_file() else {}


def grid_cells(args) -> list[dict]:
    """The finished grid cells: those in ``--work``, then, for recipes that have no cell there, the
    committed report's (each marked ``carried``: it ran on another machine). So the recipe is chosen
    over the whole grid, wherever each cell ran, and a new machine needs no new training to choose."""
    cells, here = [], set()
    for recipe in GRIDS[args.grid]:
        f = args.work / "grid" / f"{recipe.name}.json"
        if f.is_file():
            cells.append(read_json(f))
            here.add(recipe.name)
    names = {r.name for r in GRIDS[args.grid]} - here
    return cells + [{**c, "carried": True} for c in _previous(args).get("grid", []) if c["name"] in names]


def missing_recipes(args) -> tuple[list[Recipe], list[Recipe]]:
    """The grid's recipes without a finished cell (here or carried): (not started, under way in --work).
    A run the screen left paused, and nothing has written to since, is not under way: it waits to be
    finished, so it is listed with the ones not started."""
    done = {c["name"] for c in grid_cells(args)}
    todo, started = [], []
    for recipe in GRIDS[args.grid]:
        if recipe.name not in done:
            run = args.work / "runs" / recipe.name
            (started if run.exists() and not _left_paused(run / "s0") else todo).append(recipe)
    return todo, started


def _left_paused(run: Path) -> bool:
    """A fine-tuning run that stopped at its ``stop_after_fraction`` point (``result.json`` says paused) and
    has not been written to since (a process continuing it would have written checkpoints after it)."""
    result = run / "result.json"
    if not result.is_file() or read_json(result).get("status") != "paused":
        return False
    newest = max(f.stat().st_mtime for f in run.rglob("*") if f.is_file())
    return newest <= result.stat().st_mtime + 60


def run_progress(run: Path) -> str:
    """How far a started grid run got, for telling a live run from an abandoned one: the step its seeds'
    fine-tuning runs (``runs/<recipe>/s<seed>``) would resume from, and how long ago anything in the
    run's folder was last written."""
    from leantune.train import checkpointed_steps

    files = [f for f in run.rglob("*") if f.is_file()]
    if not files:
        return "nothing written yet"
    hours = (time.time() - max(f.stat().st_mtime for f in files)) / 3600
    step = max((checkpointed_steps(seed) for seed in run.iterdir() if seed.is_dir()), default=0)
    where = f"checkpoint {step}" if step else "no checkpoint yet"
    return f"{where}, last written {hours:.1f} h ago"


def print_missing(args) -> None:
    """``--phase missing``: the names on stdout (for ``--recipes``), a summary on stderr (a run under
    way in ``--work`` with its newest checkpoint and age, so an abandoned one shows as such)."""
    import sys

    if args.top:
        done = {c["name"] for c in grid_cells(args)}
        recs = [r for r in screen_records(args) if r["name"] not in done]
        if not recs:
            raise SystemExit(f"--top {args.top}: no screened recipe without a finished cell in {args.work} "
                             "(run --phase screen first)")
        # The K best of each unit: early F1 ranks within a unit (README: in SmolLM2's screen check the question
        # recipes gained more F1 after their screen points than the product recipes).
        per_unit: dict[str, int] = {}  # unit -> recipes of it taken (each unit's best always is)
        top = []
        for r in recs:  # best early F1 first
            unit, n = r["recipe"]["unit"], per_unit.get(r["recipe"]["unit"], 0)
            if n < args.top:
                top.append(r)
                per_unit[unit] = n + 1
        for r in top:
            print(r["name"])
        sys.stdout.flush()
        # Steps left from the checkpoint this work folder holds (checkpoints are not tracked: a recipe screened
        # on another machine starts over here).
        from leantune.train import checkpointed_steps

        here = {r["name"]: checkpointed_steps(args.work / "runs" / r["name"] / "s0") for r in top}
        steps = sum(_cost(Recipe(**r["recipe"])) - here[r["name"]] for r in top)
        lost = [n for n, step in here.items() if not step]
        taken = ", ".join(f"{unit}: {n}" for unit, n in per_unit.items())
        print(f"the {args.top} best-screened of each unit ({taken}) "
              f"of {len(recs)} screened recipes without a finished cell ({steps:,.0f} optimizer "
              "steps to finish them" + (f"; no checkpoint in {args.work} for {', '.join(lost)}: from step 0" if lost else "")
              + ")", file=sys.stderr)
        return
    todo, started = missing_recipes(args)
    for recipe in todo:
        print(recipe.name)
    sys.stdout.flush()
    steps = sum(_cost(r) for r in todo)
    paused = [r.name for r in todo if (args.work / "runs" / r.name).exists()]
    under_way = ", ".join(f"{r.name} ({run_progress(args.work / 'runs' / r.name)})" for r in started)
    print(f"{len(todo)} of {len(GRIDS[args.grid])} recipes not finished nor under way ({steps:,.0f} optimizer steps from scratch"
          + (f"; {len(paused)} of them left paused by --phase screen here, which --phase grid continues" if paused else "") + ")"
          + (f"; under way in {args.work}: {under_way}" if started else ""), file=sys.stderr)


def best_recipe(args, required: bool = True) -> Recipe | None:
    """The recipe with the highest validation micro-F1 among the finished grid cells; with none,
    an error, or None when not ``required`` (rows that need no grid: zero-/few-shot, default)."""
    cells = [c for c in grid_cells(args) if c["valid"]]
    if not cells:
        if not required:
            return None
        raise SystemExit(f"no finished grid cells for --model {args.model} in {args.work}: run --phase grid first "
                         "(or --only zero-shot 3-shot 10-shot default task-default, which need no grid)")
    best = max(cells, key=lambda c: c["valid"]["f1"])
    return Recipe(**best["recipe"])


def test_items(args) -> list[tuple[str, dict, int]]:
    """(label, spec, seed) of every test evaluation; 'best' only once the grid has chosen it."""
    best = best_recipe(args, required=args.only is None or "best" in args.only)
    items = [("zero-shot", {"shots": 0}, 0)]
    items += [(f"{k}-shot", {"shots": k}, s) for k in FEW_SHOTS for s in args.seeds]
    recipes = {}
    for label, recipe in (("best", best), ("task-default", task_default_recipe()), ("default", CLI_DEFAULT)):
        if recipe is not None and recipe not in recipes.values():  # one row per recipe, the first label naming it
            recipes[label] = recipe
    items += [(label, {"recipe": r.__dict__}, s) for label, r in recipes.items() for s in args.seeds]
    return items


def _item_cost(spec: dict) -> float:
    if "recipe" in spec:
        return _cost(Recipe(**spec["recipe"])) + 200
    return 200 + 20 * spec["shots"]


def held_recipe(folder: Path) -> str | None:
    """The recipe whose test evaluation a finished label folder holds (None: none finished, or no recipe)."""
    if not (folder / "metrics.json").is_file():
        return None
    return (read_json(folder / "metrics.json").get("settings") or {}).get("recipe")


def check_label_folder(args, label: str, seed: int, recipe: str) -> None:
    """A label folder ('best', 'default', ...) finished under another recipe is not this label's row:
    the grid's choice moved since. Say so in one line rather than skip it or report it under the new name."""
    folder = args.work / "test" / label / f"s{seed}"
    held = held_recipe(folder)
    if held is not None and held != recipe:
        raise SystemExit(f"{folder}/metrics.json: holds recipe {held}, but '{label}' is now {recipe}; move the "
                         f"folder aside (e.g. to {args.work / 'test' / held.split('-lr')[0]}/s{seed}) and run again")


def test_phase(args, device: str, start: float) -> None:
    items = [i for i in test_items(args) if args.only is None or i[0] in args.only]
    for label, spec, seed in items:  # before any training
        if "recipe" in spec:
            check_label_folder(args, label, seed, Recipe(**spec["recipe"]).name)
    for label, spec, seed in _mine(items, [_item_cost(s) for _, s, _ in items], args.shard, args.shards):
        folder = args.work / "test" / label / f"s{seed}"
        if (folder / "metrics.json").is_file():
            continue
        if args.deadline_s and time.time() - start > args.deadline_s:
            print(f"[shard {args.shard}] deadline: {label} s{seed} not started", flush=True)
            continue
        settings = {"label": label, "seed": seed, "device": device, "model": args.model, "data": args.data, **spec}
        adapter, unit, train_s = None, "product", 0.0
        if "recipe" in spec:
            recipe = Recipe(**spec["recipe"])
            unit = recipe.unit
            result = _train(args, recipe, seed, device, args.work / "runs" / recipe.name / f"s{seed}")
            train_s = result.wall_s  # over all sittings; a run the grid finished counts its own training
            settings.update(recipe=recipe.name, status=result.status, steps=result.steps)
            adapter = result.adapter_dir
            if adapter is None:
                write_json(folder / "metrics.json", {"settings": settings, "metrics": None})
                continue
        metrics, rows, eval_s = _evaluate(args, device, "test", args.test_limit, seed, adapter, spec.get("shots", 0), unit, log_folder=folder)
        settings.update(train_s=train_s, eval_s=eval_s)
        write_predictions(folder / "predictions.jsonl", rows)  # and per_unit.jsonl beside it
        write_json(folder / "metrics.json", {"settings": settings, "metrics": metrics})
        (folder / GENERATION_LOG).unlink(missing_ok=True)
        print(f"[shard {args.shard}] test {label} s{seed}: F1 {metrics['f1']:.3f} accuracy {metrics['accuracy']:.3f} "
              f"(train {train_s:.0f} s, eval {eval_s:.0f} s)", flush=True)


def _load(args, label: str, recipe: Recipe | None = None):
    from leantune.evaluation.compare import load_evaluation

    evs = []
    for s in args.seeds:
        folder = args.work / "test" / label / f"s{s}"
        if recipe is not None:
            check_label_folder(args, label, s, recipe.name)
        if (folder / "per_unit.jsonl").is_file():
            ev = load_evaluation(folder, name=label)
            ev.seed = s
            evs.append(ev)
    return evs


def report(args) -> str:
    import numpy as np

    from leantune.evaluation.compare import compare, metric_interval, read_comparison

    out = RESULTS / args.name
    out.mkdir(parents=True, exist_ok=True)
    cells = sorted(grid_cells(args), key=lambda c: -(c["valid"] or {}).get("f1", -1))
    best = best_recipe(args, required=False)
    n_valid = cells[0]["valid"]["n_products"] if cells and cells[0]["valid"] else None
    scope = f"all {n_valid} validation products" if n_valid else "the validation products"
    lines = [f"# Attribute-extraction recipes: {args.model} on {args.data}", "",
             f"Cells ran on: {args.machine or 'the device named in each cell'}. Report: "
             f"`python3 benchmarks/bench_attr_recipe.py --phase report --model {args.model} --work <work> --seeds {' '.join(map(str, args.seeds))}`", "",
             f"## Validation grid (seed 0, {scope}; chooses the recipe — the test split is not used)", "",
             "Loss on the answer only, no early stopping, LoRA dropout 0.05, linear decay; `qv` = q_proj, v_proj; "
             "`all` = every linear layer of the blocks; bf16: autocast in training (on CUDA by default, on CPU with `--bf16`).", "",
             "| recipe | unit | epochs | lr | r/α | modules | batch | steps | trained on | bf16 | valid F1 | P | R | accuracy | invalid |",
             "|---|---|---:|---:|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for c in cells:
        r, v = c["recipe"], c["valid"] or {}
        mark = " **(chosen)**" if best is not None and c["name"] == best.name else (" (previous default)" if c["name"] == CLI_DEFAULT.name else "")
        mark += " (carried)" if c.get("carried") else ""
        lines.append(f"| {c['name']}{mark} | {r['unit']} | {r['epochs']:g} | {r['lr']:g} | {r['r']}/{r['alpha']} | {r['modules']} | "
                     f"{r['batch_size']} | {c['steps']} | {_cell_device(c)} | {_cell_bf16(c)} | {v.get('f1', float('nan')):.3f} | "
                     f"{v.get('precision', float('nan')):.3f} | {v.get('recall', float('nan')):.3f} | {v.get('accuracy', float('nan')):.3f} | "
                     f"{v.get('invalid_rate', float('nan')):.3f} |")
    missing = [r.name for r in GRIDS[args.grid] if r.name not in {c["name"] for c in cells}]
    if missing:
        lines += ["", f"Not run yet ({len(missing)} of {len(GRIDS[args.grid])}): " + ", ".join(f"`{m}`" for m in missing) + "."]
    if not cells:
        lines += ["", f"No grid cell has finished for {args.model} yet (`--phase grid`): the test rows below need no grid; "
                  "the chosen recipe's row waits for it."]
    lines += valid_comparison(args, cells, out)
    model_default = model_default_recipe(args.model)
    lines += default_lines(args, cells, best, model_default, out)
    lines += screen_lines(args, cells, out)
    if any(c.get("carried") for c in cells):
        lines += ["", "(carried): the cell is not in this work folder (it ran on another machine); its row is the committed "
                  "report's (`summary.json`)."]
    if args.note:
        lines += ["", args.note]
    labels = ["zero-shot", *(f"{k}-shot" for k in FEW_SHOTS), "default", "task-default", "best"]
    task_default = task_default_recipe()
    recipes = {"default": CLI_DEFAULT, "task-default": task_default, "best": best}
    evs = {label: _load(args, label, recipes.get(label)) for label in labels}
    # Other folders in test/ (an earlier choice moved aside, say) get rows of their own, named by the recipe they hold.
    earlier = sorted(p.name for p in (args.work / "test").glob("*") if p.is_dir() and p.name not in labels)
    for label in earlier:
        evs[label] = _load(args, label)
    earlier = [label for label in earlier if evs[label]]
    labels += earlier
    lines += ["", f"## Test: all test products, seeds {args.seeds} (fine-tuning seeds; few-shot example draws)", "",
              "| prompt / model | runs | micro-F1 (mean of runs) | seed SD | 95% CI over test products (one run) | P | R | accuracy |",
              "|---|---:|---:|---:|---|---:|---:|---:|"]
    summary = {"best_recipe": best and best.name, "test": {},
               "grid": [{**{k: c[k] for k in ("name", "recipe", "status", "steps", "tokens", "device", "valid")},
                         **{k: c[k] for k in ("bf16", "machine", "train_s") if k in c}} for c in cells]}
    before = _previous(args)
    carried = []
    chosen_from = len([c for c in cells if c["valid"]])
    cli_default = "; `attributes finetune`'s default for this model" if best == model_default else ""
    not_default = "" if task_default == model_default else "; not this model's default"
    for label in labels:
        ms = [read_json(args.work / "test" / label / f"s{e.seed}" / "metrics.json")["metrics"] for e in evs[label]]
        name = {"best": f"fine-tuned, chosen recipe ({best.name}; the best of {chosen_from} grid cell{'s' * (chosen_from != 1)} on validation"
                        f"{cli_default})" if best else "fine-tuned, chosen recipe (no grid yet)",
                "task-default": f"fine-tuned, the task's recipe ({task_default.name}; chosen on SmolLM2-135M's grid"
                                f"{not_default})",
                "default": f"fine-tuned, previous default recipe ({CLI_DEFAULT.name})"}.get(label, label)
        if label in earlier:
            held = held_recipe(args.work / "test" / label / f"s{evs[label][0].seed}")
            own = "; `attributes finetune`'s default for this model" if held == model_default.name else ""
            name = f"fine-tuned, {held} (`test/{label}`; not the grid's choice now{own})" if held else f"`test/{label}`"
        old = before.get("test", {}).get(label)
        if not ms and old and best is not None and before.get("best_recipe") == best.name:  # its cells ran elsewhere: the committed row
            carried.append(label)
            value, low, high = old["f1_interval_first_run"]
            sd = f"{np.std(old['f1_runs'], ddof=1):.3f}" if old["runs"] > 1 else "–"
            rest = " | ".join(f"{old[k]:.3f}" if k in old else "–" for k in ("precision", "recall", "accuracy"))
            lines.append(f"| {name} (carried) | {old['runs']} | {old['f1']:.3f} | {sd} | {value:.3f} [{low:.3f}, {high:.3f}] | {rest} |")
            summary["test"][label] = old
            continue
        if not ms:
            if not (label == "task-default" and best == task_default):  # then "best" is that row
                lines.append(f"| {name} | 0 | not run yet | | | | | |")
            continue
        f1 = [m["f1"] for m in ms]
        sd = f"{np.std(f1, ddof=1):.3f}" if len(f1) > 1 else "–"
        # The test-product interval of the first run (seed spread is the SD column), for setting the
        # result beside a published figure.
        value, low, high = metric_interval(evs[label][0], "f1")
        lines.append(f"| {name} | {len(ms)} | {np.mean(f1):.3f} | {sd} | {value:.3f} [{low:.3f}, {high:.3f}] (s{evs[label][0].seed}) | "
                     f"{np.mean([m['precision'] for m in ms]):.3f} | {np.mean([m['recall'] for m in ms]):.3f} | "
                     f"{np.mean([m['accuracy'] for m in ms]):.3f} |")
        summary["test"][label] = {"f1": float(np.mean(f1)), "runs": len(ms), "f1_runs": f1,
                                  "f1_interval_first_run": [value, low, high],
                                  **{k: float(np.mean([m[k] for m in ms])) for k in ("precision", "recall", "accuracy")}}
    if carried:
        lines += ["", f"Carried rows ({', '.join(carried)}): their cells ran on another machine and are not in this work "
                  "folder; the row is the committed report's (`summary.json`), P/R/accuracy shown where it kept them."]
    groups = [("zero-shot", ["3-shot", "10-shot", "default", "task-default", "best", *earlier]), ("default", ["best", *earlier])]
    for baseline, others in groups + ([("best", earlier)] if earlier else []):
        group = [e for label in [baseline, *others] for e in evs[label]]
        if not evs[baseline] or len({e.name for e in group}) < 2:
            for metric in ("f1", "accuracy"):  # comparisons whose rows ran elsewhere stay as written then
                key = f"vs-{baseline}-{metric}"
                if key in before and (out / key / "comparison.json").is_file():
                    summary[key] = before[key]
                    lines += ["", f"### {metric} against {baseline} (carried: written when its rows were here)", "",
                              read_comparison(out / key).to_markdown().strip()]
            continue
        for metric in ("f1", "accuracy"):
            cmp = compare(group, baseline=baseline, metric=metric)
            cmp.write(out / f"vs-{baseline}-{metric}")
            summary[f"vs-{baseline}-{metric}"] = cmp.to_dict()
            lines += ["", f"### {metric} against {baseline} (paired over test products, seeds averaged)", "", cmp.to_markdown()]
    lines += ["", f"Report written on {machine_summary(threads=False)} (no timing in this report depends on it)."]
    text = "\n".join(lines) + "\n"
    (out / "README.md").write_text(text)
    write_json(out / "summary.json", summary)
    return text


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.time()
    if args.phase == "report":
        print(report(args))
        return
    if args.phase == "missing":
        print_missing(args)
        return
    if args.phase == "best":
        best = best_recipe(args, required=False)
        print(best.name if best else "")
        return
    from leantune.device import resolve_device

    device = resolve_device(args.device)
    track_small_records(args.work)
    {"grid": grid_phase, "screen": screen_phase, "test": test_phase}[args.phase](args, device, start)


if __name__ == "__main__":
    main()
