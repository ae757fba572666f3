"""A cheaper model state for TIGER effort: warm up on a subsample instead of a full epoch on all samples.

    python3 benchmarks/bench_tiger_warmup.py [--data games] [--sizes 0 8192 2048] [--score-samples 8192]

For each warm-up size (0 = all training samples, DEALRec-for-TIGER's default), trains the one-epoch
warm-up TIGER exactly as the ``tiger_effort`` scorer does (``--opt tiger_warmup_samples=N``), then
scores the same seeded ``--score-samples`` training samples with it. Reports each size's warm-up and
scoring seconds and the Spearman correlation (and top-10% overlap) of its effort with the full
warm-up's, and (unless --no-noise-floor) the same for a second full warm-up with the next seed. Semantic IDs come from runs/tiger-<data>/ (built there if missing, not timed).
Writes benchmarks/results/tiger-warmup.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from _common import ROOT  # first: puts the repo on sys.path, the hub offline

from leantune.data import load_dataset  # noqa: E402
from leantune.data.units import seeded_sample  # noqa: E402
from leantune.io import write_json  # noqa: E402
from leantune.models.tiger import load_tiger  # noqa: E402
from leantune.train.rqvae import semantic_ids_for  # noqa: E402
from leantune.scoring.tiger_effort import per_sample_grad_norms, train_warmup  # noqa: E402
from leantune.train.tiger import train_tiger  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="games")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 8192, 2048])
    ap.add_argument("--score-samples", type=int, default=8192)
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-noise-floor", action="store_true", help="skip the second full warm-up with seed + 1")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    if 0 not in args.sizes:
        sys.exit("error: --sizes must include 0 (the full warm-up every other size is compared with)")
    dataset = load_dataset(args.data)
    sids, _, _ = semantic_ids_for(dataset, None, seed=args.seed, progress=True)
    scored = seeded_sample(dataset.train_samples, args.score_samples, args.seed, "--score-samples")
    scored = sorted(scored, key=lambda s: len(s.history))
    load_before = os.getloadavg()[0]
    rows, efforts = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = [(n, args.seed) for n in sorted(args.sizes)] + ([] if args.no_noise_floor else [(0, args.seed + 1)])
        for n, seed in runs:
            start = time.perf_counter()
            train_warmup(train_tiger, dataset, sids, Path(tmp) / f"n{n}-s{seed}", n, seed, args.preset, epochs=1)
            warm = time.perf_counter() - start
            model, encoder = load_tiger(Path(tmp) / f"n{n}-s{seed}", sids)
            start = time.perf_counter()
            efforts[(n, seed)] = per_sample_grad_norms(model, encoder, scored)
            score = time.perf_counter() - start
            rows.append({"warmup_samples": n or len(dataset.train_samples), "size_arg": n, "seed": seed,
                         "warmup_s": warm, "score_s": score})
            print(rows[-1], flush=True)
    k = max(1, len(scored) // 10)
    full = efforts[(0, args.seed)]
    top_full = set(np.argsort(-full)[:k])
    for row in rows:
        e = efforts[(row["size_arg"], row["seed"])]
        row["spearman_vs_full"] = float(spearmanr(e, full)[0])
        row["top10_overlap_vs_full"] = len(top_full & set(np.argsort(-e)[:k])) / k
    record = {"command": "python3 benchmarks/bench_tiger_warmup.py " + shlex.join(sys.argv[1:]), "data": dataset.name,
              "train_samples": len(dataset.train_samples), "score_samples": len(scored), "preset": args.preset,
              "rows": rows, "threads": torch.get_num_threads(),
              "load_average": {"before": load_before, "after": os.getloadavg()[0]}}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "tiger-warmup.json", record)
    lines = ["# TIGER effort from a cheaper warm-up", "", f"Command: `{record['command']}`", "",
             f"One-epoch warm-up TIGER ({args.preset} preset) on all {len(dataset.train_samples):,} {dataset.name} training "
             f"samples or a seeded subset; effort (per-sample gradient norm of the decoder head) on the same "
             f"{len(scored):,} seeded training samples. {os.cpu_count()} CPU cores, {record['threads']} torch threads, "
             f"1-min load average {load_before:.1f} before, {record['load_average']['after']:.1f} after.", "",
             f"The reference is the full warm-up with seed {args.seed}; the full warm-up with the next seed is the noise floor "
             "(how well two equally good warm-ups agree).", "",
             "| warm-up samples | seed | warm-up s | effort s (scored samples) | Spearman vs full warm-up | top-10% overlap |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['warmup_samples']:,} | {r['seed']} | {r['warmup_s']:.0f} | {r['score_s']:.0f} | "
                     f"{r['spearman_vs_full']:.4f} | {r['top10_overlap_vs_full']:.2f} |")
    (args.out / "tiger-warmup.md").write_text("\n".join(lines) + "\n")
    print((args.out / "tiger-warmup.md").read_text())


if __name__ == "__main__":
    main()
