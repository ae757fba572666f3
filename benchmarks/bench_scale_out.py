"""Two scoring processes against one: the speed-up of LLM effort scoring on this machine, and equality.

    python3 benchmarks/bench_scale_out.py [--data games] [--pool 64] [--model smollm2]

Runs ``leantune prune --method effort`` on the same seeded pool three ways, each into a fresh folder:
one process with all cores' threads, and two processes (``torchrun --nproc_per_node 2``) with the
threads split between them; then checks that the merged scores and the selection are the same.
Writes benchmarks/results/scale-out.{json,md}. Effort over all of Games is the cost the DEALRec
reproduction has to pay; this says how much a second process on the same CPU buys.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ROOT  # first: puts the repo on sys.path, the hub offline

from leantune.device import free_port  # noqa: E402
from leantune.io import write_json  # noqa: E402
from leantune.pruning import load_selection  # noqa: E402
from leantune.scoring.scorefile import read_scores  # noqa: E402


def run(launcher: list[str], args: list[str], out: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run([*launcher, *args, "--out", str(out)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{shlex.join(launcher)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="games")
    ap.add_argument("--pool", type=int, default=64)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--chunk-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    cores = os.cpu_count() or 2
    prune = ["prune", "--data", args.data, "--method", "effort", "--model", args.model, "--pool", str(args.pool),
             "--budget", str(max(1, args.pool // 4)), "--chunk-size", str(args.chunk_size), "--quiet"]
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The model conversion and tokenisation caches are warmed by a first tiny run, not timed.
        run([sys.executable, "-m", "leantune"], [*prune[:7], "--pool", "4", "--budget", "1", "--quiet"], tmp / "warm", cores)
        one = run([sys.executable, "-m", "leantune"], prune, tmp / "one", cores)
        two = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                   "-m", "leantune"], prune, tmp / "two", max(1, cores // 2))
        a, b = read_scores(tmp / "one" / "scores.parquet"), read_scores(tmp / "two" / "scores.parquet")
        same_selection = load_selection(tmp / "one").sample_ids == load_selection(tmp / "two").sample_ids
        processes = load_selection(tmp / "two").record["processes"]
        max_rel = float(np.max(np.abs(a["effort"] - b["effort"]) / np.abs(a["effort"])))
    record = {
        "command": "python3 benchmarks/bench_scale_out.py " + shlex.join(sys.argv[1:]),
        "prune_args": prune, "cores": cores, "one_process_s": one, "two_processes_s": two, "speedup": one / two,
        "processes_recorded": processes, "same_selection": same_selection, "max_relative_difference": max_rel,
        "load_average": {"before": load_before, "after": os.getloadavg()[0]},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "scale-out.json", record)
    lines = [
        "# Effort scoring: two processes against one on the same CPU", "",
        f"Command: `{record['command']}`", "",
        f"`leantune {shlex.join(prune)}` (whole command, model loading included), {cores} CPU cores; "
        f"1-min load average {load_before:.1f} before, {record['load_average']['after']:.1f} after (this benchmark's own processes count).", "",
        "| launch | threads per process | seconds |", "|---|---:|---:|",
        f"| one process | {cores} | {one:.1f} |",
        f"| `torchrun --nproc_per_node 2` | {max(1, cores // 2)} | {two:.1f} |", "",
        f"Speed-up **{one / two:.2f}×**; the two-process run recorded {processes} processes; same selection: {same_selection}; "
        f"largest relative difference of an effort score {max_rel:.1e}.",
    ]
    (args.out / "scale-out.md").write_text("\n".join(lines) + "\n")
    print((args.out / "scale-out.md").read_text())


if __name__ == "__main__":
    main()
