"""Early-performance BO vs full-fidelity TPE, random search and Optuna's SHA/Hyperband pruners.

Every strategy searches the same space with the same trial runner; compute is counted in optimizer
steps (tokens are recorded too). Every strategy runs live (none is replayed from recorded curves). Early BO (leantune.tuning.EarlySearch) runs ``--trials`` trials to
``--early-fraction`` and continues its ``--top-k``; it is run with validate-all so the rank agreement
between early and final scores can be measured, but only phase 1 + the top-k continuations are
counted as its compute. Its pick is the best final validation score among the top-k and the
baseline (which phase 2 always continues, and whose compute is counted). Full-fidelity TPE trains
``--trials`` trials to the end. Random search and
the SHA (asynchronous successive halving, i.e. ASHA), Hyperband and Median pruners (TPE sampler,
rungs at 1/9, 1/3 and all of the schedule, capped by the objective) get early BO's compute as their
budget. Each strategy picks its best trial by final *validation* score and we report that trial's
held-out test score, and its difference from the default recipe's test score (the baseline trial
of the early-BO study), paired by seed.

With ``--work DIR`` every finished (seed, strategy) cell is kept as ``DIR/cells/s<seed>-<strategy>.json``
and a re-run skips it, so a long real-training comparison can be filled across sittings (an
interrupted cell replays its seeded study from what each trial folder recorded, ``trial_results.json``, so
no finished trial is trained again; early BO resumes its Optuna study). ``--strategies`` runs a subset.

    python3 benchmarks/bench_tuning.py                                   # synthetic runner, 30 trials, 5 seeds
    python3 benchmarks/bench_tuning.py --runner finetune --model tiny --task attributes \\
        --objective valid_loss --train-size 16 --trials 12 --seeds 0 1 --cutoff-len 256
    python3 benchmarks/bench_tuning.py --runner finetune --model smollm2 --task attributes --objective metric \\
        --train-size 64 --eval-limit 30 --trials 30 --seeds 0 1 2 --work benchmarks/cache/tuning-real --name real

Writes benchmarks/results/tuning[-NAME].json/.md/.png.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT  # first: puts the repo on sys.path, the hub offline

from leantune.io import atomic_path, json_safe, write_json  # noqa: E402
from leantune.tuning import EarlySearch, SyntheticRunner, TuneConfig, load_records, load_space, rank_agreement  # noqa: E402
from leantune.tuning.runner import failure_reason, safe_run  # noqa: E402
from leantune.tuning.study import make_sampler, quiet_optuna  # noqa: E402

RUNGS = (1 / 9, 1 / 3, 1.0)  # SHA/Hyperband: report at these fractions of the schedule (percent steps 11, 33, 100)
STRATEGIES = ("early_bo", "full_tpe", "random", "sha", "hyperband", "median")


def make_runner(args):
    if args.runner == "synthetic":
        return SyntheticRunner(train_size=args.train_size, seed=0, noise=args.noise)
    from leantune.tuning.finetune_runner import FinetuneRunner

    fixed = {"cutoff_len": args.cutoff_len, "train_on_inputs": True} if args.cutoff_len else {}
    if getattr(args, "bf16", False):
        fixed["bf16"] = True  # bf16 autocast on CPU too (AMX: ~1.7x fp32 LoRA training)
    return FinetuneRunner(task=args.task, model=args.model, train_size=args.train_size, eval_limit=args.eval_limit,
                          valid_loss_size=args.valid_size, objective=args.objective, seed=0, fixed=fixed,
                          task_options={"progress": False})


# ----------------------------------------------------------------------------- early BO


def _test_rows(folder: Path, root: Path) -> str | None:
    """``folder``'s test evaluation (``test/per_unit.jsonl``, real runners only), relative to ``root``."""
    from leantune.tuning.finetune_runner import TEST_FOLDER

    test = folder / TEST_FOLDER
    return str(test.relative_to(root)) if (test / "per_unit.jsonl").is_file() else None


def _relative(folder: Path, args) -> str | None:
    """A pick's run folder relative to the work root (``args.root``), as the cells keep paths."""
    root = getattr(args, "root", None)
    try:
        return str(Path(folder).resolve().relative_to(Path(root).resolve())) if root is not None else None
    except ValueError:
        return None


def _recorded_wall_s(cfg: TuneConfig) -> float:
    """Seconds the runs already in ``cfg``'s study took when they were measured (0 without the study)."""
    from leantune.errors import ParameterError

    try:
        rec = load_records(cfg.study, cfg.storage_url)
    except ParameterError:  # no study file yet, or the file without this study
        return 0.0
    return sum(t.early_wall_s + t.final_wall_s for t in rec.trials)


def run_early_bo(runner, space, args, seed: int, work: Path) -> dict:
    """Early BO as ``leantune tune`` runs it. With ``args.validate_all`` (the default) every trial is
    also continued to the end, uncounted, so early and final ranks can be compared; without it only
    the top-k and the baseline are continued (a live row at the method's own cost)."""
    validate_all = getattr(args, "validate_all", True)
    cfg = TuneConfig(study=f"early-{seed}", storage=f"sqlite:///{work / 'early.db'}", work_dir=work / "early", trials=args.trials,
                     early_fraction=args.early_fraction, top_k=args.top_k, validate_all=validate_all, seed=seed, heartbeat_interval=600)
    log = (lambda m: print(f"  s{seed}/early_bo {m}", flush=True)) if getattr(args, "verbose", False) else (lambda _: None)
    # A study resumed in place (an interrupted sitting) keeps the runs it finished; their recorded
    # seconds count toward the wall time, as a resumed Optuna cell's do.
    earlier_s = _recorded_wall_s(cfg)
    start = time.perf_counter()
    EarlySearch(cfg, runner, space, log=log).run()
    wall = time.perf_counter() - start + earlier_s
    rec = load_records(cfg.study, cfg.storage_url)
    phase1 = sum(t.early_steps for t in rec.trials)
    ranked = sorted((t for t in rec.trials if t.status == "ok" and t.final_status is not None), key=lambda t: (-t.early_score, t.number))
    # What EarlySearch does without validate-all: continue in early rank until k finish usable
    # (backfill replaces late failures), plus the baseline. Without validate-all that is what ran.
    top, usable = [], 0
    for t in ranked:
        if usable >= args.top_k:
            break
        top.append(t)
        usable += t.final_status == "ok"
    top += [t for t in rec.trials if t.baseline and t.final_status is not None and t not in top]
    # The method's own compute: phase 1, then the top-k (and the baseline) continued in early-rank order.
    compute, curve, best = phase1, [], None
    for t in top:
        compute += t.final_steps - t.early_steps
        if t.final_status == "ok" and (best is None or t.final_score > best.final_score):
            best = t
        curve.append((compute, best.test_score if best else None))
    resumable = [t for t in rec.trials if t.final_status is not None]
    baseline = rec.baseline
    agreement = (rank_agreement([t.early_score for t in resumable], [t.final_score for t in resumable], args.top_k)
                 if validate_all else None)  # over the continued trials only it would say little
    return {"compute": compute, "tokens": sum(t.early_tokens for t in rec.trials) + sum((t.final_tokens or 0) - t.early_tokens for t in top),
            "best_test": best.test_score if best else None, "best_valid": best.final_score if best else None,
            "best_trial": best.number if best else None, "best_params": best.params if best else None,
            "best_dir": _relative(cfg.work_dir / best.checkpoint, args) if best is not None and best.checkpoint else None,
            "trials": len(rec.trials), "failed_early": sum(t.status == "failed" for t in rec.trials), "curve": curve,
            "phase1_compute": phase1, "agreement": agreement, "wall_s": wall, "continued": len(top),
            "validate_all_compute": phase1 + sum(t.final_steps - t.early_steps for t in resumable) if validate_all else None,
            "baseline_test": baseline.test_score if baseline is not None else None,
            "best_rows": _test_rows(cfg.work_dir / best.checkpoint, args.root) if best is not None and best.checkpoint else None,
            "baseline_rows": (_test_rows(cfg.work_dir / baseline.checkpoint, args.root)
                              if baseline is not None and baseline.checkpoint else None)}


# ----------------------------------------------------------------------------- full fidelity, random, pruners


def run_optuna(runner, space, args, seed: int, work: Path, sampler: str, pruner: str | None, budget: int | None) -> dict:
    """Full-schedule trials (or rung-by-rung with a pruner) until ``--trials`` or the step budget."""
    import optuna

    pr = {"sha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=11, reduction_factor=3),
          "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=11, max_resource=100, reduction_factor=3),
          "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
          None: lambda: optuna.pruners.NopPruner()}[pruner]()
    # A fixed name: Hyperband assigns trials to brackets by hashing the study name with the trial
    # number, so an unnamed (random-UUID) study gave a different Hyperband row on every run.
    study = optuna.create_study(study_name=f"{sampler}-{pruner}-{seed}", direction="maximize",
                                sampler=make_sampler(sampler, seed), pruner=pr)
    study.enqueue_trial(space.baseline_params())  # every strategy starts from the default, like early BO
    state = {"compute": 0, "tokens": 0, "best": None, "curve": [], "failed": 0, "pruned": 0, "complete": 0, "earlier_s": 0.0}

    def objective(trial):
        params = space.suggest(trial)
        out = work / f"t{trial.number:04d}"
        fractions = RUNGS if pruner else (1.0,)
        done_steps, done_tokens = 0, 0
        results = _trial_results(out, params)
        for f in fractions:
            res = results.get(f)
            if res is None:
                res = results[f] = safe_run(runner, params, out, None if f >= 1 else f)
                _keep_trial_results(out, params, results)
            else:  # measured in an earlier sitting of this cell: its time counts in the cell's wall time
                state["earlier_s"] += res.wall_s or 0.0
            state["compute"] += max(0, res.steps - done_steps)
            state["tokens"] += max(0, res.tokens - done_tokens)
            done_steps, done_tokens = max(done_steps, res.steps), max(done_tokens, res.tokens)
            reason = failure_reason(res, final=f >= 1)  # a 0 at an early rung is a low score, not a failure
            score = 0.0 if reason else res.score
            if reason or res.status in ("finished", "early_stopped", "diverged") or f >= 1:
                break
            trial.report(score, step=int(round(f * 100)))
            if trial.should_prune():
                state["pruned"] += 1
                state["curve"].append((state["compute"], state["best"][1] if state["best"] else None))
                raise optuna.TrialPruned()
        if reason:
            state["failed"] += 1
        else:
            state["complete"] += 1
            if state["best"] is None or score > state["best"][0]:
                tested = results.get("test")
                if tested is None:
                    tested = results["test"] = safe_run(runner, params, out, None, test=True)  # no training: the run is finished
                    _keep_trial_results(out, params, results)
                else:
                    state["earlier_s"] += tested.wall_s or 0.0
                state["best"] = (score, tested.test_score, trial.number, _test_rows(out, args.root), params, _relative(out, args))
        state["curve"].append((state["compute"], state["best"][1] if state["best"] else None))
        return score

    def stop(study, _trial):
        if budget is not None and state["compute"] >= budget:
            study.stop()

    start = time.perf_counter()
    study.optimize(objective, n_trials=args.trials if budget is None else 50 * args.trials, callbacks=[stop])
    best = state["best"]
    return {"compute": state["compute"], "tokens": state["tokens"], "best_test": best[1] if best else None,
            "best_valid": best[0] if best else None, "best_rows": best[3] if best else None,
            "best_trial": best[2] if best else None, "best_params": best[4] if best else None,
            "best_dir": best[5] if best else None,
            "trials": len(study.trials), "failed": state["failed"],
            "pruned": state["pruned"], "curve": state["curve"],
            # this sitting's time plus what the results read back from earlier sittings took
            "wall_s": time.perf_counter() - start + state["earlier_s"]}


TRIAL_RESULTS = "trial_results.json"


def _trial_results(out: Path, params: dict) -> dict:
    """What an earlier, interrupted run of this cell measured for trial folder ``out`` (rung fraction
    or ``"test"`` -> RunResult), so a restarted cell replays its seeded study without training or
    evaluating again. A folder made for other hyperparameters (the sampler went elsewhere) is cleared."""
    from leantune.io import read_json
    from leantune.tuning.runner import RunResult

    path = out / TRIAL_RESULTS
    if not path.is_file():
        shutil.rmtree(out, ignore_errors=True)  # a half-trained run with no result: start it again
        return {}
    stored = read_json(path)
    if stored.get("params") != params:
        shutil.rmtree(out, ignore_errors=True)
        return {}
    return {(k if k == "test" else float(k)): RunResult(**{f: (float(v) if f in ("valid_loss", "score") and isinstance(v, str) else v)
                                                        for f, v in r.items()})
            for k, r in stored["results"].items()}


def _keep_trial_results(out: Path, params: dict, results: dict) -> None:
    import dataclasses

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / TRIAL_RESULTS, {"params": params, "results": {str(k): json_safe(dataclasses.asdict(r)) for k, r in results.items()}})


CELL_RUNS = {  # strategy -> (sampler, pruner, capped at early BO's compute)
    "full_tpe": ("tpe", None, False), "random": ("random", None, True), "sha": ("tpe", "sha", True),
    "hyperband": ("tpe", "hyperband", True), "median": ("tpe", "median", True),
}


CELL_SETTINGS = ("runner", "model", "task", "objective", "train_size", "eval_limit", "valid_size", "cutoff_len", "noise",
                 "space", "trials", "early_fraction", "top_k", "bf16", "validate_all", "equal_compute")


def cell_settings(args) -> dict:
    """What a cell's result depends on besides its seed and strategy (a cell made otherwise is refused)."""
    return {k: (str(getattr(args, k)) if isinstance(getattr(args, k, None), Path) else getattr(args, k, None)) for k in CELL_SETTINGS}


def run_cell(runner, space, args, seed: int, root: Path, name: str, budget: int | None) -> dict:
    """One (seed, strategy) result, read from ``root/cells`` when an earlier run with the same
    settings finished it."""
    from leantune.io import read_json, refuse_other_settings

    cell = root / "cells" / f"s{seed}-{name}.json"
    if cell.is_file():
        stored = read_json(cell)
        refuse_other_settings(stored.get("settings", {}), cell_settings(args), "benchmark cells", root,
                              "use another --work folder (or the same settings)")
        print(f"seed {seed}: {name} reused from {cell.name}", flush=True)
        return stored["result"]
    work = root / f"s{seed}" / name
    if name == "early_bo":
        result = run_early_bo(runner, space, args, seed, work)  # resumes its Optuna study in ``work``
    else:
        # An interrupted cell replays its seeded study: each trial folder keeps what it measured
        # (``trial_results.json``), so finished trials are neither trained nor evaluated again.
        sampler, pruner, capped = CELL_RUNS[name]
        capped = capped or (name == "full_tpe" and getattr(args, "equal_compute", False))
        result = run_optuna(runner, space, args, seed, work, sampler, pruner, budget if capped else None)
    write_json(cell, {"settings": cell_settings(args), "result": result})
    return result


PLAN_SEEDS = (5, 10, 20)  # seed counts whose MDE (paired by seed, this spread of Δ_s) compare_picks plans


def units_table(units: dict, scale: float) -> list[str]:
    """``compare_picks``' rows as a markdown table, figures times ``scale`` (100: points): each row's
    difference, its per-seed differences in seed order, the interval over test units and the one over
    units + seeds paired by seed ("–" where a row has no seed spread)."""
    lines = ["| strategy | seeds | Δ test (points) | Δ per seed | 95% CI (units) | p | MDE (units) | 95% CI (units + seeds, paired by seed) | "
             "MDE (units + seeds) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, u in units.items():
        per = u.get("per_seed") or {}
        per_seed = " / ".join(f"{scale * per[s]:+.1f}" for s in sorted(per, key=int)) or "–"
        pair = ("– | –" if u.get("pair_low") is None else
                f"[{scale * u['pair_low']:+.2f}, {scale * u['pair_high']:+.2f}] | {scale * u['pair_mde']:.2f}")
        lines.append(f"| {name} | {u.get('n_seeds', '–')} | {scale * u['diff']:+.2f} | {per_seed} | "
                     f"[{scale * u['low']:+.2f}, {scale * u['high']:+.2f}] | {u['p']:.3g} | {scale * u['mde']:.2f} | {pair} |")
    return lines


def unit_comparison(results: dict, args, metric: str) -> dict | None:
    """Each strategy's picks (one per seed) against the default recipe's test rows (the early-BO
    baseline trial of the same seed), paired over the same test units with ``leantune compare``
    (seeds averaged; the units + seeds interval beside it). None when the runner writes no rows."""
    if args.runner != "finetune" or args.objective != "metric":
        return None
    picks = {name: {seed: by[name].get("best_rows") for seed, by in results.items()} for name in present(results)}
    baselines = {seed: by["early_bo"].get("baseline_rows") for seed, by in results.items()}
    return compare_picks(picks, baselines, args.root, metric)


def compare_picks(picks: dict, baselines: dict, root: Path, metric: str) -> dict | None:
    """``picks[strategy][seed]`` and ``baselines[seed]`` are test-row folders (relative to ``root``):
    each strategy against the default recipe, paired per unit and seed (``leantune compare``). A
    strategy missing a pick or a baseline for any seed has no row; None when none has one."""
    from leantune.evaluation.compare import compare, load_evaluation, seed_paired

    out = {}
    for name, by_seed in picks.items():
        evs = []
        for seed, pick in by_seed.items():
            base = baselines.get(seed)
            if not (pick and base):
                break
            for label, rel in ((name, pick), ("default", base)):
                ev = load_evaluation(root / rel, name=label)
                ev.seed = int(seed)
                evs.append(ev)
        else:
            c = compare(evs, baseline="default", metric=metric)
            row = c.rows[0]
            # A strategy and the default recipe of one seed share that seed's study: the seeds are
            # blocks, so the seed spread is the per-seed differences' (``seed_paired``); the
            # interval that takes both sides as independent stays in total_* for reference.
            sp = seed_paired(c, name) or {}
            plan = {str(k): seed_paired(c, name, n=k)["mde"] for k in PLAN_SEEDS} if sp else None
            out[name] = {"diff": row.diff, "low": row.ci_low, "high": row.ci_high, "p": row.p_value, "mde": row.mde_paired,
                         "total_low": row.ci_total_low, "total_high": row.ci_total_high, "mde_total": row.mde_total,
                         "pair_low": sp.get("low"), "pair_high": sp.get("high"), "pair_mde": sp.get("mde"),
                         "per_seed": {str(s): d for s, d in sp.get("per_seed", {}).items()} or None, "pair_mde_at": plan,
                         "n_seeds": row.n_seeds}
    return out or None


def best_at(curve: list, budget: float):
    """The best-so-far test score once ``budget`` steps were spent (None before the first full trial)."""
    value = None
    for compute, score in curve:
        if compute > budget + 1e-9:
            break
        value = score
    return value


# ----------------------------------------------------------------------------- report


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


LOSS_SCALE = False  # set in main(): scores are exp(-loss), shown as the loss itself (lower is better)


def disp(x):
    """A score in the unit the report shows: points (x100), or the loss behind exp(-loss)."""
    if x is None:
        return None
    if LOSS_SCALE:
        return -math.log(x) if x > 0 else math.inf
    return 100 * x


def _pts(x) -> str:
    return "–" if x is None else f"{x:.4f}" if LOSS_SCALE else f"{x:.2f}"


def paired_seed_interval(diffs: list[float], alpha: float = 0.05, power: float = 0.8) -> dict | None:
    """The mean of per-seed paired differences with its t interval, and the smallest difference these
    seeds could detect at ``power`` (two-sided ``alpha``); ``None`` with fewer than 2 seeds."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return None
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(n)
    t = float(stats.t.ppf(1 - alpha / 2, n - 1))
    return {"mean": mean, "low": mean - t * se, "high": mean + t * se, "n": n,
            "mde": (t + float(stats.t.ppf(power, n - 1))) * se}


def present(results: dict) -> list[str]:
    """The strategies every seed has, in STRATEGIES order."""
    return [n for n in STRATEGIES if results and all(n in by for by in results.values())]


def summarise(results: dict, args) -> dict:
    out = {}
    seeds = list(results)
    for name in present(results):
        rows = [results[s][name] for s in results]
        # The pick's test score minus the default recipe's (the early-BO study's baseline trial), paired by seed.
        vs_default = [disp(r["best_test"]) - disp(results[s]["early_bo"]["baseline_test"]) for s, r in zip(seeds, rows)
                      if r["best_test"] is not None and results[s].get("early_bo", {}).get("baseline_test") is not None]
        out[name] = {
            "best_test": _mean_sd([disp(r["best_test"]) for r in rows]),
            "compute": _mean_sd([r["compute"] for r in rows]),
            "trials": _mean_sd([r["trials"] for r in rows]),
            "wall_s": _mean_sd([r["wall_s"] for r in rows]),
            "vs_default": paired_seed_interval(vs_default) if len(vs_default) == len(seeds) else None,
        }
    if not {"early_bo", "full_tpe"} <= set(out):
        return out
    ratio = [results[s]["early_bo"]["compute"] / results[s]["full_tpe"]["compute"] for s in seeds]
    gap = [disp(results[s]["early_bo"]["best_test"] or 0) - disp(results[s]["full_tpe"]["best_test"] or 0) for s in seeds]
    tpe_at_budget = [disp(best_at(results[s]["full_tpe"]["curve"], results[s]["early_bo"]["compute"])) for s in seeds]
    out["early_bo"]["compute_ratio"] = _mean_sd(ratio)
    out["early_bo"]["gap_to_full_tpe"] = _mean_sd(gap)
    out["early_bo"]["gap_interval"] = paired_seed_interval(gap)
    out["full_tpe"]["best_test_at_early_bo_budget"] = _mean_sd(tpe_at_budget)
    for key in ("spearman", "kendall", "topk_overlap"):
        out["early_bo"][key] = _mean_sd([results[s]["early_bo"]["agreement"][key] for s in seeds])
    return out


def render(results: dict, summary: dict, args, command: str, png: str) -> str:
    e = summary["early_bo"]
    unit = ("held-out loss (lower is better; the score optimised is exp(-validation loss))" if LOSS_SCALE
            else "score points (score × 100)")
    lines = [f"# Early-performance BO vs other searches ({args.runner} runner)", "",
             f"Command: `{command}`", "",
             f"Runner: {describe_runner(args)}. Seeds: {', '.join(map(str, args.seeds))}. "
             f"Compute = optimizer steps. Scores in {unit}; test = held-out score of the trial each strategy picks by final validation score.",
             "Machine: 2 shared CPU cores (other jobs were running); wall times are indicative only.", "",
             "| strategy | trials | compute (steps) | % of full TPE | best final test | − default recipe, 95% CI over seeds (MDE at 80% power) | wall s |",
             "|---|---|---|---|---|---|---|"]
    full_compute = summary["full_tpe"]["compute"][0]
    for name in present(results):
        s = summary[name]
        m, sd, n = s["best_test"]
        vd = s.get("vs_default")
        vd_cell = f"{_pts(vd['mean'])} [{_pts(vd['low'])}, {_pts(vd['high'])}] (MDE {_pts(vd['mde'])})" if vd else "–"
        lines.append(f"| {name} | {s['trials'][0]:.1f} | {s['compute'][0]:.0f} | {100 * s['compute'][0] / full_compute:.0f}% | "
                     f"{_pts(m)} ± {_pts(sd)} (n={n}) | {vd_cell} | {s['wall_s'][0]:.1f} |")
    tb = summary["full_tpe"]["best_test_at_early_bo_budget"]
    lines += ["", f"Full-fidelity TPE's best-so-far at early BO's compute: {_pts(tb[0])} ± {_pts(tb[1])} (n={tb[2]} seeds with a finished trial by then).", ""]
    units = summary.get("vs_default_units")
    if units:
        lines += ["Each pick against the default recipe on the same test units (`leantune compare`: paired, seeds averaged; "
                  "95% CI over test units, then over units and seeds with the seeds as blocks: the spread of the per-seed "
                  "differences, as a strategy and the default recipe of one seed share that seed's study):", "",
                  *units_table(units, 100), ""]
    ci = summary["early_bo"].get("gap_interval")
    if ci:
        lines += [f"Early BO − full TPE, paired by seed: {_pts(ci['mean'])} [{_pts(ci['low'])}, {_pts(ci['high'])}] (95% t interval over "
                  f"{ci['n']} seeds); these seeds could detect a difference of {_pts(ci['mde'])} at 80% power.", ""]
    gap, ratio = e["gap_to_full_tpe"], e["compute_ratio"]
    need = math.ceil(0.8 * args.top_k)  # the goal's 4 of 5
    sp, kt, ov = e["spearman"], e["kendall"], e["topk_overlap"]
    lines += ["## Goals", "",
              "| goal | measured (mean ± sd over seeds) | met |", "|---|---|---|",
              (f"| early BO's best vs full TPE's (held-out loss difference, negative = early BO better) | {gap[0]:+.4f} ± {gap[1]:.4f} | n/a |"
               if LOSS_SCALE else
               f"| early BO within 1 point of full TPE's best | {gap[0]:+.2f} ± {gap[1]:.2f} points | {'yes' if gap[0] >= -1 else 'no'} |"),
              f"| ... at ≤ 35% of its compute | {100 * ratio[0]:.1f}% ± {100 * ratio[1]:.1f}% | {'yes' if ratio[0] <= 0.35 else 'no'} |",
              f"| Spearman(early, final) ≥ 0.8 | {_f(sp[0])} ± {_f(sp[1])} (Kendall {_f(kt[0])}) | {'yes' if sp[0] is not None and sp[0] >= 0.8 else 'no'} |",
              f"| ≥ {need} of the early top-{args.top_k} in the final top-{args.top_k} | {_f(ov[0])} ± {_f(ov[1])} | {'yes' if ov[0] is not None and ov[0] >= need else 'no'} |",
              "", "Rank agreement is over every trial of the early-BO study continued to the end (validate-all, not counted as its compute).", "",
              "## Per seed", "", "| seed | strategy | trials | compute | best valid | best test | notes |", "|---|---|---|---|---|---|---|"]
    for seed, by in results.items():
        for name in present(results):
            r = by[name]
            note = (f"Spearman {_f(r['agreement']['spearman'])}, Kendall {_f(r['agreement']['kendall'])}, top-{args.top_k} overlap "
                    f"{r['agreement']['topk_overlap']}, {r['failed_early']} failed early" if name == "early_bo"
                    else f"{r.get('pruned', 0)} pruned, {r.get('failed', 0)} failed")
            lines.append(f"| {seed} | {name} | {r['trials']} | {r['compute']} | {_pts(disp(r['best_valid']))} | {_pts(disp(r['best_test']))} | {note} |")
    lines += ["", f"![best final test vs compute]({png})", ""]
    return "\n".join(lines)


def _f(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def describe_runner(args) -> str:
    if args.runner == "synthetic":
        return (f"synthetic (leantune.tuning.SyntheticRunner: simulated LoRA curves with divergence and collapse regions, "
                f"train size {args.train_size}, evaluation noise {args.noise}) — a simulation, not a real model")
    return (f"real LoRA fine-tuning: model {args.model}, task {args.task}, train size {args.train_size}, objective {args.objective}, "
            f"eval limit {args.eval_limit}, cutoff {args.cutoff_len or 'default'}")


def plot(results: dict, args, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colors = dict(zip(STRATEGIES, ("tab:red", "tab:blue", "tab:grey", "tab:green", "tab:purple", "tab:orange")))
    for name in present(results):
        for i, (seed, by) in enumerate(results.items()):
            curve = [(c, s) for c, s in by[name]["curve"] if s is not None]
            if not curve:
                continue
            xs, ys = zip(*curve)
            ax.step(xs, [disp(y) for y in ys], where="post", color=colors[name], alpha=0.7, lw=1.2, label=name if i == 0 else None)
            ax.plot(xs[-1], disp(ys[-1]), "o", color=colors[name], ms=4)
    ax.set_xlabel("compute spent (optimizer steps)")
    ax.set_ylabel("held-out loss of the pick (lower is better)" if LOSS_SCALE else "best final test score (× 100), picked by validation")
    ax.set_title(f"best final test vs compute, {len(results)} seeds ({args.runner})")
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runner", choices=("synthetic", "finetune"), default="synthetic")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--task", default="attributes")
    ap.add_argument("--objective", choices=("metric", "valid_loss"), default="valid_loss")
    ap.add_argument("--train-size", type=int, default=256)
    ap.add_argument("--eval-limit", type=int, default=20)
    ap.add_argument("--valid-size", type=int, default=16, help="validation examples for the trainer's loss (and as many held out)")
    ap.add_argument("--cutoff-len", type=int, default=0, help="token cut-off for real runs (0: FinetuneConfig default)")
    ap.add_argument("--bf16", action="store_true", help="real runs: bf16 autocast in training on CPU too")
    ap.add_argument("--noise", type=float, default=0.01, help="synthetic runner: evaluation noise")
    ap.add_argument("--space", type=Path, default=None, help="search-space TOML/YAML override")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--early-fraction", type=float, default=0.2)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--name", default="", help="suffix of the result files: tuning-NAME.*")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep finished (seed, strategy) cells here and skip them on a re-run (default: a temporary folder)")
    ap.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES),
                    help="strategies to run (early_bo always runs: it sets the others' budget and the default recipe's score)")
    ap.add_argument("--from-json", type=Path, default=None, help="re-render the .md/.png of an earlier run's .json (no training)")
    # Early BO here always validates every trial (the agreement columns); full TPE runs all its trials.
    # (bench_tuning_real.py's --live cells run early BO without validate-all and cap full TPE.)
    ap.set_defaults(validate_all=True, equal_compute=False)
    args = ap.parse_args(argv)
    if args.from_json is not None:
        return rerender(args.from_json)
    if "full_tpe" not in args.strategies:
        ap.error("--strategies: the report measures every strategy against full_tpe; include it")
    global LOSS_SCALE
    LOSS_SCALE = args.runner == "finetune" and args.objective == "valid_loss"
    quiet_optuna()
    command = " ".join(["python3 benchmarks/bench_tuning.py", *(argv if argv is not None else sys.argv[1:])])
    runner, space = make_runner(args), load_space(args.space)
    results: dict = {}
    scratch = args.work or Path(tempfile.mkdtemp(prefix="bench-tuning-"))
    args.root = scratch.resolve()
    units = None
    try:
        for seed in args.seeds:
            by: dict = {}
            t0 = time.perf_counter()
            for name in ["early_bo", *(n for n in STRATEGIES if n in args.strategies and n != "early_bo")]:
                by[name] = run_cell(runner, space, args, seed, scratch, name, by["early_bo"]["compute"] if by else None)
            results[str(seed)] = by
            print(f"seed {seed}: " + ", ".join(f"{k} test {_pts(disp(v['best_test']))} @ {v['compute']} steps" for k, v in by.items())
                  + f"  ({time.perf_counter() - t0:.0f}s)", flush=True)
        units = unit_comparison(results, args, runner.metric)  # reads the per-unit rows before a temporary folder goes
    finally:
        if args.work is None:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = summarise(results, args)
    if units:
        summary["vs_default_units"] = units
    stem = "tuning" + (f"-{args.name}" if args.name else "")
    out_dir = ROOT / "benchmarks" / "results"
    plot(results, args, out_dir / f"{stem}.png")
    write_json(out_dir / f"{stem}.json", {"command": command, "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                                    if k != "root"},  # the resolved work folder: a machine path
                                           "runner": describe_runner(args), "summary": summary, "per_seed": results})
    md = render(results, summary, args, command, f"{stem}.png")
    with atomic_path(out_dir / f"{stem}.md") as tmp:
        tmp.write_text(md)
    print(md)
    print(f"reproduce: {command}")


def rerender(path: Path) -> None:
    global LOSS_SCALE
    data = json.loads(path.read_text())
    args = argparse.Namespace(**data["args"])
    LOSS_SCALE = args.runner == "finetune" and args.objective == "valid_loss"
    results = data["per_seed"]
    summary = summarise(results, args)
    if data["summary"].get("vs_default_units"):  # computed from per-unit files that may be gone by now
        summary["vs_default_units"] = data["summary"]["vs_default_units"]
    plot(results, args, path.with_suffix(".png"))
    with atomic_path(path.with_suffix(".md")) as tmp:
        tmp.write_text(render(results, summary, args, data["command"], path.with_suffix(".png").name))
    print(f"re-rendered {path.with_suffix('.md')}")


if __name__ == "__main__":
    from leantune.errors import LeantuneError

    try:
        main()
    except LeantuneError as exc:  # bad settings or a --work folder made otherwise: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
