"""Learning curve of SmolLM2-135M on OA-Mine attribute extraction (the ``leantune curve`` defaults).

Runs (or resumes) the curve in ``--work`` (default ``benchmarks/results/curve-cells/<name>``, where git
tracks each finished run's ``result.json``, ``per_unit.jsonl`` and ``predictions.jsonl`` but not adapters or checkpoints, so a
curve filled over several sittings survives a change of machine), then copies the table and plots to
``benchmarks/results/<name>.{json,md,csv}``, ``<name>.png`` and ``<name>_per_attribute.png``, with the exact settings, wall times, the machine's load while it ran,
and the command that reproduces it. The default is the full curve (hours on CPU); reduce it with
``--sizes``, ``--seeds`` and ``--eval-limit``:

    python3 benchmarks/bench_curve.py                                        # full default curve
    python3 benchmarks/bench_curve.py --sizes 0,25,50,100 --seeds 1 --eval-limit 30 --name curve-cpu-reduced
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

from _common import RESULTS, load_average, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.curves import CurveConfig, learning_curve  # noqa: E402
from leantune.curves.analysis import machines  # noqa: E402
from leantune.curves.runner import resolve_recipe  # noqa: E402
from leantune.train import parse_target_modules  # noqa: E402
from leantune.io import atomic_path, json_safe, write_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="0,25,50,100,200,400,800,1288")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="first run seed (runs use seed, seed+1, ...): lets processes fill one --work folder side by side")
    p.add_argument("--eval-limit", type=int, default=100, help="test products per evaluation (0: all 500)")
    p.add_argument("--recipe", choices=["curve", "model"], default="curve",
                   help="curve: short runs (lr 1e-3, batch 8, r 8 / alpha 16 on q/v, 1 epoch, products); model: the recipe `leantune attributes finetune` trains --model with (its unit, epochs, lr, batch, LoRA and checkpoint cadence). Each flag below that is given overrides one setting")
    p.add_argument("--unit", default=None, choices=["product", "question"], help="default: the recipe's (curve: product)")
    p.add_argument("--method", default="random", help="random, effort, loss, gradient-influence or kcenter (leantune.pipelines.units)")
    p.add_argument("--selector", default=None, help="for a scored method: coverage, topk or stratified (default: the method's)")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--epochs", type=float, default=None, help="default: the recipe's (curve: 1)")
    p.add_argument("--min-steps", type=int, default=25, help="--schedule epochs: a floor of optimizer steps (25: the cached curves' setting)")
    p.add_argument("--schedule", choices=["epochs", "steps"], default="epochs")
    p.add_argument("--steps", type=int, default=None, help="--schedule steps: optimizer steps at every size")
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's (curve: 1e-3)")
    p.add_argument("--r", type=int, default=None, help="LoRA rank (default: the recipe's; curve: 8)")
    p.add_argument("--alpha", type=int, default=None, help="LoRA alpha (default: the recipe's; curve: 16)")
    p.add_argument("--target-modules", default=None, help="comma-separated module names, or 'all' (default: the recipe's; curve: q_proj,v_proj)")
    p.add_argument("--batch-size", type=int, default=None, help="examples per optimizer step (default: the recipe's; curve: 8)")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--save-every", type=int, default=0,
                   help="optimizer steps between checkpoints of each run (0: the recipe's, else once per epoch); a stopped run resumes from the newest")
    p.add_argument("--gain-threshold", type=float, default=0.01)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for training and effort scores (evaluation stays fp32)")
    p.add_argument("--cached-only", action="store_true", help="train nothing; report the runs already in --work")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default); 1 is much faster on an oversubscribed CPU")
    p.add_argument("--processes", type=int, default=1,
                   help="CPU training processes per run (DDP over gloo; leantune curve --processes): not a curve setting")
    p.add_argument("--work", type=Path, default=None,
                   help="curve folder (runs, adapters; default: benchmarks/results/curve-cells/<name>, its small records tracked by git)")
    p.add_argument("--name", default="curve", help="results file stem in benchmarks/results")
    p.add_argument("--note", default="", help="a paragraph added to the markdown (what the numbers mean, conditions)")
    p.add_argument("--metric", default="f1", help="the metric the curve is fitted on (the task's headline: micro-F1)")
    p.add_argument("--step-metrics", nargs="*", default=["accuracy"],
                   help="more metrics (besides --metric) whose paired steps between sizes are reported")
    args = p.parse_args(argv)
    if args.save_every < 0:
        p.error(f"--save-every: {args.save_every} (optimizer steps; 0 saves once per epoch)")
    return args


def markdown(name: str, command: str, cfg: CurveConfig, result, info: dict) -> str:
    lines = [
        f"# {name}: learning curve, {cfg.task} ({cfg.task_options.get('unit', 'product')} units), {cfg.model}, method {cfg.method}" + (f" ({cfg.selector})" if cfg.method != "random" else ""),
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {info['machine']}; torch threads {info['threads']}; load average before/after {info['load_before']} / {info['load_after']}"
        " (a CPU shared with other jobs: absolute times are inflated).",
        f"Runs made on: {machines(result.run.rows)}.",
        f"Wall time of this call: {info['wall_s']:.0f} s ({result.run.trained} runs trained now, {result.run.cached} read from the cache); "
        f"sum of the runs' own wall times (training + evaluation, whenever they ran): {sum(r.get('wall_s') or 0 for r in result.run.rows):.0f} s.",
        "",
        f"Settings: sizes {list(cfg.sizes)}, seeds {cfg.seeds}, eval on {cfg.eval_limit or 'all'} seeded test products (the same for every run), "
        f"training: {cfg.schedule_label()} (micro-batch {cfg.finetune.micro_batch_size}), "
        f"lr {cfg.finetune.lr}, bf16 autocast in training {cfg.bf16}, LoRA r {cfg.finetune.r} / alpha {cfg.finetune.alpha} on "
        f"{', '.join(cfg.finetune.target_modules)}, loss on the answer only, no validation/early stopping.",
        "",
        "| size | seed | status | steps | train s | eval s | accuracy | strict acc | valued acc | n/a acc | P | R | F1 | invalid |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(result.run.rows, key=lambda r: (r["size"], -1 if r["seed"] is None else r["seed"])):
        m, t = r["metrics"], r.get("train") or {}
        if not m:
            lines.append(f"| {r['size']} | {r['seed']} | {r['status']} | {t.get('steps', '')} | | | | | | | | | | |")
            continue
        lines.append(
            f"| {r['size']} | {'' if r['seed'] is None else r['seed']} | {r['status']} | {t.get('steps', '')} | "
            f"{t.get('wall_s', 0) or 0:.0f} | {r.get('eval_s', 0):.0f} | {m['accuracy']:.3f} | {m['strict_accuracy']:.3f} | "
            f"{m['valued_accuracy']:.3f} | {m['na_accuracy']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['invalid_rate']:.3f} |"
        )
    lines += ["", "```", *result.lines, "```", ""]
    for metric, steps in info.get("extra_steps", {}).items():
        lines += [f"Paired steps ({metric}; micro-averaged metrics are resampled by product):", "", steps.to_markdown(), ""]
    if info.get("note"):
        lines += [info["note"], ""]
    if result.breakdown is not None:
        lines += [f"Per attribute (`{name}_per_attribute.md`):", "", result.breakdown.to_markdown()]
    lines.append(f"Plots: `{name}.png` ({cfg.metric} vs size, with the zero-shot and all-\"n/a\" lines), `{name}_per_attribute.png` "
                 f"(per-attribute {cfg.metric}, the 12 attributes with the most test questions, each with its interval over the test "
                 "products where the runs kept per-question rows).")
    return "\n".join(lines) + "\n"


def _without_note(argv: list[str]) -> list[str]:
    """The reproducing command: the --note text is commentary, not a setting."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            out.append(arg)
    return out


def build_config(args):
    """The curve ``args`` ask for and the recipe it trains with (``leantune.curves.resolve_recipe``): the
    flags given override the chosen recipe's settings, the others keep it."""
    recipe = resolve_recipe(
        "attributes", args.model, args.recipe, unit=args.unit, epochs=args.epochs, save_every=args.save_every or None, lr=args.lr,
        batch_size=args.batch_size, micro_batch_size=args.micro_batch_size, r=args.r, alpha=args.alpha, bf16=True if args.bf16 else None,
        target_modules=None if args.target_modules is None else parse_target_modules(args.target_modules), processes=args.processes,
    )
    cfg = CurveConfig(
        task="attributes", task_options={"data": "oa-mine", "unit": recipe.unit or "product"}, model=args.model,
        sizes=tuple(int(s) for s in args.sizes.split(",")), seeds=args.seeds, seed=args.seed, method=args.method, selector=args.selector,
        eval_limit=args.eval_limit or None, schedule=args.schedule, epochs=recipe.epochs,
        min_steps=args.min_steps if args.schedule == "epochs" else 0, steps=args.steps, finetune=recipe.finetune,
        gain_threshold=args.gain_threshold, device=args.device, metric=args.metric,
    )
    return cfg, recipe


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import torch

    cfg, recipe = build_config(args)
    print(recipe.describe(), flush=True)
    command = "python3 benchmarks/bench_curve.py " + shlex.join(_without_note(argv if argv is not None else sys.argv[1:]))
    load_before = load_average()
    start = time.perf_counter()
    # Relative to where it runs: the run records name their adapters by this path (no machine paths in git).
    args.work = args.work or Path(os.path.relpath(RESULTS / "curve-cells" / args.name))
    result = learning_curve(cfg, args.work, cached_only=args.cached_only)
    from leantune.curves import paired_steps

    extra_steps = {m: paired_steps(args.work, result.run.rows, m, seed=cfg.seed) for m in args.step_metrics}
    extra_steps = {m: st for m, st in extra_steps.items() if st is not None}
    info = {
        "machine": machine_summary(threads=False),
        "threads": torch.get_num_threads(),
        "load_before": load_before,
        "load_after": load_average(),
        "wall_s": time.perf_counter() - start,
        "note": args.note,
        "extra_steps": extra_steps,
    }
    name = args.name
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{name}.json", json_safe({
        "command": command, "info": {k: v for k, v in info.items() if k != "extra_steps"}, "settings": cfg.run_settings(), "sizes": list(cfg.sizes), "seeds": cfg.seeds,
        "analysis": result.analysis.as_dict(), "summary": result.lines,
        "steps": {cfg.metric: result.steps.to_dict() if result.steps else None,
                  **{m: st.to_dict() for m, st in extra_steps.items()}},
        "runs": [{k: r.get(k) for k in ("size", "seed", "status", "metrics", "train", "eval_s", "wall_s")} for r in result.run.rows],
    }))
    with atomic_path(RESULTS / f"{name}.md") as tmp:
        tmp.write_text(markdown(name, command, cfg, result, info))
    shutil.copyfile(result.files["csv"], RESULTS / f"{name}.csv")
    shutil.copyfile(result.files["curve_png"], RESULTS / f"{name}.png")
    if "breakdown_png" in result.files:
        shutil.copyfile(result.files["breakdown_png"], RESULTS / f"{name}_per_attribute.png")
    if "breakdown_md" in result.files:
        shutil.copyfile(result.files["breakdown_md"], RESULTS / f"{name}_per_attribute.md")
    print("\n".join(result.lines))
    print(f"wrote {RESULTS / name}.{{json,md,csv,png}}; reproduce: {command}")


if __name__ == "__main__":
    main()
