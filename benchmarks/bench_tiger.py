"""TIGER on Games: DEALRec vs Random at the same budget, and full-data TIGER (quality and wall time).

    python3 benchmarks/bench_tiger.py                      # defaults below
    python3 benchmarks/bench_tiger.py --seeds 0 --test-users 200 --full-epochs 1 --pruned-epochs 10   # smoke run

Steps (each reuses its folder under --work when re-run with the same settings):
1. semantic IDs (MiniLM item embeddings -> RQ-VAE), usage per level and collision rate;
2. full-data TIGER (all 49,156 training samples);
3. DEALRec at --budget: ``leantune.pruning.prune`` with method ``dealrec-tiger`` = influence
   (SASRec surrogate) + λ·tiger_effort, coverage-enhanced selection; scores are computed once
   (seed 0) and every seed draws its own coverage sample from them, as ``prune --seed`` would;
4. Random at --budget, one draw per seed;
5. TIGER trained on every subset (seeded like the draw) and evaluated, with the full-data model,
   on the same seeded test-user subset (constrained beam search, beam 20).

Results: benchmarks/results/tiger.json and tiger.md. Times are wall-clock seconds on whatever
machine runs this (the development machine's 2 cores were shared with other jobs).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from _common import ROOT, machine_summary  # first: puts the repo on sys.path, the hub offline

from leantune.data import load_dataset  # noqa: E402
from leantune.io import parse_options, write_json  # noqa: E402
from leantune.paths import display_path  # noqa: E402
from leantune.train.rqvae import build_semantic_ids  # noqa: E402
from leantune.evaluation.units import write_per_unit  # noqa: E402
from leantune.evaluation.tiger import evaluate_tiger  # noqa: E402
from leantune.models.tiger import tiger_config  # noqa: E402
from leantune.train.tiger import train_tiger  # noqa: E402

KS = (10, 20)
METRICS = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="games")
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--lam", type=float, default=0.3, help="effort weight λ (reference Games run: 0.3)")
    p.add_argument("--preset", default="small", help="TIGER size for every model here (paper|small)")
    p.add_argument("--full-epochs", type=int, default=5, help="max epochs of the full-data model (batch 256, lr 1e-3)")
    p.add_argument("--pruned-epochs", type=int, default=60, help="max epochs of a pruned model")
    p.add_argument("--pruned-batch", type=int, default=128)
    p.add_argument("--pruned-lr", type=float, default=3e-3, help="peak lr of pruned runs (a brief check on one random subset)")
    p.add_argument("--val-users", type=int, default=1000, help="seeded validation users for early stopping (on loss)")
    p.add_argument("--test-users", type=int, default=0,
                   help="seeded test-user subset (default 0 = all 8,696; at R@20 ≈ 0.01 all users detect about 40%% "
                        "relative unpaired at 80%% power, 2,000 users only about 90%%: see `leantune power`)")
    p.add_argument("--surrogate-dir", type=Path, default=None,
                   help="a trained SASRec surrogate (`leantune surrogate train`) for influence; default: trained or cached by the scorer")
    p.add_argument("--surrogate-epochs", type=int, default=0,
                   help="train the SASRec surrogate here for at most N epochs (0 = the scorer's own, trained to convergence)")
    p.add_argument("--warmup-epochs", type=int, default=1, help="epochs of the TIGER model behind the effort score")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="extra scorer option (JSON value), e.g. influence_solver=cg")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "cache" / "tiger")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tiger")
    p.add_argument("--report-only", action="store_true", help="rewrite OUT.md from OUT.json and stop")
    return p.parse_args()


def register_method():
    """DEALRec for TIGER as a pruning method: influence + λ·tiger_effort, coverage selection."""
    from leantune.pruning import METHODS, Method

    if "dealrec-tiger" not in METHODS:
        METHODS.register("dealrec-tiger")(Method(
            "dealrec-tiger", ("influence", "tiger_effort"), "coverage",
            lambda c: {"influence": 1.0, "tiger_effort": c.lam},
            "DEALRec for TIGER: minmax(influence) + λ·minmax(tiger_effort), coverage-enhanced selection."))


def short_surrogate(ds, args) -> Path:
    """A SASRec surrogate capped at --surrogate-epochs (the reference trains it to convergence)."""
    from leantune.models.sasrec import SASRecConfig
    from leantune.train.sasrec import train_surrogate

    folder = args.work / f"surrogate-e{args.surrogate_epochs}"
    train_surrogate(ds, folder, SASRecConfig(max_epochs=args.surrogate_epochs), seed=0)
    return folder


def dealrec_selections(ds, args, ids_dir) -> tuple[dict[int, list[int]], dict]:
    from leantune.pruning import PruneConfig, build_selector, prune
    from leantune.scoring.scorefile import read_scores

    register_method()
    options = {"tiger_ids": str(ids_dir), "tiger_preset": args.preset, "tiger_warmup_epochs": args.warmup_epochs,
               "device": args.device, **parse_options(args.opt)}
    if args.surrogate_dir is not None:
        options["surrogate_dir"] = str(args.surrogate_dir)
    t0 = time.perf_counter()
    first = prune(ds, args.budget, "dealrec-tiger", args.work / "prune-dealrec", seed=args.seeds[0], lam=args.lam,
                  options=options)
    wall = time.perf_counter() - t0
    scores = read_scores(first.scores_path)
    selections = {args.seeds[0]: first.sample_ids}
    for seed in args.seeds[1:]:
        cfg = PruneConfig(budget=args.budget, method="dealrec-tiger", seed=seed, lam=args.lam)
        chosen = build_selector(cfg).select(scores, args.budget, np.random.default_rng([seed, 2]))  # prune()'s draw
        selections[seed] = sorted(int(i) for i in scores["sample_id"][np.asarray(chosen)])
    info = {"wall_s_this_run": round(wall, 1), "timings": first.record["timings"],
            "score_stats": first.record["score_stats"], "selector_settings": first.record["selector_settings"]}
    return selections, info


def random_selections(ds, args) -> dict[int, list[int]]:
    from leantune.pruning import prune

    return {s: prune(ds, args.budget, "random", args.work / f"prune-random-s{s}", seed=s, progress=False).sample_ids
            for s in args.seeds}


def train_and_eval(ds, sids, sample_ids, name, cfg, seed, args) -> dict:
    t0 = time.perf_counter()
    run = train_tiger(ds, sids, sample_ids, args.work / name, cfg, seed=seed, device=args.device)
    wall = time.perf_counter() - t0
    cached = args.work / name / "bench_eval.json"  # a re-run after a crash keeps finished evaluations
    want = {"run": run.key, "users": args.test_users}
    ev = json.loads(cached.read_text()) if cached.exists() else {}
    if ev.get("for") != want or not (args.work / name / "eval" / "per_unit.jsonl").exists():
        ev = evaluate_tiger(ds, sids, args.work / name, users=args.test_users, seed=0, ks=KS, device=args.device)
        write_per_unit(args.work / name / "eval", ev.pop("per_unit"))
        write_json(cached, {**ev, "for": want})
    row = {"run": name, "seed": seed, "samples": run.n_samples, "epochs": run.epochs, "steps": run.steps,
           "best_epoch": run.best_epoch, "best_val_loss": run.best_val, "stopped": run.stopped,
           "train_wall_s": run.wall_s, "train_wall_s_this_run": round(wall, 1), "eval_wall_s": ev["wall_s"],
           "test_users": ev["users"], **ev["metrics"], "stderr": ev["stderr"]}
    print(f"{name}: {run.n_samples} samples, {run.epochs} epochs ({run.stopped}), train {run.wall_s:.0f}s, "
          + "  ".join(f"{k} {row[k]:.4f}" for k in METRICS), flush=True)
    return row


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in METRICS + ["train_wall_s"]:
        vals = np.array([r[key] for r in rows], dtype=float)
        out[key] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0}
    return out


def surrogate_note(result: dict) -> str:
    st = result["settings"]
    if st["surrogate_epochs"]:
        return f"at most {st['surrogate_epochs']} epochs, trained by this benchmark"
    if st["surrogate_dir"]:
        return f"given by --surrogate-dir {st['surrogate_dir']}"
    return "none separate: inside the influence scoring time"


def caveats(result: dict) -> list[str]:
    st, full = result["settings"], result["runs"]["full"][0]
    out = []
    if full["stopped"] == "max-epochs":
        out.append(f"The full-data model stopped at its {full['epochs']}-epoch cap (best validation loss at epoch "
                   f"{full['best_epoch']}), so it is not converged: more epochs would raise its accuracy and its cost.")
    if st["surrogate_epochs"]:
        out.append(f"The SASRec surrogate was trained for {st['surrogate_epochs']} epochs only (DEALRec trains it to "
                   "convergence); a CPU shared with other jobs made full training too slow here.")
    if st["opt"]:
        why = " (at the reference scale 25 LiSSA diverged on this surrogate)" if any("influence_scale" in o for o in st["opt"]) else ""
        out.append(f"Scorer options changed from the reference: {', '.join(st['opt'])}{why}.")
    out.append(f"Pruned runs: batch {st['pruned_batch']}, lr {st['pruned_lr']:g}, early stopping on validation loss "
               f"({st['val_users']} seeded users); full data: batch 256, lr 1e-3. Same model preset for all.")
    return out


def markdown(result: dict, command: str) -> str:
    s = result["summary"]
    lines = [
        f"# TIGER on {result['settings']['data']}: DEALRec vs Random vs full data",
        "",
        f"Reproduce: `{command}`",
        "",
        f"Model preset `{result['settings']['preset']}`, budget {result['settings']['budget']}, seeds {result['settings']['seeds']}, "
        f"test users {result['test_users']} (seeded subset of {result['test_users_total']}), constrained beam search (beam 20).",
        f"Machine: {result['machine']}. Wall times are from a CPU shared with other jobs: compare them within this run only.",
        "",
        "| method | samples | " + " | ".join(METRICS) + " | train s |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for method in ("dealrec", "random", "full"):
        m = s[method]
        n = result["runs"][method][0]["samples"]
        cells = [f"{m[k]['mean']:.4f} ± {m[k]['std']:.4f}" if method != "full" else f"{m[k]['mean']:.4f}" for k in METRICS]
        lines.append(f"| {method} | {n} | " + " | ".join(cells) + f" | {m['train_wall_s']['mean']:.0f} |")
    full = result["runs"]["full"][0]
    lines += [
        "",
        "± is the standard deviation over seeds (selection draw and training seed). Sampling error of one run on "
        f"this test subset (standard error over users), full-data model: recall@10 ± {full['stderr']['recall@10']:.4f}, "
        f"ndcg@10 ± {full['stderr']['ndcg@10']:.4f}; a pruned run's is of the same order.",
    ]
    c = result["cost"]
    sid = result["semantic_ids"]
    lines += [
        "",
        "## Cost (wall seconds)",
        "",
        f"- full-data training: {c['full_train_s']:.0f} s",
        f"- DEALRec scoring (influence: surrogate gradients + LiSSA; tiger_effort incl. its {result['settings']['warmup_epochs']}-epoch "
        f"warm-up TIGER): {c['dealrec_scoring_s']:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in c['dealrec_scoring_by_scorer_s'].items())})",
        f"- SASRec surrogate training ({surrogate_note(result)}; its recorded train_seconds): {c['surrogate_train_s']:.0f} s",
        f"- DEALRec training (mean per seed): {c['dealrec_train_s']:.0f} s; total DEALRec = {c['dealrec_total_s']:.0f} s "
        f"= {c['dealrec_total_s'] / c['full_train_s']:.2f}x the full-data training",
        f"- Random training (mean per seed): {c['random_train_s']:.0f} s",
        "",
        "## Caveats",
        "",
        *[f"- {line}" for line in caveats(result)],
        "",
        "## Semantic IDs",
        "",
        *[f"- {line}" for line in sid["lines"]],
        f"- built in {sid['wall_s']:.0f} s this run (0 when reused)",
        "",
        "## Reference (DEALRec paper, TIGER on Games, 1,024 samples)",
        "",
        "R@10 / R@20 / N@10 / N@20: DEALRec .0074 / .0114 / .0062 / .0074, Random .0062 / .0102 / .0039 / .0051 "
        "(their split, item embeddings and TIGER size; compare trends, not values).",
    ]
    return "\n".join(lines) + "\n"


def paired_comparisons(args, runs: dict, result: dict) -> str:
    """DEALRec and full data against Random, paired over the same test users (``leantune compare``)."""
    from leantune.evaluation.compare import compare, load_evaluation

    evaluations = [load_evaluation(args.work / r["run"] / "eval", name=method) for method, rows in runs.items() for r in rows]
    lines, result["comparisons"] = ["", "## Paired comparisons (leantune compare)", ""], {}
    for metric in ("recall@20", "ndcg@20"):
        cmp = compare(evaluations, baseline="random", metric=metric)
        cmp.write(args.out.parent / f"{args.out.name}-compare-{metric.replace('@', '')}")
        result["comparisons"][metric] = cmp.to_dict()
        lines += [f"### {metric}", "", cmp.to_markdown(), ""]
    return "\n".join(lines)


def main():
    args = parse_args()
    if args.report_only:
        result = json.loads(args.out.with_suffix(".json").read_text())
        args.out.with_suffix(".md").write_text(markdown(result, result["command"]))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    command = "python3 benchmarks/bench_tiger.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    ds = load_dataset(args.data)
    ids_dir = args.work / "ids"

    t0 = time.perf_counter()
    sids = build_semantic_ids(ds, ids_dir, seed=0)
    sid_wall = time.perf_counter() - t0
    print("\n".join(sids.stats.lines()), flush=True)

    common = dict(val_users=args.val_users, val_metric="loss", patience=3)
    full_cfg = tiger_config(args.preset, max_epochs=args.full_epochs, eval_every_steps=1, **common)
    pruned_cfg = tiger_config(args.preset, max_epochs=args.pruned_epochs, batch_size=args.pruned_batch, lr=args.pruned_lr,
                              warmup_steps=50, eval_every_steps=3 * -(-args.budget // args.pruned_batch), **common)

    runs = {"full": [train_and_eval(ds, sids, None, "full", full_cfg, 0, args)]}
    if args.surrogate_epochs and args.surrogate_dir is None:
        args.surrogate_dir = short_surrogate(ds, args)
    dealrec, dealrec_info = dealrec_selections(ds, args, ids_dir)
    randoms = random_selections(ds, args)
    runs["dealrec"] = [train_and_eval(ds, sids, dealrec[s], f"dealrec-s{s}", pruned_cfg, s, args) for s in args.seeds]
    runs["random"] = [train_and_eval(ds, sids, randoms[s], f"random-s{s}", pruned_cfg, s, args) for s in args.seeds]

    summary = {k: summarise(v) for k, v in runs.items()}
    # compute_seconds covers every chunk, also those of an earlier interrupted run; the first chunk
    # includes training the SASRec surrogate (unless cached) and the warm-up TIGER behind effort.
    scoring = {name: stage["compute_seconds"] for name, stage in dealrec_info["timings"]["scoring"].items()}
    dealrec_scoring = float(sum(scoring.values()))
    surrogate_s = 0.0
    if args.surrogate_dir is not None:  # trained by a separate command: add its recorded training time
        surrogate_s = float(json.loads((args.surrogate_dir / "surrogate.json").read_text()).get("train_seconds", 0.0))
    cost = {
        "full_train_s": summary["full"]["train_wall_s"]["mean"],
        "dealrec_scoring_s": dealrec_scoring,
        "dealrec_scoring_by_scorer_s": scoring,
        "dealrec_train_s": summary["dealrec"]["train_wall_s"]["mean"],
        "surrogate_train_s": surrogate_s,
        "dealrec_total_s": dealrec_scoring + surrogate_s + summary["dealrec"]["train_wall_s"]["mean"],
        "random_train_s": summary["random"]["train_wall_s"]["mean"],
    }
    result = {
        "command": command,
        "settings": {**vars(args), "work": display_path(args.work), "out": display_path(args.out),
                     "surrogate_dir": display_path(args.surrogate_dir) if args.surrogate_dir else None},
        "machine": f"{machine_summary(args.device)}, device {args.device}",
        "test_users": runs["full"][0]["test_users"],
        "test_users_total": len(ds.test_samples),
        "configs": {"full": asdict(full_cfg), "pruned": asdict(pruned_cfg)},
        "semantic_ids": {"stats": asdict(sids.stats), "lines": sids.stats.lines(), "wall_s": round(sid_wall, 1)},
        "dealrec": dealrec_info,
        "runs": runs,
        "summary": summary,
        "cost": cost,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    compare_md = paired_comparisons(args, runs, result)
    write_json(args.out.with_suffix(".json"), result)
    md = markdown(result, command) + compare_md
    args.out.with_suffix(".md").write_text(md)
    print(md)
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
