"""BIGRec on Games at reduced scale: DEALRec vs Random at the same budget, several seeds, plus the
base model without fine-tuning. Reports Recall/NDCG@10/20 and the wall time of every stage.

Each (method, seed) is a `leantune run` folder under --work; finished runs are reused, so the table
can be completed over several sittings (--max-new-runs limits how many runs one sitting starts).
The base model is evaluated once on the same test users (its result is cached by content).

    python3 benchmarks/bench_bigrec.py                       # CPU defaults (see --help)
    python3 benchmarks/bench_bigrec.py --device cuda --test-users 1000 --pool 8192 --budget 1024 --epochs 50

Writes benchmarks/results/bigrec.json and .md.
"""
from __future__ import annotations

import os

# On a CPU shared with other jobs, OpenMP threads that spin while waiting make torch several times
# slower (measured 5-10x on 2 oversubscribed cores); sleeping waits cost little on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import ROOT  # first: puts the repo on sys.path, the hub offline

from leantune.io import write_json  # noqa: E402
from leantune.paths import cache_dir, display_path  # noqa: E402

KEYS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
STAGES = ("prune", "finetune", "evaluate", "evaluate_base")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="games")
    p.add_argument("--methods", nargs="+", default=["dealrec", "random"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=64, help="selected training samples per run (default 64)")
    p.add_argument("--pool", type=int, default=512, help="seeded pool of training samples that pruning scores (default 512)")
    p.add_argument("--test-users", type=int, default=0,
                   help="seeded test users, the same for every run (default 0 = all 8,696: at R@20 ≈ 0.015 even all "
                        "users only detect about 34%% relative at 80%% power unpaired; `leantune power` gives the "
                        "figure for another count)")
    p.add_argument("--expected-rate", type=float, default=0.015, help="R@20 assumed for the minimum-detectable-effect line printed before running")
    p.add_argument("--epochs", type=float, default=2, help="maximum epochs (default 2; reference 50)")
    p.add_argument("--batch-size", type=int, default=16, help="effective batch (default 16: 4 steps per epoch at budget 64)")
    p.add_argument("--micro-batch-size", type=int, default=4)
    p.add_argument("--train-on-inputs", action="store_true",
                   help="loss on prompt and response as the reference (default here: response only, which teaches "
                        "the output format in the few steps a CPU run affords)")
    p.add_argument("--surrogate-dir", type=Path, default=None,
                   help="a trained SASRec surrogate folder (`leantune surrogate train --out DIR`) for every DEALRec run, "
                        "instead of the cached seed-0 one (which is trained first when missing)")
    p.add_argument("--own-surrogates", action="store_true",
                   help="train DEALRec's SASRec surrogate per seed (default: the seed-0 surrogate serves every seed)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3: few steps on CPU)")
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--gen-batch-size", type=int, default=None, help="prompts per generation batch (default: by prompt tokens)")
    p.add_argument("--model", default="smollm2")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--work", type=Path, default=None, help="run folders (default $LEANTUNE_HOME/bench-bigrec/<sizes>)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bigrec")
    p.add_argument("--max-new-runs", type=int, default=None, help="start at most this many unfinished runs in this sitting")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def run_config(args, method: str, seed: int):
    from leantune.train import FinetuneConfig
    from leantune.pipelines.bigrec import BigrecRunConfig

    ft = FinetuneConfig(lr=args.lr, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                        epochs=args.epochs, seed=seed, train_on_inputs=args.train_on_inputs)
    prune_options = {}
    if method == "dealrec" and args.surrogate_dir:
        prune_options = {"options": {"surrogate_dir": str(args.surrogate_dir)}}
    elif method == "dealrec" and not args.own_surrogates:
        prune_options = {"options": {"surrogate_dir": str(shared_surrogate(args))}}
    return BigrecRunConfig(data=args.data, budget=args.budget, method=method, pool=args.pool, seed=seed,
                           model=args.model, test_users=args.test_users or None, eval_seed=0, base=True, device=args.device,
                           finetune=ft, num_beams=args.beams, max_new_tokens=args.max_new_tokens,
                           gen_batch_size=args.gen_batch_size, prune_options=prune_options)


def shared_surrogate(args) -> Path:
    """The seed-0 SASRec surrogate (trained once, cached): surrogate training is the slowest part of
    DEALRec on a CPU, so by default the seeds vary the pool, the selection and the fine-tuning only."""
    from leantune.data import load_dataset
    from leantune.models.sasrec import SASRecConfig
    from leantune.train.sasrec import get_surrogate, surrogate_key

    dataset = load_dataset(args.data)
    get_surrogate(dataset, seed=0, progress=not args.quiet)
    return cache_dir("surrogate", surrogate_key(dataset, SASRecConfig(), 0))


def sizes_tag(args) -> str:
    return (f"{args.data}-b{args.budget}-p{args.pool}-u{args.test_users}-e{args.epochs:g}-bs{args.batch_size}"
            f"-lr{args.lr:g}{'-inputs' if args.train_on_inputs else '-masked'}{'-ownsur' if args.own_surrogates else ''}"
            f"{'-sur-' + Path(args.surrogate_dir).name if args.surrogate_dir else ''}"
            f"-beam{args.beams}-t{args.max_new_tokens}-{args.model}")


def plan_line(args) -> str:
    from leantune.evaluation.compare import minimum_detectable_effect

    users = args.test_users or 8696
    mde = minimum_detectable_effect(args.expected_rate, users)
    return (f"plan: {users} test users at R@20 ≈ {args.expected_rate:g}: a difference below {mde:.4f} "
            f"({100 * mde / args.expected_rate:.0f}% relative) is not detectable at 80% power (unpaired; pairing and seeds help)")


def comparisons(args, work: Path) -> tuple[list[str], dict]:
    """Paired comparison of every method against random (and the base model) over the same test users."""
    from leantune.errors import LeantuneError
    from leantune.evaluation.compare import base_evaluation, compare, load_evaluation

    folders = [work / f"run-{m}-s{s}" for s in args.seeds for m in args.methods if finished(work / f"run-{m}-s{s}")]
    try:
        evaluations = [load_evaluation(f) for f in folders]
    except LeantuneError as exc:  # runs evaluated before per-unit results were written
        return [f"No paired comparison: {exc}"], {}
    if len({e.name for e in evaluations}) < 2:
        return ["No paired comparison yet: fewer than two methods finished."], {}
    evaluations.append(base_evaluation(folders[0]))
    lines, data = [], {}
    for metric in ("recall@20", "ndcg@20"):
        result = compare(evaluations, baseline="random" if "random" in args.methods else None, metric=metric)
        result.write(args.out.parent / f"{args.out.name}-compare-{metric.replace('@', '')}")
        lines += [f"### {metric}", "", result.to_markdown(), ""]
        data[metric] = result.to_dict()
    return lines, data


def finished(folder: Path) -> dict | None:
    path = folder / "run.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    stages = record["stages"]
    if not all(stages.get(s, {}).get("status") == "finished" for s in STAGES):
        return None
    return record


def main(argv=None) -> int:
    from leantune.pipelines.bigrec import run_bigrec

    args = parse_args(argv)
    work = args.work or cache_dir("bench-bigrec") / sizes_tag(args)
    print(plan_line(args), flush=True)
    started = 0
    for seed in args.seeds:
        for method in args.methods:
            folder = work / f"run-{method}-s{seed}"
            if finished(folder):
                continue
            if args.max_new_runs is not None and started >= args.max_new_runs:
                continue
            started += 1
            print(f"== {method} seed {seed} -> {folder}", flush=True)
            t0 = time.perf_counter()
            run_bigrec(run_config(args, method, seed), folder, progress=not args.quiet)
            print(f"== {method} seed {seed} done in {time.perf_counter() - t0:.0f}s", flush=True)
    write_results(args, work)
    return 0


def write_results(args, work: Path) -> None:
    runs, pending = [], []
    base = None
    for seed in args.seeds:
        for method in args.methods:
            record = finished(work / f"run-{method}-s{seed}")
            if record is None:
                pending.append(f"{method}/s{seed}")
                continue
            st = record["stages"]
            runs.append({
                "method": method, "seed": seed,
                "metrics": {k: st["evaluate"]["outputs"]["metrics"][k] for k in KEYS},
                "wall_s": {s: st[s]["wall_s"] for s in ("prune", "finetune", "evaluate")},
                "eval_timings": st["evaluate"]["outputs"]["timings"],
                "finetune": {k: st["finetune"]["outputs"][k] for k in ("status", "steps", "total_steps", "tokens_seen", "best_valid_loss", "wall_s")},
                "n_users": st["evaluate"]["outputs"]["n_users"],
                "target_popularity": kept_popularity(args, work / f"run-{method}-s{seed}"),
            })
            if base is None:
                b = st["evaluate_base"]["outputs"]
                base = {"metrics": {k: b["metrics"][k] for k in KEYS}, "timings": b["timings"], "n_users": b["n_users"]}
    command = "python3 benchmarks/bench_bigrec.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = {"command": command.strip(), "settings": {k: display_path(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "work": display_path(work), "runs": runs, "base": base, "pending": pending,
              "note": "CPU timings were taken on a 2-core machine shared with other jobs; compare within one table only."}
    if runs:
        ds = _DATASETS[args.data]
        from leantune.models.popularity import target_popularity

        result["target_popularity_all"] = target_popularity(ds, [x.sample_id for x in ds.train_samples])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    compare_lines, result["comparisons"] = comparisons(args, work)
    result["plan"] = plan_line(args)
    write_json(args.out.with_suffix(".json"), result)
    args.out.with_suffix(".md").write_text(markdown(result, args) + "\n## Paired comparisons (leantune compare)\n\n"
                                           + result["plan"] + "\n\n" + "\n".join(compare_lines) + "\n")
    print(args.out.with_suffix(".md").read_text())


def kept_popularity(args, folder: Path) -> dict:
    """Mean training-period / validation-period interactions of the kept samples' target items."""
    from leantune.data import load_dataset
    from leantune.models.popularity import target_popularity
    from leantune.pruning import load_selection

    if args.data not in _DATASETS:
        _DATASETS[args.data] = load_dataset(args.data)
    return target_popularity(_DATASETS[args.data], load_selection(folder / "prune").sample_ids)


_DATASETS: dict = {}


def _mean_std(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def markdown(result: dict, args) -> str:
    s = result["settings"]
    lines = [
        "# BIGRec on Games, reduced scale (SmolLM2-135M)",
        "",
        f"Budget {s['budget']} samples selected from a seeded pool of {s['pool']} training users "
        f"({'the SASRec surrogate in ' + s['surrogate_dir'] + ' for every seed' if s.get('surrogate_dir') else 'a SASRec surrogate per seed' if s['own_surrogates'] else 'one SASRec surrogate (seed 0) for every seed'}); "
        f"LoRA r 8/alpha 16 on q,v; loss on {'prompt and response' if s['train_on_inputs'] else 'the response only'}; "
        f"lr {s['lr']:g}, batch {s['batch_size']}, ≤{s['epochs']:g} epochs with early stopping on the selected users' "
        f"validation samples; evaluation on {s['test_users']} seeded test users (the same for every run), beam {s['beams']}, "
        f"≤{s['max_new_tokens']} new tokens, grounding by L2 distance of base-model last-token states over all items. "
        f"Device: {s['device']}.",
        "",
        f"Reproduce: `{result['command']}`",
        "",
        "| method | seeds | " + " | ".join(k.replace("recall", "R").replace("ndcg", "N") for k in KEYS) + " |",
        "|---|---|" + "---|" * len(KEYS),
    ]
    for method in s["methods"]:
        rows = [r for r in result["runs"] if r["method"] == method]
        cells = [_mean_std([r["metrics"][k] for r in rows]) for k in KEYS]
        lines.append(f"| {method} | {len(rows)} | " + " | ".join(cells) + " |")
    if result["base"]:
        lines.append("| base model (no fine-tuning) | - | " + " | ".join(f"{result['base']['metrics'][k]:.4f}" for k in KEYS) + " |")
    lines += ["", "Per run (wall time in seconds):", "",
              "| method | seed | " + " | ".join(k.replace("recall", "R").replace("ndcg", "N") for k in KEYS)
              + " | prune | fine-tune | evaluate (generate / item emb. / ground) | fine-tune status | kept targets' interactions (train / recent) |",
              "|---|---|" + "---|" * (len(KEYS) + 5)]
    for r in result["runs"]:
        t, e, f = r["wall_s"], r["eval_timings"], r["finetune"]
        lines.append(
            f"| {r['method']} | {r['seed']} | " + " | ".join(f"{r['metrics'][k]:.4f}" for k in KEYS)
            + f" | {t['prune']:.0f} | {t['finetune']:.0f} | {t['evaluate']:.0f} ({e['generate_s']:.0f} / {e['item_embed_s']:.0f} / {e['ground_s']:.0f})"
            + f" | {f['status']} {f['steps']}/{f['total_steps']} steps, {f['tokens_seen']:,} tokens"
            + f" | {r['target_popularity']['train']:.1f} / {r['target_popularity']['recent']:.1f} |"
        )
    pops = {m: [r["target_popularity"] for r in result["runs"] if r["method"] == m] for m in s["methods"]}
    lines.append("\nKept targets' interactions, mean over seeds (training period / validation period): " + "; ".join(
        f"{m} {statistics.mean(p['train'] for p in v):.1f} / {statistics.mean(p['recent'] for p in v):.1f}"
        for m, v in pops.items() if v) + f"; every training sample {result['target_popularity_all']['train']:.1f} / "
        f"{result['target_popularity_all']['recent']:.1f} (`leantune.models.popularity.target_popularity`).")
    if result["base"]:
        b = result["base"]["timings"]
        lines.append(f"\nBase model evaluation: generate {b['generate_s']:.0f} s, item embeddings {b['item_embed_s']:.0f} s "
                     f"(0 when cached), grounding {b['ground_s']:.0f} s for {result['base']['n_users']} users.")
    if result["pending"]:
        lines.append(f"\nNot run yet: {', '.join(result['pending'])} (run the command again to continue).")
    lines += ["", result["note"], ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
