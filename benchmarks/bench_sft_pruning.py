"""Pruning an instruction dataset with ``--task sft``: OA-Mine exported as chat JSONL, random vs effort
vs gradient influence (LESS, top-k) vs coverage-enhanced gradient influence vs k-center.

    python3 benchmarks/bench_sft_pruning.py                           # the full grid (hours on CPU)
    python3 benchmarks/bench_sft_pruning.py --report-only             # tables from finished cells
    python3 benchmarks/bench_sft_pruning.py --model tiny --budgets 4 8 --seeds 0 --eval-limit 4 --work runs/sft-dry --out runs/sft-dry/out

The OA-Mine training products are written as chat JSONL (``leantune data export --task attributes
--format chat``, the product unit, one line per product) and the validation products likewise;
the validation records are the held-out set and the gradient-influence target. Each *scores* cell
computes one method's scores for every training record with ``leantune.pipelines.units.score_units``
(what ``leantune prune --task sft`` runs) once per seed; each *train* cell selects a budget from them
with ``select_units``, maps the selected lines back to their products and fine-tunes and evaluates
with the learning curve's recipe (``leantune curve`` defaults: max(ceil(n/8), 25) steps of 8 products,
lr 1e-3, LoRA r 8 on q/v, loss on the answer), judging every test product's attributes with the
attribute scorer and writing per-question results. The report compares every method with Random at
each budget through ``leantune compare`` (micro-F1 resampled by product, and accuracy), with the
scoring cost beside the fine-tuning cost. Cells are cached in ``--work`` and never recomputed; two
processes can fill one grid with different ``--seeds``. With ``--work benchmarks/results/sft-pruning/cells``
their small records (scores, subsets, ``result.json``, per-unit rows) are tracked by git and the
checkpoints are not (that folder's ``.gitignore``), so the grid continues on the next machine; a
budget whose cells are not in the work folder keeps the comparison written when they were.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from _common import ROOT, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.io import atomic_path, read_json, write_json, write_jsonl  # noqa: E402

# name -> (score_units method, selector)
METHODS = {
    "random": ("random", None),
    "effort": ("effort", None),
    "gradient-influence": ("gradient-influence", None),
    "coverage-gradient-influence": ("gradient-influence", "coverage"),
    "kcenter": ("kcenter", None),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--budgets", type=int, nargs="+", default=[100, 200, 400])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--model", default="smollm2")
    p.add_argument("--eval-limit", type=int, default=0, help="test products per evaluation (0: all)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast training (1.7x on AMX CPUs; evaluation stays fp32)")
    p.add_argument("--opt", nargs="*", default=[], help="scorer options KEY=VALUE (e.g. gi_dim=8192 gi_warmup_steps=25)")
    p.add_argument("--work", type=Path, default=None, help="cell cache (default $LEANTUNE_HOME/bench-sft-pruning)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sft-pruning")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--max-cells", type=int, default=0, help="stop after this many new cells (0: no limit)")
    return p.parse_args(argv)


def options(args) -> dict:
    from leantune.io import parse_options

    return parse_options(args.opt)


def export(work: Path) -> tuple[Path, Path, list[str]]:
    """Training and validation products as chat JSONL; the product id of each training line."""
    from leantune.pipelines.sft import export_records
    from leantune.tasks.attributes_data import load_attribute_data

    train, valid = work / "oa-mine-train.jsonl", work / "oa-mine-valid.jsonl"
    if not train.is_file():
        write_jsonl(train, export_records("attributes", "oa-mine", "train", "chat"))
        write_jsonl(valid, export_records("attributes", "oa-mine", "valid", "chat"))
    products = [p.id for p in load_attribute_data("oa-mine").products("train")]
    return train, valid, products


def scores_cell(args, work, train, valid, name, seed) -> tuple[dict, float]:
    """Score columns of one method and seed (cached as safetensors, with the seconds it took)."""
    from safetensors.numpy import load_file, save_file

    from leantune.pipelines.units import score_units
    from leantune.tasks.sft import SFTTask

    method = METHODS[name][0]
    folder = work / "scores" / f"{method}-s{seed}"
    done = folder / "scores.json"
    if done.is_file():
        info = read_json(done)
        cols = load_file(str(folder / "scores.safetensors")) if info["columns"] else {}
        return cols, info["seconds"]
    task = SFTTask(data=str(train), valid=str(valid), progress=False)
    t0 = time.perf_counter()
    cols = score_units(task, method, args.model, seed, options(args), work_dir=folder, progress=False)
    seconds = time.perf_counter() - t0
    folder.mkdir(parents=True, exist_ok=True)
    if cols:
        with atomic_path(folder / "scores.safetensors") as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in cols.items()}, str(tmp))
    write_json(done, {"method": method, "seed": seed, "seconds": seconds, "columns": sorted(cols), "load": os.getloadavg()})
    return cols, seconds


def train_cell(args, work, train, products, name, budget, seed, cols) -> Path:
    """Select, fine-tune with the curve's recipe and evaluate; returns the run folder."""
    from leantune.curves.runner import CurveConfig, curve_recipe, run_dir, run_one
    from leantune.pipelines.units import select_units
    from leantune.tasks.attributes import AttributeTask

    out = work / "cells" / name
    folder = run_dir(out, budget, seed)
    if (folder / "result.json").is_file():
        return folder
    method, selector = METHODS[name]
    positions = select_units(cols, len(products), method, budget, seed, selector)
    units = [products[i] for i in positions]
    cfg = CurveConfig(task="attributes", model=args.model, method=method, selector=selector, sizes=(budget,), seeds=1, seed=seed,
                      eval_limit=args.eval_limit or None, finetune=curve_recipe(bf16=True if args.bf16 else None), min_steps=25,
                      progress=False)
    task = AttributeTask(progress=False)
    t0 = time.perf_counter()
    row = run_one(task, cfg, out, budget, seed, units)
    row.update({"method": name, "wall_s": time.perf_counter() - t0, "load_avg": list(os.getloadavg())})
    if (row.get("train") or {}).get("adapter_dir"):  # the record may be committed: no machine path in it
        row["train"]["adapter_dir"] = os.path.relpath(Path(row["train"]["adapter_dir"]).resolve(), work.resolve())
    write_json(folder / "result.json", row)
    return folder


def _cells(args, work, budget) -> list:
    from leantune.curves.runner import run_dir
    from leantune.evaluation.compare import load_evaluation

    evs = []
    for name in args.methods:
        for seed in args.seeds:
            folder = run_dir(work / "cells" / name, budget, seed)
            if (folder / "per_unit.jsonl").is_file():
                ev = load_evaluation(folder, name=name)
                ev.seed = seed
                evs.append(ev)
    return evs


def _costs(args, work) -> dict:
    """Mean seconds per method: scoring, and fine-tune + evaluate per budget, from the cells here;
    merged into ``OUT/cost.json`` so that budgets whose cells are elsewhere keep their figures."""
    from leantune.curves.runner import run_dir

    path = args.out / "cost.json"
    cost = read_json(path) if path.is_file() else {}
    for name in args.methods:
        method = METHODS[name][0]
        row = cost.setdefault(name, {"scoring": None, "budgets": {}})
        sc = [read_json(f)["seconds"] for s in args.seeds if (f := work / "scores" / f"{method}-s{s}" / "scores.json").is_file()]
        if sc:
            row["scoring"] = float(np.mean(sc))
        for budget in args.budgets:
            ws = [read_json(f)["wall_s"] for s in args.seeds if (f := run_dir(work / "cells" / name, budget, s) / "result.json").is_file()]
            if ws:
                row["budgets"][str(budget)] = float(np.mean(ws))
    write_json(path, cost)
    return cost


PLAN_SEEDS = (3, 5, 10, 20)


def seed_plan_lines(cmp) -> list[str]:
    """How many seeds each difference would need: ``leantune power --pilot`` on this comparison."""
    from leantune.evaluation.compare import seed_plan_markdown

    if cmp.groups[cmp.baseline].seed_sd is None:  # one Random seed: no seed spread to plan from
        return []
    return ["Seeds it would take (`leantune power --pilot <this folder>`): the smallest Δ the units + seeds interval "
            "detects at 80% power with N seeds per method and Random, on these test products; the floor is the paired "
            "MDE over products, which no number of seeds goes below.", "", seed_plan_markdown(cmp, PLAN_SEEDS), ""]


def report(args, work) -> str:
    """``OUT/sft-pruning.md`` from the cells in ``work``. A budget with no cells here keeps the
    comparison written when its cells were (``OUT/b<budget>-<metric>/``), marked as carried, so a
    grid filled on several machines reports every budget."""
    from leantune.evaluation.compare import compare, read_comparison

    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# Pruning OA-Mine as an SFT dataset (`--task sft`)", "",
             f"`python3 benchmarks/bench_sft_pruning.py {' '.join(sys.argv[1:])}`".replace("  ", " "), "",
             f"Model {args.model}; budgets {args.budgets}; seeds {args.seeds}; test products: "
             f"{args.eval_limit or 'all'}; machine {machine_summary(threads=False)}.", ""]
    old = args.out / "sft-pruning.json"
    summary = read_json(old) if old.is_file() else {}
    for budget in args.budgets:
        evs = _cells(args, work, budget)
        fresh = len({e.name for e in evs}) >= 2 and "random" in {e.name for e in evs}
        for metric in ("f1", "accuracy"):
            key, folder = f"b{budget}-{metric}", args.out / f"b{budget}-{metric}"
            if fresh:
                cmp = compare(evs, baseline="random", metric=metric)
                cmp.write(folder)
                summary[key] = cmp.to_dict()
                note = ""
            elif (folder / "comparison.json").is_file() and key in summary:
                cmp = read_comparison(folder)
                note = (" (carried: these cells are not in this work folder; the table is the one written when they "
                        "were, kept in `" + folder.name + "/`)")
            else:
                lines += [f"## budget {budget}, {metric}: not enough finished cells", ""]
                summary.pop(key, None)
                continue
            lines += [f"## budget {budget}: {metric} against Random{note}", "", cmp.to_markdown().strip(), "", ""]
            if metric == "f1":
                lines += seed_plan_lines(cmp)
    cost = _costs(args, work)
    rows = ["## Cost (seconds, mean over seeds)", "", "| method | scoring | fine-tune + evaluate (per budget) |", "| --- | ---: | --- |"]
    for name in args.methods:
        c = cost.get(name, {"scoring": None, "budgets": {}})
        per = ", ".join(f"{b}: {c['budgets'][str(b)]:.0f}" if str(b) in c["budgets"] else f"{b}: –" for b in args.budgets)
        scoring = "–" if c["scoring"] is None else f"{c['scoring']:.0f}"
        rows.append(f"| {name} | {scoring} | {per} |")
    lines += rows + [""]
    text = "\n".join(lines) + "\n"
    with atomic_path(args.out / "sft-pruning.md") as tmp:
        Path(tmp).write_text(text)
    write_json(args.out / "sft-pruning.json", summary)
    return text


def main(argv=None):
    args = parse_args(argv)
    home = Path(os.environ.get("LEANTUNE_HOME", Path.home() / ".cache" / "leantune"))
    work = args.work or home / "bench-sft-pruning" / args.model
    work.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        train, valid, products = export(work)
        new = 0
        for seed in args.seeds:
            for name in args.methods:
                cols, _ = scores_cell(args, work, train, valid, name, seed)
                for budget in args.budgets:
                    if args.max_cells and new >= args.max_cells:
                        break
                    before = time.perf_counter()
                    folder = train_cell(args, work, train, products, name, budget, seed, cols)
                    if time.perf_counter() - before > 1:
                        new += 1
                        print(f"{name} budget {budget} seed {seed}: done ({folder})", flush=True)
    print(report(args, work))


if __name__ == "__main__":
    main()
