"""Peak memory (RSS) and seconds per optimizer step of the attribute task's LoRA fine-tune, at several
micro-batch sizes, on the CPU: what `leantune attributes finetune --micro-batch-size` trades.

A micro-batch size changes memory and speed, not what is learned (the optimizer step still averages the
whole batch). Each size trains in a process of its own (so one size's peak cannot hide another's), through
leantune's own training loop, with the model's default recipe (``MODEL_RECIPES``; ``--r``/``--alpha``/
``--batch-size`` override it) for ``--steps`` optimizer steps on the *longest* OA-Mine training products
(by tokens of prompt + answer): activations grow with the longest sequence of a micro-batch, so the peak
measured here is what a full run reaches at its worst batch, not its typical one. Per size: the process's
resident memory once the model is loaded (before the first step), its peak (``ru_maxrss``) and the seconds
per step after the first. Writes ``benchmarks/results/<name>.{json,md}`` (default ``train-memory-<model>``):

    OMP_NUM_THREADS=1 taskset -c 0 python3 benchmarks/bench_train_memory.py --model gemma3-270m --micro 2,4,8
"""
from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, load_average, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.io import atomic_path, write_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma3-270m", help="a shipped model's name (its default recipe) or a local folder")
    p.add_argument("--data", default="oa-mine", help="attribute data: 'oa-mine' or a folder")
    p.add_argument("--micro", default="2,4,8", help="micro-batch sizes, comma-separated (each at most the batch size)")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per size (the first is not timed)")
    p.add_argument("--r", type=int, default=None, help="LoRA rank (default: the recipe's)")
    p.add_argument("--alpha", type=int, default=None, help="LoRA alpha (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="products per optimizer step (default: the recipe's)")
    p.add_argument("--dropout", default=None, help="LoRA dropouts, comma-separated (default: the recipe's 0.05); each with "
                   "every micro-batch size")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (slower than fp32 on a CPU without native bf16)")
    p.add_argument("--name", default=None, help="results file name (default: train-memory-<model>)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for <name>.json and <name>.md (default: benchmarks/results)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "MICRO:DROPOUT", run by the parent
    args = p.parse_args(argv)
    try:
        args.micro_sizes = [int(m) for m in args.micro.split(",")]
    except ValueError:
        p.error(f"--micro: {args.micro!r} is not a comma-separated list of whole numbers")
    if not args.micro_sizes or min(args.micro_sizes) < 1:
        p.error(f"--micro: {args.micro!r}: every size must be at least 1")
    try:
        args.dropouts = [None] if args.dropout is None else [float(d) for d in args.dropout.split(",")]
    except ValueError:
        p.error(f"--dropout: {args.dropout!r} is not a comma-separated list of numbers")
    if any(d is not None and not 0 <= d < 1 for d in args.dropouts):
        p.error(f"--dropout: {args.dropout!r}: every dropout must be in [0, 1)")
    if args.steps < 2:
        p.error(f"--steps: {args.steps}: at least 2 (the first step is not timed)")
    args.name = args.name or f"train-memory-{Path(args.model).name}"
    return args


def _config(args, micro: int, dropout: float | None = None):
    from leantune.pipelines.attributes import attribute_finetune_config

    extra = {} if dropout is None else {"dropout": dropout}  # None: FinetuneConfig's (the recipes') 0.05
    return attribute_finetune_config(args.model, r=args.r, alpha=args.alpha, batch_size=args.batch_size, micro_batch_size=micro,
                                     max_steps=args.steps, early_stopping_patience=None, device="cpu",
                                     bf16=True if args.bf16 else None, **extra)


KIB_PER_GIB = 1024 ** 2  # /proc's "kB" and ru_maxrss (Linux) are KiB


def _rss_kib() -> int:
    """This process's resident memory now, in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(args) -> dict:
    """Train one micro-batch size in this process; its memory and step times."""
    from transformers import TrainerCallback

    from leantune.data.tokenize import tokenize_example
    from leantune.models.llm import load_tokenizer, resolve_model
    from leantune.tasks.attributes import AttributeTask
    from leantune.train import finetune

    micro, dropout = args.child.split(":")
    micro, dropout = int(micro), (None if dropout == "" else float(dropout))
    cfg, unit = _config(args, micro, dropout)
    resolve_model(args.model)
    task = AttributeTask(data=args.data, unit=unit, progress=False)
    tokenizer = load_tokenizer(args.model)
    pool = task.train_examples(task.train_pool(), tokenizer)
    length = {id(e): len(tokenize_example(tokenizer, e, cfg.cutoff_len, cfg.train_on_inputs)["input_ids"]) for e in pool}
    train = sorted(pool, key=lambda e: -length[id(e)])[: cfg.batch_size * args.steps]

    class Probe(TrainerCallback):
        def __init__(self):
            self.loaded_kib, self.times = 0, []

        def on_train_begin(self, *a, **k):
            self.loaded_kib = _rss_kib()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter())

    probe = Probe()
    with tempfile.TemporaryDirectory(prefix="bench-train-memory-") as work:
        result = finetune(args.model, train, None, Path(work) / "run", cfg, progress=False, callbacks=[probe])
    gaps = [b - a for a, b in zip(probe.times, probe.times[1:])]
    return {"micro_batch_size": micro, "micro_steps": cfg.micro_steps, "dropout": cfg.dropout, "batch_size": cfg.batch_size,
            "r": cfg.r, "alpha": cfg.alpha,
            "target_modules": list(cfg.target_modules), "steps": result.steps, "status": result.status,
            "tokens_longest": max(length[id(e)] for e in train), "tokens_shortest": min(length[id(e)] for e in train),
            "rss_loaded_gib": round(probe.loaded_kib / KIB_PER_GIB, 2),
            "rss_peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_GIB, 2),
            "step_s": round(sum(gaps) / len(gaps), 2) if gaps else None}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)), flush=True)
        return 0
    cfg, unit = _config(args, min(args.micro_sizes))  # validates the recipe before any training
    too_big = [m for m in args.micro_sizes if m > cfg.batch_size]
    if too_big:
        raise SystemExit(f"--micro: {too_big} larger than the batch size {cfg.batch_size} (--batch-size)")
    load_before = load_average()
    rows = []
    passed = list(argv if argv is not None else sys.argv[1:])
    for dropout, micro in [(d, m) for d in args.dropouts for m in args.micro_sizes]:
        child_arg = f"{micro}:{'' if dropout is None else dropout}"
        proc = subprocess.run([sys.executable, __file__, *passed, "--child", child_arg], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"micro-batch size {micro}, dropout {dropout}: the training process failed (exit {proc.returncode}): "
                             + (proc.stderr.strip().splitlines() or ["no output"])[-1])
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    command = "python3 benchmarks/bench_train_memory.py " + shlex.join(passed)
    precision = "bf16 autocast" if args.bf16 else "fp32"
    result = {"command": command, "machine": machine_summary(), "load_avg_before": load_before, "load_avg_after": load_average(),
              "model": args.model, "data": args.data, "unit": unit, "precision": precision, "steps": args.steps, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", result)
    first = rows[0]
    lines = [f"# train-memory: peak memory and step time of the attribute fine-tune by micro-batch size ({args.model}, CPU)", "",
             f"Reproduce: `{command}`", "",
             f"Machine: {result['machine']}; load average {load_before} before, {result['load_avg_after']} after.",
             f"The model's default attribute recipe ({unit} unit, batches of {first['batch_size']}, LoRA r {first['r']} / alpha "
             f"{first['alpha']} on {', '.join(first['target_modules'])}, loss on the answer, {precision}), {args.steps} optimizer steps on "
             f"the {first['batch_size'] * args.steps} longest {args.data} training {unit}s ({first['tokens_shortest']}–{first['tokens_longest']} "
             "tokens of prompt + answer), each setting in a fresh process. Resident memory with the model loaded, before "
             "the first step, and the process's peak; seconds per optimizer step after the first. The longest products make the "
             "peak the one a full run reaches at its worst batch.", "",
             "| micro-batch size | LoRA dropout | forward passes a step | RSS loaded (GiB) | peak RSS (GiB) | s per step |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['micro_batch_size']} | {row['dropout']:g} | {row['micro_steps']} | {row['rss_loaded_gib']:.2f} | "
                     f"{row['rss_peak_gib']:.2f} | {row['step_s']:.1f} |")
    with atomic_path(args.out / f"{args.name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
