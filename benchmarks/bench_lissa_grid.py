"""How LiSSA's mini-batch size, depth and scale decide its agreement with CG (the influence defaults' evidence).

    python3 benchmarks/bench_lissa_grid.py [--surrogate runs/surrogate-games] [--grid 600,32,2 300,32,1 ...]

On the Games surrogate (all parameters, all 49,156 training samples): the empirical-risk gradient g,
the Lanczos-chosen damping λ (as the influence scorer's default), CG's solution of (H + λI)s = g on the
full Hessian as the reference, and then for each grid cell ``depth,batch,scale_factor`` LiSSA with
scale = scale_factor·(λ_max + λ), seeds 0 and 1: Spearman of its influence against CG's, seed
against seed, relative error of s, and the solve's seconds. Writes benchmarks/results/lissa-grid.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from scipy.stats import spearmanr

from _common import ROOT  # first: puts the repo on sys.path, the hub offline

from leantune.data import load_dataset  # noqa: E402
from leantune.io import write_json  # noqa: E402
from leantune.models.sasrec import load_surrogate  # noqa: E402
from leantune.scoring.ihvp import CGConfig, auto_damping, conjugate_gradient  # noqa: E402
from leantune.scoring.influence import InfluenceConfig, SurrogateObjective, estimate_spectrum, frozen, lissa_ihvp  # noqa: E402

DEFAULT_GRID = ["300,32,1", "600,32,1", "300,64,1", "300,128,1", "200,256,1", "400,32,2", "600,32,2", "400,64,2", "600,64,2"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="games")
    ap.add_argument("--surrogate", type=Path, default=ROOT / "runs" / "surrogate-games")
    ap.add_argument("--grid", nargs="+", default=DEFAULT_GRID, help="cells depth,batch,scale_factor")
    ap.add_argument("--cg-tol", type=float, default=1e-4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    cells = []
    for cell in args.grid:
        try:
            depth, batch, factor = cell.split(",")
            cells.append((int(depth), int(batch), float(factor)))
        except ValueError:
            sys.exit(f"error: --grid {cell!r}: expected depth,batch,scale_factor such as 600,32,2")
    defaults = InfluenceConfig()
    dataset = load_dataset(args.data)
    model = load_surrogate(args.surrogate)
    load_before = os.getloadavg()[0]
    rows = []
    with frozen(model):
        obj = SurrogateObjective(model, dataset.train_samples, "all", defaults.batch_size)
        g = obj.mean_grad()
        spectrum = estimate_spectrum(obj, g, defaults, 0)
        lam = auto_damping(spectrum, defaults.damping_margin)
        print(f"λ {lam:.3g} (Lanczos {spectrum.smallest:.3g} .. {spectrum.largest:.3g})", flush=True)
        start = time.perf_counter()
        cg = conjugate_gradient(lambda v: obj.full_hvp(v, None, 256), g, CGConfig(lam, 100, args.cg_tol))
        cg_seconds = time.perf_counter() - start
        reference = obj.products(cg.x)
        print(f"CG: {cg.iterations} iterations, residual {cg.relative_residual:.1e}, {cg_seconds:.0f} s", flush=True)
        for depth, batch, factor in cells:
            scale = factor * (spectrum.largest + lam)
            runs = []
            cell = replace(defaults, depth=depth, lissa_batch=batch)
            for seed in (0, 1):
                info = {}
                start = time.perf_counter()
                s = lissa_ihvp(obj, g, lam, scale, cell, seed, info=info)
                seconds = time.perf_counter() - start
                values = obj.products(s)
                runs.append({"seconds": seconds, "spearman_vs_cg": float(spearmanr(values, reference)[0]),
                             "relative_error": float((s - cg.x).norm() / cg.x.norm()), "restarts": info["restarts"],
                             "values": values})
            row = {"depth": depth, "batch": batch, "scale_factor": factor, "scale": scale,
                   "seconds": [r["seconds"] for r in runs], "spearman_vs_cg": [r["spearman_vs_cg"] for r in runs],
                   "relative_error": [r["relative_error"] for r in runs], "restarts": [r["restarts"] for r in runs],
                   "seed_vs_seed": float(spearmanr(runs[0]["values"], runs[1]["values"])[0])}
            rows.append(row)
            print(row, flush=True)
    record = {"command": "python3 benchmarks/bench_lissa_grid.py " + shlex.join(sys.argv[1:]), "damping": lam,
              "spectrum": {"smallest": spectrum.smallest, "largest": spectrum.largest, "steps": spectrum.steps},
              "cg": {"iterations": cg.iterations, "relative_residual": cg.relative_residual, "seconds": cg_seconds},
              "rows": rows, "load_average": {"before": load_before, "after": os.getloadavg()[0]},
              "threads": torch.get_num_threads()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "lissa-grid.json", record)
    lines = ["# LiSSA on the Games surrogate: mini-batch, depth and scale against CG on the full Hessian", "",
             f"Command: `{record['command']}`", "",
             f"λ = {lam:.3g} (2·|Lanczos λ_min| on 1,024 samples; λ_max estimate {spectrum.largest:.3g}); CG reference: "
             f"{cg.iterations} iterations, relative residual {cg.relative_residual:.1e}, {cg_seconds:.0f} s. "
             f"{os.cpu_count()} CPU cores, {record['threads']} torch threads, 1-min load average {load_before:.1f} before and "
             f"{record['load_average']['after']:.1f} after (this benchmark's own threads count). Tail average over the last "
             f"{defaults.tail:.0%} of the steps; length-bucketed, pass-weighted batches.", "",
             "| depth | batch | scale | Spearman vs CG (seed 0 / 1) | seed vs seed | rel. error of s (0 / 1) | LiSSA s (0 / 1) |",
             "|---:|---:|---|---|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['depth']} | {r['batch']} | {r['scale_factor']:g}·(λ_max+λ) = {r['scale']:.3g} | "
                     f"{r['spearman_vs_cg'][0]:.4f} / {r['spearman_vs_cg'][1]:.4f} | {r['seed_vs_seed']:.4f} | "
                     f"{r['relative_error'][0]:.3f} / {r['relative_error'][1]:.3f} | {r['seconds'][0]:.1f} / {r['seconds'][1]:.1f} |")
    (args.out / "lissa-grid.md").write_text("\n".join(lines) + "\n")
    print((args.out / "lissa-grid.md").read_text())


if __name__ == "__main__":
    main()
