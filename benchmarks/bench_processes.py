"""One fine-tune on N CPU cores: one process with N threads vs N data-parallel processes of one thread.

``FinetuneConfig.processes`` (``--processes`` of ``leantune attributes finetune``, ``leantune curve`` and
the benchmarks) trains one run as N PyTorch DDP processes over gloo, each taking its share of every
optimizer step's micro-batches. This times the attribute task's recipe (LoRA r 16 / alpha 32 on every
linear layer, lr 2e-3, batches of 16 products in micro-batches of 8, loss on the answer, bf16 autocast)
for ``--steps`` optimizer steps on the same OA-Mine training products both ways, alternating the two in
rounds, each from a fresh run folder, and compares the losses both log (equal up to rounding with
``--dropout 0``; with the recipe's dropout each process draws its own masks). The wall time of each
call includes loading the model (and, for the processes, starting them); it is what a user waits for.
Writes ``benchmarks/results/processes-<model>.{json,md}``.

    python3 benchmarks/bench_processes.py --model gemma3-270m --cores 2 --steps 6
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, load_average, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.io import atomic_path, write_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gemma3-270m")
    p.add_argument("--cores", type=int, default=2, help="threads of the one process = processes of one thread")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per call")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=1, help="alternations of the two ways")
    p.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (the recipe's 0.05; each process draws its own masks, "
                   "so only with 0 are the two ways' losses equal up to rounding)")
    p.add_argument("--no-bf16", action="store_true", help="fp32 instead of bf16 autocast")
    p.add_argument("--name", default=None, help="results file name (default: processes-<model>)")
    args = p.parse_args(argv)
    if args.cores < 2:
        p.error("--cores must be at least 2")
    args.name = args.name or f"processes-{Path(args.model).name}"
    return args


def _finetune(args, train, processes: int, folder: Path):
    import torch

    from leantune.tasks.attributes import RECIPE, AttributeTask
    from leantune.train import FinetuneConfig, finetune

    cfg = FinetuneConfig(r=RECIPE["r"], alpha=RECIPE["alpha"], dropout=args.dropout, target_modules=RECIPE["target_modules"], lr=RECIPE["lr"],
                         batch_size=args.batch_size, micro_batch_size=args.micro_batch_size, max_steps=args.steps,
                         train_on_inputs=AttributeTask.train_on_inputs, early_stopping_patience=None, device="cpu",
                         bf16=None if args.no_bf16 else True, processes=processes)
    torch.set_num_threads(args.cores)  # the processes share these out: one thread each
    start = time.perf_counter()
    result = finetune(args.model, train, None, folder, cfg, progress=False)
    return time.perf_counter() - start, result.wall_s, [h["train_loss"] for h in result.history]


def measure(args) -> dict:
    from leantune.models.llm import load_tokenizer, resolve_model
    from leantune.tasks.attributes import AttributeTask

    resolve_model(args.model)
    task = AttributeTask(progress=False)
    tokenizer = load_tokenizer(args.model)
    train = task.train_examples(task.train_pool()[: args.batch_size * args.steps], tokenizer)
    ways = {"threads": 1, "processes": args.cores}
    times = {k: [] for k in ways}
    train_times = {k: [] for k in ways}
    losses = {}
    work = Path(tempfile.mkdtemp(prefix="bench-processes-"))
    try:
        for r in range(args.rounds):
            for way, processes in ways.items():
                seconds, train_s, history = _finetune(args, train, processes, work / f"{way}-{r}")
                times[way].append(seconds)
                train_times[way].append(train_s)
                losses.setdefault(way, history)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    best = {k: min(v) for k, v in times.items()}
    best_train = {k: min(v) for k, v in train_times.items()}
    return {
        "model": args.model, "steps": args.steps, "call_s": times, "step_s": {k: v / args.steps for k, v in best.items()},
        "speedup": best["threads"] / best["processes"], "train_s": train_times,
        "train_step_s": {k: v / args.steps for k, v in best_train.items()},
        "train_speedup": best_train["threads"] / best_train["processes"], "loss_threads": losses["threads"], "loss_processes": losses["processes"],
        "max_abs_loss_diff": max(abs(a - b) for a, b in zip(losses["threads"], losses["processes"])),
    }


def main(argv=None) -> None:
    args = parse_args(argv)
    load_before = load_average()
    row = measure(args)
    command = "python3 benchmarks/bench_processes.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    result = {
        "command": command, "machine": machine_summary(),
        "load_avg_before": load_before, "load_avg_after": load_average(),
        "precision": "fp32" if args.no_bf16 else "bf16 autocast", "dropout": args.dropout, "cores": args.cores, "batch_size": args.batch_size,
        "micro_batch_size": args.micro_batch_size, "rounds": args.rounds, "models": [row],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{args.name}.json", result)
    lines = [
        f"# processes: one fine-tune on {args.cores} CPU cores, {args.cores} threads in one process vs {args.cores} processes of one thread",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Machine: {result['machine']}; load average {load_before} before, {result['load_avg_after']} after.",
        f"The attribute recipe (LoRA r 16 / alpha 32 on every linear layer, batches of {args.batch_size} OA-Mine training products in "
        f"micro-batches of {args.micro_batch_size}, LoRA dropout {args.dropout}, loss on the answer, {result['precision']}), {args.steps} optimizer steps per call from a "
        f"fresh folder, best of {args.rounds} alternating round(s). Per call: the seconds the caller waits (starting the "
        "processes, loading the model, training); in the run: the run's own `wall_s` (rank 0 for the processes: loading the model "
        "and training, without starting Python and importing torch in each process).",
        "",
        "| model | s per step per call, one process | processes | speed-up | s per step in the run, one process | processes | speed-up | max abs difference of the logged losses |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {row['model']} | {row['step_s']['threads']:.2f} | {row['step_s']['processes']:.2f} | {row['speedup']:.2f}x | "
        f"{row['train_step_s']['threads']:.2f} | {row['train_step_s']['processes']:.2f} | {row['train_speedup']:.2f}x | {row['max_abs_loss_diff']:.1e} |",
    ]
    with atomic_path(RESULTS / f"{args.name}.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
