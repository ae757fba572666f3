"""Influence of every Games training sample on the SASRec surrogate: speed, well-posedness and solver agreement.

    python3 benchmarks/bench_influence.py [--data games] [--surrogate runs/surrogate-games]

Measures, on one trained surrogate and over all its parameters (item embeddings included):

* wall time of the whole default influence computation after training (empirical-risk gradient,
  Lanczos spectrum estimate and the damping it chooses, LiSSA iHVP over length-bucketed
  mini-batches with tail averaging, one fused pass of batched forward-mode products), twice:
  with the seed and with the seed + 1, whose agreement is the default solver's noise floor;
* conjugate gradient on the *same* Hessian (all samples unless ``--cg-samples``) at the *same*
  damping, and the default LiSSA's Spearman correlation with it;
* whether the reference's fixed damping λ = 0.25 leaves a positive-definite system (CG at 0.25);
* a one-sample-at-a-time gradient loop (the reference's way) on a random subset, extrapolated to
  all samples, and its agreement with the batched products on that subset;
* (unless ``--skip-reference-params``) the single-layer "reference" parameter choice against all
  parameters.

A solver that fails (negative curvature, divergence) is reported in the table, not raised.
It also writes benchmarks/results/surrogate.{json,md}: SASRec vs most-popular test metrics from
the surrogate's training run (trained here if the folder holds none, with its wall time).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from _common import ROOT, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.data import load_dataset  # noqa: E402
from leantune.errors import LeantuneError  # noqa: E402
from leantune.io import read_json, write_json  # noqa: E402
from leantune.models.sasrec import META_FILE, SASRecConfig, load_surrogate, pad_histories, sample_loss  # noqa: E402
from leantune.train.sasrec import train_surrogate  # noqa: E402
from leantune.scoring.influence import InfluenceConfig, compute_influence  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="games")
    p.add_argument("--surrogate", type=Path, default=None, help="surrogate folder (default runs/surrogate-<data>; trained if missing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth", type=int, default=InfluenceConfig.depth)
    p.add_argument("--lissa-batch", type=int, default=InfluenceConfig.lissa_batch)
    p.add_argument("--damping", type=float, default=None, help="λ (default: chosen from the Lanczos spectrum estimate)")
    p.add_argument("--cg-iters", type=int, default=100)
    p.add_argument("--cg-tol", type=float, default=1e-4)
    p.add_argument("--cg-samples", type=int, default=0, help="CG's Hessian on a fixed subsample of this size (0: all, the Hessian LiSSA estimates)")
    p.add_argument("--reference-damping", type=float, default=0.25, help="the reference's fixed λ, checked with CG (0: skip)")
    p.add_argument("--loop-samples", type=int, default=300, help="samples timed in the one-at-a-time loop")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--skip-reference-params", action="store_true", help="skip the single-layer comparison")
    p.add_argument("--surrogate-only", action="store_true", help="only (re)write the surrogate results")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return p.parse_args()


def loop_products(model, samples, positions, vector, names) -> tuple[np.ndarray, float]:
    """s·∇ℓ_i one sample at a time with plain autograd, as the reference does; returns values and seconds."""
    named = dict(model.named_parameters())
    params = [named[n] for n in names]
    sizes = [p.numel() for p in params]
    parts = vector.split(sizes)
    model.eval().requires_grad_(True)
    out = np.zeros(len(positions))
    start = time.perf_counter()
    for row, i in enumerate(positions):
        sample = samples[i]
        seq = pad_histories([sample.history], model.cfg.max_len)
        loss = sample_loss(model, seq, torch.tensor(sample.targets[:1]))
        grads = torch.autograd.grad(loss.sum(), params)
        out[row] = float(sum((g.reshape(-1) * s).sum() for g, s in zip(grads, parts)))
    return out, time.perf_counter() - start


def rho(a, b) -> float:
    return float(spearmanr(a, b)[0])


def surrogate_results(meta: dict, command: str, wall: float | None, out: Path) -> None:
    test = meta["test"]
    record = {
        "command": command,
        "dataset": meta["dataset"],
        "config": meta["config"],
        "seed": meta["seed"],
        "epochs_run": meta["epochs_run"],
        "best_epoch": meta["best_epoch"],
        "best_valid_ndcg@10": meta["best_valid_ndcg@10"],
        "train_seconds": meta["train_seconds"],
        "eval_seconds": meta.get("eval_seconds"),
        "wall_seconds": wall,
        "threads": meta.get("threads"),
        "test": test,
        "machine": surrogate_machine(meta),
    }
    write_json(out / "surrogate.json", record)
    keys = list(test["sasrec"])
    lines = [
        f"# SASRec surrogate vs most-popular on {meta['dataset']} (test users)",
        "",
        f"Command: `{command}`",
        "",
        f"Epochs run {meta['epochs_run']} (best validation NDCG@10 {meta['best_valid_ndcg@10']:.4f} at epoch "
        f"{meta['best_epoch']}); training {meta['train_seconds']:.0f} s"
        + (f", wall {wall:.0f} s" if wall else "") + f"; {record['machine']}.",
        "",
        "| model | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name, label in (("sasrec", "SASRec"), ("most_popular", "most-popular")):
        lines.append(f"| {label} | " + " | ".join(f"{test[name][k]:.4f}" for k in keys) + " |")
    lines.append("")
    lines.append("Per-epoch seconds: " + ", ".join(f"{r['seconds']:.0f}" for r in meta["history"]))
    (out / "surrogate.md").write_text("\n".join(lines) + "\n")


def surrogate_machine(meta: dict) -> str:
    loads = [r["load_average"] for r in meta["history"] if "load_average" in r]
    load = f"load average {min(loads):.1f}-{max(loads):.1f} during training" if loads else "load not recorded"
    return f"{os.cpu_count()} CPU cores ({load}), torch {torch.__version__}, {meta.get('threads', '?')} threads"


def machine(load_before: float) -> str:
    load = os.getloadavg()
    return (f"{machine_summary()} (1-min load average {load_before:.1f} before the timed runs, {load[0]:.1f} at the end; "
            "this benchmark's own threads count)")


def shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def solve_cg(model, samples, damping: float, args) -> dict:
    """CG influence at ``damping``; a solver failure is recorded, not raised."""
    cfg = InfluenceConfig(solver="cg", damping=damping, cg_iters=args.cg_iters, cg_tol=args.cg_tol, cg_samples=args.cg_samples,
                          hvp_batch=256, grad_product=True)
    start = time.perf_counter()
    try:
        run = compute_influence(model, samples, cfg, seed=args.seed)
    except LeantuneError as exc:
        info = {"damping": damping, "failed": str(exc), "seconds": time.perf_counter() - start}
        print(f"CG at λ {damping:.3g}: {exc}", flush=True)
        return {"run": None, "info": info}
    info = {**run.solver_info, "seconds": time.perf_counter() - start}
    print(f"CG at λ {damping:.3g}: {info}", flush=True)
    return {"run": run, "info": info}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    command = "python3 benchmarks/bench_influence.py " + shlex.join(sys.argv[1:])
    dataset = load_dataset(args.data)
    folder = args.surrogate or ROOT / "runs" / f"surrogate-{dataset.name}"
    args.out.mkdir(parents=True, exist_ok=True)

    wall = None
    if not (folder / META_FILE).exists() or read_json(folder / META_FILE).get("status") != "done":
        start = time.perf_counter()
        train_surrogate(dataset, folder, SASRecConfig(), seed=args.seed, progress=True)
        wall = time.perf_counter() - start
    meta = read_json(folder / META_FILE)
    surrogate_command = meta.get("command") or f"leantune surrogate train --data {args.data} --out {shown(folder)}"
    surrogate_results(meta, surrogate_command, wall or meta.get("wall_seconds"), args.out)
    if args.surrogate_only:
        print((args.out / "surrogate.md").read_text())
        return
    model = load_surrogate(folder)
    samples = dataset.train_samples
    print(f"surrogate {folder}: test recall@20 {meta['test']['sasrec']['recall@20']:.4f} "
          f"(most-popular {meta['test']['most_popular']['recall@20']:.4f})", flush=True)

    # torch.func's first forward-mode call pays a one-time set-up; keep it out of the timings.
    start = time.perf_counter()
    compute_influence(model, samples[:64], InfluenceConfig(depth=2, lanczos_steps=2), seed=args.seed)
    warmup = time.perf_counter() - start

    base = InfluenceConfig(depth=args.depth, lissa_batch=args.lissa_batch, damping=args.damping)
    load_before = os.getloadavg()[0]
    runs, seconds = [], []
    for seed in (args.seed, args.seed + 1):
        start = time.perf_counter()
        runs.append(compute_influence(model, samples, base, seed=seed, progress=True))
        seconds.append(time.perf_counter() - start)
        print(f"influence (default LiSSA, seed {seed}) for {len(samples):,} samples: {seconds[-1]:.1f} s "
              f"{runs[-1].timings} λ {runs[-1].solver_info['damping']:.3g}", flush=True)
    lissa_run = runs[0]
    damping = lissa_run.solver_info["damping"]

    rng = np.random.default_rng(args.seed)
    subset = rng.choice(len(samples), size=min(args.loop_samples, len(samples)), replace=False)
    names = [n for n, _ in model.named_parameters()]
    loop_values, loop_seconds = loop_products(model, samples, subset, lissa_run.ihvp, names)
    loop_all = loop_seconds / len(subset) * len(samples)
    batched = lissa_run.influence[subset]
    agreement = float(np.max(np.abs(loop_values - batched)) / np.max(np.abs(loop_values)))
    print(f"loop: {loop_seconds:.1f} s for {len(subset)} samples -> {loop_all:.0f} s for all "
          f"({loop_all / lissa_run.timings['products_s']:.0f}x the batched products); max rel diff {agreement:.2e}", flush=True)

    cg = solve_cg(model, samples, damping, args)
    reference = solve_cg(model, samples, args.reference_damping, args) if args.reference_damping > 0 else None

    record = {
        "command": command,
        "dataset": dataset.name,
        "samples": len(samples),
        "surrogate": shown(folder),
        "num_params": lissa_run.solver_info["num_params"],
        "lissa": lissa_run.solver_info,
        "influence_seconds": seconds[0],
        "influence_seconds_second_seed": seconds[1],
        "warmup_seconds": warmup,
        "timings": lissa_run.timings,
        "loop": {"samples": len(subset), "seconds": loop_seconds, "extrapolated_seconds": loop_all,
                 "max_relative_difference": agreement},
        "speedup_products_vs_loop": loop_all / lissa_run.timings["products_s"],
        "cg": cg["info"],
        "reference_damping_cg": None if reference is None else reference["info"],
        "spearman": {
            "lissa_seed_vs_seed": rho(runs[0].influence, runs[1].influence),
            "lissa_vs_cg": rho(lissa_run.influence, cg["run"].influence) if cg["run"] else None,
            "lissa_vs_grad_product": rho(lissa_run.influence, cg["run"].grad_product) if cg["run"] else None,
            "cg_vs_grad_product": rho(cg["run"].influence, cg["run"].grad_product) if cg["run"] else None,
        },
        "goals": {"influence_seconds": 30.0, "spearman_vs_cg": 0.99, "spearman_seed_vs_seed": 0.99},
        "sign_check": {
            "mean_influence": float(np.mean(lissa_run.influence)),
            "mean_grad_product": float(np.mean(cg["run"].grad_product)) if cg["run"] else None,
        },
    }
    if not args.skip_reference_params:
        start = time.perf_counter()
        ref_run = compute_influence(model, samples, replace(base, params="reference"), seed=args.seed)
        record["reference_params"] = {
            "params": "reference (blocks.1.out.weight)",
            "seconds": time.perf_counter() - start,
            "spearman_vs_all_params_lissa": rho(ref_run.influence, lissa_run.influence),
            "spearman_vs_all_params_cg": rho(ref_run.influence, cg["run"].influence) if cg["run"] else None,
        }
    record["machine"] = machine(load_before)
    write_json(args.out / "influence.json", record)
    write_markdown(args.out / "influence.md", record)
    print((args.out / "influence.md").read_text())


def write_markdown(path: Path, r: dict) -> None:
    s, info, t, goals = r["spearman"], r["lissa"], r["timings"], r["goals"]
    spectrum = info.get("spectrum") or {}

    def fmt(value, digits=4):
        return "failed" if value is None else f"{value:.{digits}f}"

    def cg_row(label, c):
        if c is None:
            return []
        if "failed" in c:
            return [f"| {label} (λ {c['damping']:.3g}) | **failed**: {c['failed']} ({c['seconds']:.0f} s) |"]
        return [f"| {label} (λ {c['damping']:.3g}, Hessian over {c['hessian_samples']:,} samples) | converged {c['converged']} "
                f"in {c['iterations']} iterations, relative residual {c['relative_residual']:.1e}, {c['seconds']:.0f} s |"]

    lines = [
        f"# Influence scores for all {r['samples']:,} {r['dataset']} training samples",
        "",
        f"Command: `{r['command']}`",
        "",
        f"Surrogate: `{r['surrogate']}`, all {r['num_params']:,} parameters (item embeddings included). {r['machine']}.",
        "",
        "| stage (default settings) | seconds |",
        "|---|---:|",
        f"| empirical-risk gradient | {t['grad_s']:.1f} |",
        f"| Lanczos spectrum estimate ({spectrum.get('steps', '-')} steps on {spectrum.get('samples', 0):,} samples) and damping | {t['spectrum_s']:.1f} |",
        f"| LiSSA iHVP ({info['depth']} steps, length-bucketed batches of {info['batch_size']}, tail average over the last "
        f"{info['tail']:.0%}, λ {info['damping']:.3g}, scale {info['scale_used']:.3g}) | {t['ihvp_s']:.1f} |",
        f"| batched products s·∇ℓ_i, all samples (one pass) | {t['products_s']:.1f} |",
        f"| **influence total (after training)**; goal ≤ {goals['influence_seconds']:.0f} s | **{r['influence_seconds']:.1f}** |",
        f"| the same with the next seed | {r['influence_seconds_second_seed']:.1f} |",
        f"| (one-time torch.func set-up in the process, not included above) | {r['warmup_seconds']:.1f} |",
        f"| one-at-a-time gradient loop, {r['loop']['samples']} samples | {r['loop']['seconds']:.1f} |",
        f"| that loop extrapolated to all samples | {r['loop']['extrapolated_seconds']:.0f} |",
        "",
        f"Spectrum estimate of the loss Hessian: smallest Ritz value {spectrum.get('smallest', float('nan')):.3g}, largest "
        f"{spectrum.get('largest', float('nan')):.3g}; damping λ = {info['damping']:.3g} ({info['damping_source']}).",
        "",
        "| conjugate gradient | result |",
        "|---|---|",
        *cg_row("same Hessian and λ as the default LiSSA", r["cg"]),
        *cg_row("the reference's fixed damping", r.get("reference_damping_cg")),
        "",
        f"Speed-up of the batched products over the loop: **{r['speedup_products_vs_loop']:.0f}×**; "
        f"the loop and the batched products agree to {r['loop']['max_relative_difference']:.1e} (max relative difference).",
        "",
        "| Spearman | ρ | goal |",
        "|---|---:|---:|",
        f"| default LiSSA vs CG (same Hessian, same λ) | {fmt(s['lissa_vs_cg'])} | ≥ {goals['spearman_vs_cg']} |",
        f"| default LiSSA, seed vs seed + 1 (noise floor) | {fmt(s['lissa_seed_vs_seed'])} | ≥ {goals['spearman_seed_vs_seed']} |",
        f"| LiSSA vs gradient product (no Hessian) | {fmt(s['lissa_vs_grad_product'])} | |",
        f"| CG vs gradient product | {fmt(s['cg_vs_grad_product'])} | |",
    ]
    if "reference_params" in r:
        ref = r["reference_params"]
        lines.append(f"| single 64×64 layer (the reference's choice) vs all parameters, LiSSA | {fmt(ref['spearman_vs_all_params_lissa'])} | |")
        lines.append(f"| single 64×64 layer vs all parameters, CG | {fmt(ref['spearman_vs_all_params_cg'])} | |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
