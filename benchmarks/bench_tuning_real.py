"""Early-performance search on real training: do early ranks predict final ones, and what does each
search strategy pick at equal compute?

For each study seed, a pool of ``--trials`` configurations is drawn from the search space by Optuna's
``RandomSampler`` (seeded; the default recipe comes first, as in every leantune study). Every
configuration is trained to the end with the trial runner, and scored on validation at 10, 20, 30
and 50% of its schedule and at the end (``FRACTIONS``); at the end it is also scored on test. Each
trial is a resumable cell (``WORK/s<seed>/t<NNN>/record.json`` beside its run folder), so the pool can
be filled across sittings, and by two processes at once with ``--shard 0/2`` and ``--shard 1/2``.

From the recorded curves:

* **Rank agreement** on all usable trials (not failed at the end): Spearman, Kendall and early
  top-5 ∩ final top-5 between the validation score at each fraction and the final one, with
  percentile-bootstrap intervals over trials, and the fraction from which the ranking holds.
* **Strategies at equal compute, replayed.** A strategy whose proposals come from a random sampler
  sees exactly the pool in its drawn order, so replaying it over the recorded curves reproduces a live
  run: it uses only the scores it would have seen (the score at a rung it reached, never a later one).
  Replayed: early selection (every trial to 20%, then the top-k by early score and the default
  recipe continued — leantune's early search with a random sampler), random search (full
  schedules), and Optuna's SuccessiveHalving (ASHA), Hyperband and Median pruners with rungs at 10%
  and 30%; all but early selection get early selection's compute (optimizer steps) as their budget.
  "all" is every trial to the end (random search at full compute). TPE-driven strategies propose
  configurations outside the pool and cannot be replayed: they run live in ``bench_tuning.py``.
  With ``--live early_bo full_tpe`` those two run live beside the pool (``bench_tuning``'s cells
  under ``WORK/live``; early BO without validate-all, full TPE with early BO's compute as budget),
  and their picks are scored on the larger test set too.
  Each strategy picks by final *validation* score; the table gives its pick's test score, and the
  pick minus the default recipe, paired by seed (t interval, MDE) and per test unit (``leantune
  compare``). Besides the drawn order, each strategy is replayed over ``--reorders`` random reorderings
  of the pool (default recipe first), which averages out the luck of the order.

    python3 benchmarks/bench_tuning_real.py --runner synthetic --trials 30 --seeds 0 1 2      # seconds
    python3 benchmarks/bench_tuning_real.py --runner finetune --model smollm2 --task attributes \\
        --objective metric --train-size 48 --eval-limit 16 --trials 30 --seeds 0 1 2 \\
        --work benchmarks/results/tuning-real/cells/smollm2 --name smollm2 [--shard 0/2]

Writes benchmarks/results/tuning-real/<name>.md/.json and plots beside them (``--report-only``
renders from the cells without training). With ``--work`` under ``benchmarks/results/tuning-real/cells/``
the cells' small records (``record.json``, the per-unit test rows, the larger test's metrics) are
tracked by git while checkpoints and adapters are not (that folder's ``.gitignore``), so a pool
filled on one machine continues on the next; a pick whose run folder is absent is trained again
before its larger test, and checked against its record (``restore_run``).
"""
from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT  # first: puts the repo on sys.path, the hub offline

import bench_tuning  # noqa: E402  (the runner factory, the seed interval and the per-unit comparison)
from leantune.errors import LeantuneError, ParameterError  # noqa: E402
from leantune.io import atomic_path, json_safe, read_json, refuse_other_settings, write_json  # noqa: E402
from leantune.tuning import SearchRecords, TrialRecord, load_space, report  # noqa: E402
from leantune.tuning.analysis import agreement_interval  # noqa: E402
from leantune.tuning.runner import failure_reason, safe_run  # noqa: E402
from leantune.tuning.study import quiet_optuna  # noqa: E402

FRACTIONS = (0.1, 0.2, 0.3, 0.5, 1.0)  # validation score recorded at these fractions of every schedule
EARLY = 0.2  # early selection's point (Oliver & Wang: ~20% of the schedule)
RUNGS = (0.1, 0.3)  # the pruners' intermediate reports (then the end): reduction factor ~3
STRATEGIES = ("early", "random", "sha", "hyperband", "median", "all")
LIVE = {"early_bo": "early_bo (live)", "full_tpe": "full_tpe (live)"}  # --live strategy -> its report row
AT_LIVE = ("random", "sha", "hyperband", "median")  # replayed again with live early BO's compute as budget
AT_LIVE_SUFFIX = " @ live BO budget"
STABLE_SPEARMAN = 0.8  # "the ranking holds" from the first fraction whose Spearman with the end stays >= this
SETTINGS = ("runner", "model", "task", "objective", "train_size", "eval_limit", "valid_size", "cutoff_len", "bf16", "noise",
            "space")  # --pick-test-limit is not one: each limit keeps its own folder
OUT_DIR = ROOT / "benchmarks" / "results" / "tuning-real"


# ----------------------------------------------------------------------------- the pool and its cells


def draw_pool(space, n: int, seed: int) -> list[dict]:
    """The default recipe, then ``n`` configurations from Optuna's seeded RandomSampler (what a random
    search with this seed proposes, in order)."""
    import optuna

    quiet_optuna()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    study.enqueue_trial(space.baseline_params())
    pool = []
    for _ in range(n + 1):
        trial = study.ask()
        pool.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return pool


def settings_of(args) -> dict:
    return {k: (str(v) if isinstance(v := getattr(args, k, None), Path) else v) for k in SETTINGS}


def read_record(folder: Path, params: dict) -> dict | None:
    """``folder/record.json`` (None before the trial's first point); one recorded for other
    hyperparameters is refused."""
    path = folder / "record.json"
    if not path.is_file():
        return None
    rec = read_json(path)
    if rec["params"] != params:
        raise LeantuneError(f"{path}: recorded with other hyperparameters ({rec['params']}); use another --work folder")
    return rec


def record_trial(runner, params: dict, folder: Path, root: Path, baseline: bool, log=None) -> dict:
    """Train ``params`` through every fraction in ``folder/run`` (resuming), keeping one point per
    fraction in ``folder/record.json``; at the end also the test score (and the per-unit rows' path)."""
    path = folder / "record.json"
    rec = read_record(folder, params) or {"params": params, "baseline": baseline, "points": []}
    done = {p["fraction"] for p in rec["points"]}
    for f in FRACTIONS:
        if f in done:
            continue
        final = f >= 1
        res = safe_run(runner, params, folder / "run", None if final else f, test=final)
        reason = failure_reason(res, final=final)  # a 0 before the end is a low score, not a failure
        rec["points"].append({"fraction": f, "steps": res.steps, "total_steps": res.total_steps, "tokens": res.tokens,
                              "score": 0.0 if reason else float(res.score), "status": res.status, "reason": reason,
                              "valid_loss": json_safe(res.valid_loss), "wall_s": res.wall_s,
                              "metrics": json_safe(res.metrics)})
        if final:
            rec["test_score"] = None if reason else res.test_score
            rec["history"] = json_safe(res.history)
            rows = folder / "run" / "test"
            rec["test_rows"] = str(rows.relative_to(root)) if (rows / "per_unit.jsonl").is_file() else None
        write_json(path, rec)  # after every point: an interrupted trial resumes at the next fraction
        if log:
            last = rec["points"][-1]
            log(f"  {folder.parent.name}/{folder.name} {int(100 * f)}%: step {last['steps']}/{last['total_steps']}, score {last['score']:.4f}"
                + (f" ({reason})" if reason else "") + f", {last['wall_s']:.0f}s")
    return rec


def fill_pool(runner, space, args, seed: int, root: Path, shard: tuple[int, int]) -> list[dict | None]:
    """Every cell of one seed's pool that this shard owns, trained (or read back); cells of other
    shards are read when finished, else None."""
    pool = draw_pool(space, args.trials, seed)
    out: list[dict | None] = []
    for i, params in enumerate(pool):
        folder = root / f"s{seed}" / f"t{i:03d}"
        if i % shard[1] == shard[0] and not args.report_only:
            t0 = time.perf_counter()
            rec = record_trial(runner, params, folder, root, baseline=i == 0, log=lambda m: print(m, flush=True))
            end = rec["points"][-1]
            print(f"seed {seed} trial {i}/{len(pool) - 1}: final {end['score']:.4f}"
                  + (f" (failed: {end['reason']})" if end["reason"] else "") + f"  {time.perf_counter() - t0:.0f}s", flush=True)
        else:
            rec = read_record(folder, params)
        out.append(rec if rec is not None and len(rec["points"]) == len(FRACTIONS) else None)
    return out


# ----------------------------------------------------------------------------- reading a record


def point(rec: dict, fraction: float) -> dict:
    return next(p for p in rec["points"] if p["fraction"] == fraction)


def score_at(rec: dict, fraction: float) -> float:
    return point(rec, fraction)["score"]


def steps_at(rec: dict, fraction: float) -> int:
    return int(point(rec, fraction)["steps"])


def failed(rec: dict) -> bool:
    return point(rec, 1.0)["reason"] is not None


# ----------------------------------------------------------------------------- rank agreement


def agreement_by_fraction(pool: list[dict], k: int, n_boot: int) -> list[dict]:
    """For every recorded fraction before the end: rank agreement with the final validation score over
    the usable trials (bootstrap intervals over trials)."""
    usable = [r for r in pool if not failed(r)]
    final = [score_at(r, 1.0) for r in usable]
    return [{"fraction": f, **agreement_interval([score_at(r, f) for r in usable], final, k, n_boot=n_boot)}
            for f in FRACTIONS[:-1]]


def stable_from(rows: list[dict], k: int) -> dict:
    """The first fraction from which Spearman stays >= STABLE_SPEARMAN, and the first whose early top-k
    holds >= 80% of the final top-k (Oliver & Wang's 4 of 5); None when none does."""
    sp = None
    for i, row in enumerate(rows):
        if all(r["spearman"] is not None and r["spearman"] >= STABLE_SPEARMAN for r in rows[i:]):
            sp = row["fraction"]
            break
    need = math.ceil(0.8 * k)
    top = next((r["fraction"] for r in rows if r["topk_overlap"] is not None and r["topk_overlap"] >= need), None)
    return {"spearman": sp, "topk": top}


# ----------------------------------------------------------------------------- replays


def _pick(pool: list[dict], finished: list[int]) -> int | None:
    """The best final validation score among the finished, usable trials (ties: the earlier trial)."""
    usable = [i for i in finished if not failed(pool[i])]
    return max(usable, key=lambda i: (score_at(pool[i], 1.0), -i)) if usable else None


def replay_early(pool: list[dict], order: list[int], top_k: int) -> dict:
    """Every trial to EARLY, then the top-k by early score continued (in early rank until k finish
    usable, as ``EarlySearch`` backfills) plus the default recipe."""
    compute = sum(steps_at(pool[i], EARLY) for i in order)
    alive = [i for i in order if point(pool[i], EARLY)["reason"] is None]
    ranked = sorted(alive, key=lambda i: (-score_at(pool[i], EARLY), order.index(i)))
    continued, usable = [], 0
    for i in ranked:
        if usable >= top_k:
            break
        continued.append(i)
        usable += not failed(pool[i])
    if order[0] not in continued and point(pool[order[0]], EARLY)["reason"] is None:
        continued.append(order[0])  # the default recipe is always continued
    compute += sum(steps_at(pool[i], 1.0) - steps_at(pool[i], EARLY) for i in continued)
    return {"pick": _pick(pool, continued), "compute": compute, "trials": len(order), "continued": len(continued)}


def replay_random(pool: list[dict], order: list[int], budget: float | None) -> dict:
    """Full schedules in the drawn order until the budget is spent (checked after each trial, as a live
    study stops); budget None: every trial (the 'all' row)."""
    compute, finished = 0, []
    for i in order:
        if budget is not None and compute >= budget:
            break
        compute += steps_at(pool[i], 1.0)
        finished.append(i)
    return {"pick": _pick(pool, finished), "compute": compute, "trials": len(finished)}


def _pruner(name: str):
    import optuna

    return {"sha": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=10, reduction_factor=3),
            "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=10, max_resource=100, reduction_factor=3),
            "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)}[name]()


def replay_pruner(pool: list[dict], order: list[int], name: str, budget: float) -> dict:
    """Optuna's pruner fed the recorded scores at the rungs, trials in the drawn order, until the
    budget is spent or the pool runs out. The pruner sees a trial's rung score only once the trial
    has trained to that rung, and the compute counted is what the trial trained before it stopped."""
    import optuna

    quiet_optuna()
    # A fixed study name: Hyperband assigns trials to brackets by hashing it with the trial number.
    study = optuna.create_study(study_name=name, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=_pruner(name))
    for i in order:
        study.enqueue_trial({}, user_attrs={"idx": i})
    state = {"compute": 0, "finished": [], "pruned": 0}

    def objective(trial):
        i = trial.user_attrs["idx"]
        rec = pool[i]
        for f in RUNGS:
            p = point(rec, f)
            if p["reason"] is not None or p["status"] in ("finished", "early_stopped", "diverged"):
                break  # the run ended here (diverged or done early): its last point is its end
            trial.report(p["score"], step=int(round(100 * f)))
            if trial.should_prune():
                state["compute"] += p["steps"]
                state["pruned"] += 1
                raise optuna.TrialPruned()
        state["compute"] += steps_at(rec, 1.0)
        state["finished"].append(i)
        return score_at(rec, 1.0)

    def stop(study, _trial):
        if state["compute"] >= budget:
            study.stop()

    study.optimize(objective, n_trials=len(order), callbacks=[stop])
    ran = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    return {"pick": _pick(pool, state["finished"]), "compute": state["compute"], "trials": len(ran), "pruned": state["pruned"]}


def replay_all(pool: list[dict], order: list[int], top_k: int) -> dict:
    """Every strategy over one order of the pool; the others get early selection's compute."""
    early = replay_early(pool, order, top_k)
    out = {"early": early}
    out["random"] = replay_random(pool, order, early["compute"])
    for name in ("sha", "hyperband", "median"):
        out[name] = replay_pruner(pool, order, name, early["compute"])
    out["all"] = replay_random(pool, order, None)
    return out


def reorders(n: int, count: int, seed: int) -> list[list[int]]:
    """``count`` random orders of trials 1..n-1 behind the default recipe (trial 0)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        rest = list(range(1, n))
        rng.shuffle(rest)
        out.append([0, *rest])
    return out


# ----------------------------------------------------------------------------- the picks on a larger test set


def pick_test_folder(limit: int) -> str:
    return f"pick-test-{limit or 'all'}"


def restore_run(runner, folder: Path) -> None:
    """Give a finished trial its run folder back when only its record is here.

    Records are small and travel with the repository (``benchmarks/results/tuning-real/cells``); run
    folders (checkpoints, the adapter) do not, so on a new machine a pick is trained again, to the end
    with the recorded hyperparameters. Its final validation score is compared with the record's, and
    both are kept in ``retrained.json``: the larger test set must score the model that was picked."""
    if (folder / "run").is_dir():
        return
    rec = read_json(folder / "record.json")
    retrain(runner, rec["params"], folder / "run", point(rec, 1.0)["score"], folder / "retrained.json")


def retrain(runner, params: dict, run: Path, recorded: float, note: Path) -> None:
    """Train ``params`` to the end in ``run`` again and keep, in ``note``, its final validation score
    beside the ``recorded`` one (a model that does not reproduce it is flagged in the report)."""
    t0 = time.perf_counter()
    res = safe_run(runner, params, run, None)
    again = 0.0 if failure_reason(res, final=True) else float(res.score)
    same, wall = math.isclose(again, recorded, abs_tol=1e-6), time.perf_counter() - t0
    write_json(note, {"recorded_score": recorded, "retrained_score": again, "same": same, "wall_s": wall})
    print(f"{run.parent.name}/{run.name}: run folder absent, trained again ({wall:.0f}s): final "
          f"validation {again:.4f}, recorded {recorded:.4f}" + ("" if same else " -- NOT the recorded model"), flush=True)


def test_picks(runner, per_seed: dict, args, root: Path, shard: tuple[int, int]) -> None:
    """Every distinct pick (drawn order) and each seed's default recipe, scored on ``--pick-test-limit``
    test units (far more than a trial's ``--eval-limit``), so that pick − default has a usable
    interval. Picks are made on validation before this; the larger test set never feeds a choice.
    A shard evaluates the trials it owns; the figures appear once every shard has run."""
    if args.pick_test_limit < 0 or not hasattr(runner, "evaluate_test") or args.objective != "metric":
        return
    name = pick_test_folder(args.pick_test_limit)
    for seed, r in per_seed.items():
        replayed = [s for s in r["strategies"].values() if not s.get("live")]  # live picks are not pool trials
        wanted = sorted({0, *(s["pick"] for s in replayed if s["pick"] is not None)})
        found = {}
        for i in wanted:
            folder = root / f"s{seed}" / f"t{i:03d}"
            rows = folder / name
            if not (rows / "metrics.json").is_file() and i % shard[1] == shard[0] and not args.report_only:
                t0 = time.perf_counter()
                restore_run(runner, folder)
                score = runner.evaluate_test(folder / "run", args.pick_test_limit or None, rows)
                print(f"seed {seed} trial {i}: {runner.metric} {score:.4f} on the larger test set  {time.perf_counter() - t0:.0f}s",
                      flush=True)
            if (rows / "metrics.json").is_file():
                found[i] = {"score": read_json(rows / "metrics.json")[runner.metric], "rows": str(rows.relative_to(root))}
            if (folder / "retrained.json").is_file() and i in found:
                found[i]["retrained"] = read_json(folder / "retrained.json")
        for s in replayed:
            s["pick_big"] = found.get(s["pick"]) if s["pick"] is not None else None
        r["baseline"]["big"] = found.get(0)


# ----------------------------------------------------------------------------- live TPE-driven rows


class PoolRunner:
    """The trial runner, answering from the pool's records for a configuration the pool already holds.

    Optuna's TPE sampler draws its first ten proposals (its random start-up) from a RandomSampler with
    the same seed, so a live TPE-driven study of seed s proposes the default recipe and then exactly
    the first ten configurations of seed s's pool. Training those again would measure them again with
    the same runner, settings and seed; their recorded points (score, steps, tokens, status, the
    reason a point failed, the trial's test score and per-unit test rows) are returned instead, and a
    live pick that is a pool trial is scored on the larger test set from that trial's run. Any
    other configuration, or a fraction the records do not hold, goes to the real runner."""

    def __init__(self, runner, pool: list[dict], folders: list[Path]):
        self.runner, self.pool, self.folders, self.reused = runner, pool, folders, 0

    def __getattr__(self, name):  # metric, preflight, collect_garbage, evaluate_test, ...
        return getattr(self.runner, name)

    def find(self, params: dict) -> int | None:
        return next((i for i, rec in enumerate(self.pool) if rec is not None and rec["params"] == params), None)

    def run(self, params: dict, out_dir: Path, fraction: float | None, test: bool = False):
        from leantune.tuning.runner import RunResult

        i = self.find(params)
        f = 1.0 if fraction is None else fraction
        if i is None or not any(math.isclose(p["fraction"], f) for p in self.pool[i]["points"]):
            return self.runner.run(params, out_dir, fraction, test=test)
        rec, pt = self.pool[i], point(self.pool[i], f)
        self.reused += 1
        # A recorded failure gives the same reason again: failure_reason reads a "diverged" status's
        # reason after "diverged: ", and any other failure's as is from an "error" status.
        if pt["reason"] is None:
            status, reason = pt["status"], ""
        elif pt["status"] == "diverged":
            status, reason = "diverged", pt["reason"].removeprefix("diverged").removeprefix(": ")
        else:
            status, reason = "error", pt["reason"]
        res = RunResult(score=pt["score"], status=status, steps=pt["steps"], total_steps=pt["total_steps"], tokens=pt["tokens"],
                        valid_loss=float(pt["valid_loss"]) if isinstance(pt["valid_loss"], str) else pt["valid_loss"],
                        metrics={k: (float(v) if isinstance(v, str) else v) for k, v in pt["metrics"].items()}, reason=reason,
                        wall_s=0.0)
        if f >= 1:
            res.history = [{k: (float(v) if isinstance(v, str) else v) for k, v in row.items()} for row in rec.get("history") or []]
        if test:
            res.test_score = rec["test_score"]
            rows = self.folders[i] / "run" / "test" / "per_unit.jsonl"
            if rows.is_file():  # the pick's per-unit test rows where the live study looks for them
                (Path(out_dir) / "test").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(rows, Path(out_dir) / "test" / "per_unit.jsonl")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "pool_trial.txt").write_text(f"{self.folders[i].parent.name}/{self.folders[i].name}\n")
        return res


def live_args(args, root: Path) -> argparse.Namespace:
    """``bench_tuning``'s settings for this study's live cells: the same runner, early BO at EARLY
    without validate-all (the pool measures rank agreement; a live row costs what the method costs),
    and full-fidelity TPE capped at early BO's compute (equal compute)."""
    ns = argparse.Namespace(**vars(args))
    ns.early_fraction, ns.validate_all, ns.equal_compute, ns.root, ns.verbose = EARLY, False, True, root, True
    ns.trials = args.trials + 1  # the default recipe + --trials proposals, as many as a pool holds
    return ns


def run_live(runner, space, args, root: Path, shard: tuple[int, int]) -> dict:
    """seed -> {strategy: result} for ``--live``: early BO and full TPE with Optuna's TPE sampler,
    run live with ``bench_tuning``'s cells under ``root/live`` (TPE proposes configurations outside
    the pool, so these rows cannot be replayed). A seed's cells belong to shard ``seed % N``; the
    pick of each is then scored on the larger test set like the replayed picks. Full TPE's budget
    is that seed's early-BO compute, so early BO always runs first."""
    out: dict = {}
    if not args.live:
        return out
    la, live_root = live_args(args, root), root / "live"
    name = pick_test_folder(args.pick_test_limit)
    for seed in args.seeds:
        mine = seed % shard[1] == shard[0] and not args.report_only
        by: dict = {}
        folders = [root / f"s{seed}" / f"t{i:03d}" for i in range(args.trials + 1)]
        records = [read_record(f, p) for f, p in zip(folders, draw_pool(space, args.trials, seed))]
        pooled = PoolRunner(runner, [r if r is not None and len(r["points"]) == len(FRACTIONS) else None for r in records], folders)
        for strategy in ("early_bo", "full_tpe"):
            if strategy != "early_bo" and strategy not in args.live:
                continue
            if not (mine or (live_root / "cells" / f"s{seed}-{strategy}.json").is_file()):
                break  # another shard's, not finished yet (and full TPE needs early BO's compute)
            t0, reused = time.perf_counter(), pooled.reused
            r = by[strategy] = bench_tuning.run_cell(pooled, space, la, seed, live_root, strategy,
                                                     by["early_bo"]["compute"] if by else None)
            if mine:
                print(f"seed {seed} {strategy} (live): pick trial {r.get('best_trial')}, valid {_f(r['best_valid'], 4)}, "
                      f"test {_f(r['best_test'], 4)} at {r['compute']} steps  {time.perf_counter() - t0:.0f}s"
                      f" ({pooled.reused - reused} runs answered from the pool's records)", flush=True)
            same = root / r["best_dir"] / "pool_trial.txt" if r.get("best_dir") else None
            if same is not None and same.is_file():  # the pick is a pool trial: its larger test is that trial's
                trial = root / same.read_text().strip()
                rows = trial / name
                if (not (rows / "metrics.json").is_file() and mine and args.pick_test_limit >= 0 and hasattr(runner, "evaluate_test")
                        and args.objective == "metric"):
                    restore_run(runner, trial)
                    runner.evaluate_test(trial / "run", args.pick_test_limit or None, rows)
                if (rows / "metrics.json").is_file():
                    r["pick_big"] = {"score": read_json(rows / "metrics.json")[runner.metric], "rows": str(rows.relative_to(root)),
                                     "pool_trial": trial.name}
                continue
            rows = live_root / f"s{seed}" / f"{strategy}-{name}"
            if (r.get("best_dir") and args.pick_test_limit >= 0 and hasattr(runner, "evaluate_test") and args.objective == "metric"
                    and not (rows / "metrics.json").is_file() and mine):
                run = root / r["best_dir"]
                if not run.is_dir():  # only the records travel between machines
                    retrain(runner, r["best_params"], run, r["best_valid"], rows.parent / f"{strategy}-retrained.json")
                t0 = time.perf_counter()
                score = runner.evaluate_test(run, args.pick_test_limit or None, rows)
                print(f"seed {seed} {strategy} (live) pick: {runner.metric} {score:.4f} on the larger test set  "
                      f"{time.perf_counter() - t0:.0f}s", flush=True)
            if (rows / "metrics.json").is_file():
                r["pick_big"] = {"score": read_json(rows / "metrics.json")[runner.metric], "rows": str(rows.relative_to(root))}
                note = rows.parent / f"{strategy}-retrained.json"
                if note.is_file():
                    r["pick_big"]["retrained"] = read_json(note)
        if by:
            out[str(seed)] = {k: v for k, v in by.items() if k in args.live}
    return out


def add_live(per_seed: dict, live: dict) -> None:
    """The live rows of every seed whose pool is complete, as strategies beside the replayed ones
    (their compute share is of that seed's pool run to the end)."""
    for seed, by in live.items():
        if seed not in per_seed:
            continue
        for strategy, r in by.items():
            per_seed[seed]["strategies"][LIVE[strategy]] = {
                "live": True, "pick": r.get("best_trial"), "compute": r["compute"], "trials": r["trials"],
                "pick_valid": r["best_valid"], "pick_test": r["best_test"], "pick_rows": r.get("best_rows"),
                "pick_params": r.get("best_params"), "reordered_test": None, "pick_big": r.get("pick_big"),
                "wall_s": r.get("wall_s"), **({"continued": r["continued"]} if "continued" in r else {"pruned": r.get("pruned", 0)})}


def strategy_row(pool: list[dict], drawn: dict, again: list[dict]) -> dict:
    """One strategy's report row: its replay in the drawn order with what its pick scored, and the
    mean test score and compute of its replays over the reorderings ``again``."""
    i = drawn["pick"]
    tests = [pool[a["pick"]]["test_score"] for a in again if a["pick"] is not None]
    return {**drawn, "pick_valid": None if i is None else score_at(pool[i], 1.0),
            "pick_test": None if i is None else pool[i]["test_score"],
            "pick_rows": None if i is None else pool[i].get("test_rows"),
            "pick_params": None if i is None else pool[i]["params"],
            "reordered_test": statistics.fmean(tests) if tests else None,
            "reordered_compute": statistics.fmean(a["compute"] for a in again) if again else None}


def add_at_live_budget(per_seed: dict, pools: dict, args) -> None:
    """Random search and the pruners replayed again, with the budget live early BO spent in the same
    seed (where its TPE proposals drift decides its compute: 80% of every trial to the end in one real
    seed, 34% in another, against early selection's 42-43%): the rows early BO (live) meets at equal
    compute. ``exhausted`` marks a replay that ran out
    of pool before the budget (a live run would have gone on proposing)."""
    for seed, r in per_seed.items():
        live = r["strategies"].get(LIVE["early_bo"])
        if live is None:
            continue
        pool, budget = pools[seed], live["compute"]
        orders = [list(range(len(pool))), *reorders(len(pool), args.reorders, int(seed))]  # drawn order first
        for name in AT_LIVE:
            runs = [replay_random(pool, order, budget) if name == "random" else replay_pruner(pool, order, name, budget)
                    for order in orders]
            r["strategies"][name + AT_LIVE_SUFFIX] = {**strategy_row(pool, runs[0], runs[1:]), "budget": budget,
                                                      "exhausted": runs[0]["compute"] < budget}


def strategy_names(per_seed: dict) -> list[str]:
    """The replayed strategies, the live rows any complete seed has, then the replays at live early
    BO's budget."""
    have = {n for r in per_seed.values() for n in r["strategies"]}
    return [*STRATEGIES, *(n for n in LIVE.values() if n in have), *(n + AT_LIVE_SUFFIX for n in AT_LIVE if n + AT_LIVE_SUFFIX in have)]


# ----------------------------------------------------------------------------- one seed, all seeds


def measured_test(rec: dict, metric: str | None) -> float | None:
    """A trial's test score as measured. A failed trial's ``test_score`` is None, but one that ended
    with no usable output was still scored on test (``test_<metric>`` in its last point): what a
    user running those settings gets, so the default recipe is compared at that value."""
    if rec["test_score"] is not None or metric is None:
        return rec["test_score"]
    value = point(rec, 1.0)["metrics"].get(f"test_{metric}")
    return value if isinstance(value, float) else None


def analyse_seed(pool: list[dict], args, seed: int, metric: str | None = None) -> dict:
    """Agreement, the replays in the drawn order and their mean over reorderings, for one full pool
    (``metric``: the runner's, to read a failed default recipe's measured test score)."""
    replays = replay_all(pool, list(range(len(pool))), args.top_k)
    again = [replay_all(pool, order, args.top_k) for order in reorders(len(pool), args.reorders, seed)]
    by_fraction = agreement_by_fraction(pool, args.top_k, args.n_boot)
    strategies = {name: strategy_row(pool, r, [a[name] for a in again]) for name, r in replays.items()}
    base = pool[0]
    return {"trials": len(pool), "failed": sum(failed(r) for r in pool),
            "failed_ids": [i for i, r in enumerate(pool) if failed(r)],
            "baseline": {"valid": score_at(base, 1.0), "test": measured_test(base, metric), "rows": base.get("test_rows"), "failed": failed(base),
                         "params": base["params"]},
            "agreement": by_fraction, "stable_from": stable_from(by_fraction, args.top_k),
            "early_all_trials": agreement_interval([score_at(r, EARLY) for r in pool], [score_at(r, 1.0) for r in pool],
                                                   args.top_k, n_boot=args.n_boot),
            "strategies": strategies, "full_compute": replays["all"]["compute"],
            "wall_s": sum(p["wall_s"] for r in pool for p in r["points"])}


def summarise(per_seed: dict, root: Path | None, metric: str, runner: str, objective: str) -> dict:
    """Across seeds: each strategy's pick (mean, sd), compute share, and pick − default recipe as a
    seed t interval; per test unit too when the runs kept their rows."""
    seeds = list(per_seed)
    out: dict = {"strategies": {}}
    names = strategy_names(per_seed)
    for name in names:
        have = [s for s in seeds if name in per_seed[s]["strategies"]]  # a live row may not have run for every seed yet
        rows = [per_seed[s]["strategies"][name] for s in have]
        diffs = [r["pick_test"] - per_seed[s]["baseline"]["test"] for s, r in zip(have, rows)
                 if r["pick_test"] is not None and per_seed[s]["baseline"]["test"] is not None]
        big = [r.get("pick_big") for r in rows]
        big_diffs = [b["score"] - per_seed[s]["baseline"]["big"]["score"] for s, b in zip(have, big)
                     if b and per_seed[s]["baseline"].get("big")]
        alls = [per_seed[s]["strategies"]["all"]["pick_test"] for s in have]
        regret = [r["pick_test"] - a for r, a in zip(rows, alls) if r["pick_test"] is not None and a is not None]
        out["strategies"][name] = {
            "seeds": have,
            "pick_test": bench_tuning._mean_sd([r["pick_test"] for r in rows]),
            "pick_valid": bench_tuning._mean_sd([r["pick_valid"] for r in rows]),
            "reordered_test": bench_tuning._mean_sd([r["reordered_test"] for r in rows]),
            "share": bench_tuning._mean_sd([r["compute"] / per_seed[s]["full_compute"] for s, r in zip(have, rows)]),
            "compute": bench_tuning._mean_sd([r["compute"] for r in rows]),
            "vs_default": bench_tuning.paired_seed_interval(diffs) if len(diffs) == len(have) else None,
            "vs_all": bench_tuning.paired_seed_interval(regret) if len(regret) == len(have) and name != "all" else None,
            "big_test": bench_tuning._mean_sd([b["score"] if b else None for b in big]),
            "big_vs_default": bench_tuning.paired_seed_interval(big_diffs) if len(big_diffs) == len(have) else None,
        }
    for f_index, f in enumerate(FRACTIONS[:-1]):
        out.setdefault("agreement", []).append({
            "fraction": f, **{key: bench_tuning._mean_sd([per_seed[s]["agreement"][f_index][key] for s in seeds])
                              for key in ("spearman", "kendall", "topk_overlap")}})
    if root is not None and runner == "finetune" and objective == "metric":
        # The per-unit comparison on the larger test set over the seeds whose picks all have it (a seed
        # still being tested is left out and named); on the trials' own test units when no seed has it.
        big_seeds = [s for s in seeds if per_seed[s]["baseline"].get("big")
                     and all(per_seed[s]["strategies"][n].get("pick_big") for n in STRATEGIES)]
        have_big = bool(big_seeds)
        used = big_seeds or seeds
        key = "pick_big" if have_big else "pick_rows"
        # A live row is compared over the seeds it has run for (the table says how many).
        picks = {name: {s: (r[key]["rows"] if have_big else r[key]) if r.get(key) else None
                        for s in out["strategies"][name]["seeds"] if s in used for r in [per_seed[s]["strategies"][name]]}
                 for name in names}
        baselines = {s: per_seed[s]["baseline"]["big"]["rows"] if have_big else per_seed[s]["baseline"]["rows"] for s in used}
        out["units_on"] = "larger" if have_big else "trial"
        out["units_seeds"], out["units_left_out"] = used, [s for s in seeds if s not in used]
        out["vs_default_units"] = bench_tuning.compare_picks(picks, baselines, root, metric)
        # The equal-compute question itself: each pick against training every trial to the end
        # ("all"), on the same units. A strategy that picked what "all" picks in every seed differs by 0.
        alls = picks["all"]
        differ = {n: p for n, p in picks.items() if n != "all" and any(p[s] != alls.get(s) for s in p)}
        out["vs_all_units"] = bench_tuning.compare_picks(differ, alls, root, metric)
        out["same_as_all"] = [n for n in picks if n != "all" and n not in differ]
        # Does early BO (live) beat each other strategy? Over the seeds both have run, on the same units.
        bo = picks.get(LIVE["early_bo"]) or {}
        out["bo_vs_units"], out["bo_same_as"] = {}, []
        for name, other in picks.items():
            both = [s for s in bo if s in other]
            if name == LIVE["early_bo"] or not both:
                continue
            if all(bo[s] == other[s] for s in both):
                out["bo_same_as"].append(name)
                continue
            row = bench_tuning.compare_picks({f"early_bo (live) − {name}": {s: bo[s] for s in both}}, other, root, metric)
            out["bo_vs_units"].update(row or {})
    return out


# ----------------------------------------------------------------------------- report


def _f(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(row: dict, key: str) -> str:
    """``row[key]`` with its bootstrap interval, as the search report prints it."""
    return _f(row.get(key)) + (report._ci(row, key) if row.get(key) is not None else "")


def render(per_seed: dict, summary: dict, args, command: str, missing: dict, plots: list[str]) -> str:
    pts = 100.0  # scores shown as points (x100)
    lines = [f"# Early-performance search on real training: {args.name or args.runner}", "",
             f"Command: `{command}`", "",
             f"Runner: {bench_tuning.describe_runner(args)}. Pool per seed: the default recipe + {args.trials} configurations "
             f"from Optuna's RandomSampler (seeded), every one trained to the end and scored on validation at "
             f"{', '.join(f'{int(100 * f)}%' for f in FRACTIONS)} of its schedule. Scores are points (×100). "
             f"Seeds: {', '.join(map(str, per_seed)) or 'none complete'}.", ""]
    if missing:
        lines += [f"**Incomplete:** {', '.join(f'seed {s}: {n} of {args.trials + 1} trials finished' for s, n in missing.items())} "
                  "(those seeds are left out below).", ""]
    if not per_seed:
        return "\n".join(lines)
    base = next(iter(per_seed.values()))["baseline"]
    lines += ["The default recipe (trial 0 of every pool: the search space's baseline) is "
              + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in base["params"].items())
              + (f"; it failed (0 at the end) in {sum(r['baseline']['failed'] for r in per_seed.values())} of {len(per_seed)} seeds."
                 if any(r["baseline"]["failed"] for r in per_seed.values()) else "."), ""]
    lines += ["## Do early ranks predict final ones?", "",
              "Over the usable trials of each pool (not failed at the end; failures: "
              + ", ".join(f"seed {s}: {r['failed']}" for s, r in per_seed.items()) + "). "
              "Per seed: value [95% bootstrap interval over trials]; the last column is the mean ± sd over seeds.", "",
              "| fraction | " + " | ".join(f"seed {s} Spearman" for s in per_seed) + f" | Kendall (mean) | top-{args.top_k} overlap (mean) | Spearman mean ± sd |",
              "|---|" + "---|" * (len(per_seed) + 3)]
    for j, row in enumerate(summary["agreement"]):
        sp, kt, ov = row["spearman"], row["kendall"], row["topk_overlap"]
        cells = [_ci(per_seed[s]["agreement"][j], "spearman") for s in per_seed]
        lines.append(f"| {int(100 * row['fraction'])}% | " + " | ".join(cells) + f" | {_f(kt[0])} | {_f(ov[0], 1)} | {_f(sp[0])} ± {_f(sp[1])} |")
    lines += ["", f"Usable trials and the top-{args.top_k} overlap two random rankings of them would share (k²/n): "
              + "; ".join(f"seed {s}: n = {r['agreement'][0]['n']}, chance "
                          f"{min(args.top_k, r['agreement'][0]['n']) ** 2 / max(r['agreement'][0]['n'], 1):.1f}"
                          for s, r in per_seed.items())
              + ". Tied early scores (several trials still at 0) are ranked by trial number in the overlap."]
    lines += ["", f"The ranking holds (Spearman with the end ≥ {STABLE_SPEARMAN} from that fraction on) from: "
              + "; ".join(f"seed {s}: {_frac(r['stable_from']['spearman'])}" for s, r in per_seed.items())
              + f". Early top-{args.top_k} holds ≥ {math.ceil(0.8 * args.top_k)} of the final top-{args.top_k} from: "
              + "; ".join(f"seed {s}: {_frac(r['stable_from']['topk'])}" for s, r in per_seed.items()) + ".", "",
              f"At {int(100 * EARLY)}% with failed trials counted as 0 at the end: "
              + "; ".join(f"seed {s}: Spearman {_ci(r['early_all_trials'], 'spearman')} (n={r['early_all_trials']['n']})"
                          for s, r in per_seed.items()) + ".", "",
              "## Strategies at equal compute", "",
              "The rows without \"(live)\" are replays with random proposals (the pool in its drawn order), which is what a live "
              "run with this sampler would do. TPE-driven strategies propose configurations outside the pool and cannot be "
              "replayed; the \"(live)\" rows ran live (`--live`): early BO (every trial to "
              f"{int(100 * EARLY)}%, the top-{args.top_k} and the default recipe continued, TPE proposals) and full-fidelity TPE "
              "(every trial to the end) with early BO's compute as its budget. Rows ending in "
              f"\"{AT_LIVE_SUFFIX.strip()}\" replay random search and the pruners again with the compute live early BO spent in "
              "the same seed, so that early BO (live) meets them at equal compute. Compute = optimizer steps; share = of every trial "
              "of the same seed's pool to the end. Test = the test score of the configuration the strategy picks by final "
              "validation score; n = seeds.", "",
              "| strategy | compute share | pick: final valid | pick: test (drawn order) | pick: test (mean over reorderings) | "
              "pick − every trial to the end ('all'), test: 95% CI over seeds (MDE) | pick − default recipe, test: 95% CI over seeds (MDE) |",
              "|---|---|---|---|---|---|---|"]
    names = list(summary["strategies"])
    for name in names:
        s = summary["strategies"][name]
        lines.append(f"| {name} | {_pct(s['share'])} | {_pm(s['pick_valid'], pts)} | {_pm(s['pick_test'], pts)} | "
                     f"{_pm(s['reordered_test'], pts)} | {_seed_ci(s.get('vs_all'), pts)} | {_seed_ci(s['vs_default'], pts)} |")
    if any(summary["strategies"][n]["big_test"][0] is not None for n in names):
        n_big = f"{args.pick_test_limit} test products" if args.pick_test_limit else "every test product"
        lines += ["", f"The picks and the default recipe on a larger test set ({n_big}; `--pick-test-limit`, drawn order):", "",
                  "| strategy | pick: test | pick − default recipe: 95% CI over seeds (MDE) |", "|---|---|---|"]
        for name in names:
            st = summary["strategies"][name]
            lines.append(f"| {name} | {_pm(st['big_test'], pts)} | {_seed_ci(st['big_vs_default'], pts)} |")
        again = {(seed, b["rows"]): b["retrained"] for seed, r in per_seed.items()
                 for b in [r["baseline"].get("big"), *(x.get("pick_big") for x in r["strategies"].values())]
                 if b and b.get("retrained")}
        if again:
            lines += ["", "Trained again before this test (their run folders were not on the machine; only the records "
                      "travel): " + "; ".join(f"seed {seed} {_trial_label(rows)}: final validation {_f(pts * t['retrained_score'])} "
                                              f"vs {_f(pts * t['recorded_score'])} recorded"
                                              + ("" if t["same"] else " (**not the recorded model**)")
                                              for (seed, rows), t in sorted(again.items())) + "."]
    where = ("the larger test set" if summary.get("units_on") == "larger" else
             f"the trials' own {args.eval_limit} test products (the larger test set is not complete)")
    if summary.get("units_left_out"):
        used, out = summary["units_seeds"], summary["units_left_out"]
        where += (f" ({'seeds' if len(used) > 1 else 'seed'} {', '.join(used)}; left out until every pick has its larger "
                  f"test: {'seeds' if len(out) > 1 else 'seed'} {', '.join(out)})")
    units = summary.get("vs_default_units")
    if units:
        lines += ["", f"Each pick against the default recipe on the same test units of {where} "
                  "(`leantune compare`: paired, seeds averaged). In these tables the units + seeds interval takes the study "
                  "seeds as blocks (`leantune.seed_paired`): every strategy of one seed searches that seed's pool from the same "
                  "first proposals, so the seed part is the spread of the per-seed differences (\"Δ per seed\"), with "
                  "n − 1 degrees of freedom.", "", *bench_tuning.units_table(units, pts)]
    units = summary.get("vs_all_units")
    if units or summary.get("same_as_all"):
        lines += ["", f"Each pick against training every trial to the end ('all') on the same test units of {where}: "
                  "negative: what the strategy's saving cost on test; positive: its pick scores better on test than the one 'all' chose "
                  "on validation."]
        if summary.get("same_as_all"):
            lines.append("Picked what 'all' picks in every seed (difference 0): " + ", ".join(summary["same_as_all"]) + ".")
        if units:
            lines += ["", *bench_tuning.units_table(units, pts)]
    if summary.get("bo_vs_units") or summary.get("bo_same_as"):
        lines += ["", f"Early BO (live) against each other strategy's pick on the same test units of {where}, over the seeds "
                  "both have run: positive: early BO's pick scores better on test. Rows ending in "
                  f"\"{AT_LIVE_SUFFIX.strip()}\" are the replays given the compute live early BO spent in the same seed (equal "
                  "compute); the plain replayed rows had early selection's (less)."]
        if summary.get("bo_same_as"):
            lines.append("Picked what early BO (live) picks in every seed (difference 0): " + ", ".join(summary["bo_same_as"]) + ".")
        if summary.get("bo_vs_units"):
            lines += ["", *bench_tuning.units_table(summary["bo_vs_units"], pts)]
            plans = {k: u["pair_mde_at"] for k, u in summary["bo_vs_units"].items() if u.get("pair_mde_at")}
            if plans:
                counts = list(next(iter(plans.values())))
                lines += ["", "How many study seeds these comparisons need: the MDE over units + seeds (paired by seed, 80% power) "
                          "if the per-seed differences kept the spread seen here, at " + ", ".join(counts) + " seeds.", "",
                          "| comparison | " + " | ".join(f"MDE, {k} seeds" for k in counts) + " |",
                          "|---|" + "---|" * len(counts)]
                lines += [f"| {k} | " + " | ".join(f"{pts * v:.2f}" for v in plan.values()) + " |" for k, plan in plans.items()]
    lines += ["", "## Per seed", "", "| seed | strategy | trials | compute | pick | pick: valid | pick: test | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for seed, r in per_seed.items():
        for name in names:
            s = r["strategies"].get(name)
            if s is None:
                continue
            note = (f"{s['continued']} continued" if "continued" in s else f"{s['pruned']} pruned" if "pruned" in s else "")
            if s.get("live"):
                note += f"; live, {s['wall_s'] / 60:.0f} min" if s.get("wall_s") else "; live"
            if s.get("exhausted"):
                note += f"; the pool ran out before the budget ({s['budget']} steps)"
            lines.append(f"| {seed} | {name} | {s['trials']} | {s['compute']} | {_f(s['pick'], 0)} | {_f(_x(s['pick_valid'], pts))} | "
                         f"{_f(_x(s['pick_test'], pts))} | {note} |")
        b = r["baseline"]
        lines.append(f"| {seed} | default recipe | 1 | – | 0 | {_f(_x(b['valid'], pts))} | {_f(_x(b['test'], pts))} | "
                     f"{'failed' if b['failed'] else ''} |")
    lines += ["", "Wall time of the recorded trials (training + every evaluation): "
              + "; ".join(f"seed {s}: {r['wall_s'] / 3600:.2f} h" for s, r in per_seed.items())
              + f". {args.machine}", ""]
    lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _trial_label(rows: str) -> str:
    """The trial a larger-test folder belongs to: ``t004`` for a pool trial, ``early_bo (live)`` for a live pick."""
    parts = rows.split("/")
    return f"{parts[-1].rsplit('-pick-test', 1)[0]} (live)" if parts[0] == "live" else parts[1]


def _seed_ci(ci: dict | None, scale: float) -> str:
    return "–" if not ci else f"{scale * ci['mean']:+.2f} [{scale * ci['low']:+.2f}, {scale * ci['high']:+.2f}] (MDE {scale * ci['mde']:.2f})"


def _x(v, scale):
    return None if v is None else scale * v


def _pm(ms, scale) -> str:
    m, sd, n = ms
    return "–" if m is None else f"{scale * m:.2f} ± {scale * sd:.2f} (n={n})"


def _pct(ms) -> str:
    m, sd, _ = ms
    return "–" if m is None else f"{100 * m:.0f}% ± {100 * sd:.0f}%"


def _frac(f) -> str:
    return "never (within 50%)" if f is None else f"{int(100 * f)}%"


def as_search_records(pool: list[dict], metric: str) -> SearchRecords:
    """One pool as the search report's records (every trial continued), so its plots draw it."""
    trials = []
    for i, rec in enumerate(pool):
        early, end = point(rec, EARLY), point(rec, 1.0)
        trials.append(TrialRecord(
            number=i, params=rec["params"], baseline=rec["baseline"], status="failed" if early["reason"] else "ok",
            fail_reason=early["reason"], early_score=early["score"], early_status=early["status"], early_steps=early["steps"],
            total_steps=end["total_steps"], early_tokens=early["tokens"], history=rec.get("history", []), role="all",
            final_status="failed" if end["reason"] else "ok", final_reason=end["reason"], final_score=end["score"],
            test_score=rec.get("test_score"), final_steps=end["steps"], final_tokens=end["tokens"]))
    return SearchRecords(study="pool", metric=metric, settings={}, trials=trials)


def plot_all(pools: dict, per_seed: dict, args, metric: str, stem: str) -> list[str]:
    """Per seed: Oliver & Wang's Figures 2-4 (score vs trial at the early point and the end; lr x alpha
    coloured by final score, failures marked; validation loss vs epoch) and early vs final; then the
    agreement by fraction over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for seed, pool in pools.items():
        rec = as_search_records(pool, metric)
        tags = ("score_vs_trial", "lr_vs_alpha", "valid_loss", "early_vs_final")
        paths = {tag: f"{stem}-s{seed}-{tag}.png" for tag in tags}
        report._plot_scores(rec, OUT_DIR / paths["score_vs_trial"])
        report._plot_lr_alpha(rec, OUT_DIR / paths["lr_vs_alpha"])
        report._plot_losses(rec, OUT_DIR / paths["valid_loss"])
        report._plot_early_final(rec, per_seed[seed]["early_all_trials"], args.top_k, OUT_DIR / paths["early_vs_final"])
        names += [paths[tag] for tag in tags]
    fig, ax = plt.subplots(figsize=(6, 4))
    for seed, r in per_seed.items():
        rows = r["agreement"]
        xs = [100 * row["fraction"] for row in rows]
        ys = [row["spearman"] if row["spearman"] is not None else float("nan") for row in rows]
        lo = [row["spearman_ci"][0] if row.get("spearman_ci") else float("nan") for row in rows]
        hi = [row["spearman_ci"][1] if row.get("spearman_ci") else float("nan") for row in rows]
        line, = ax.plot(xs, ys, marker="o", label=f"seed {seed}")
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(STABLE_SPEARMAN, color="grey", ls=":", lw=1)
    ax.set_xlabel("% of the schedule at which trials are ranked")
    ax.set_ylabel("Spearman with the final ranking")
    ax.set_ylim(-1, 1)
    ax.set_title("when does the ranking settle? (95% bootstrap bands)", fontsize=9)
    ax.legend(fontsize=8)
    name = f"{stem}-agreement.png"
    with atomic_path(OUT_DIR / name) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return [name, *names]


# ----------------------------------------------------------------------------- main


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ParameterError("shard", repr(text), "expected I/N, e.g. 0/2") from None
    if n < 1 or not 0 <= i < n:
        raise ParameterError("shard", repr(text), "expected 0 <= I < N")
    return i, n


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runner", choices=("synthetic", "finetune"), default="synthetic")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--task", default="attributes")
    ap.add_argument("--objective", choices=("metric", "valid_loss"), default="metric")
    ap.add_argument("--train-size", type=int, default=48)
    ap.add_argument("--eval-limit", type=int, default=16, help="validation and test products per evaluation")
    ap.add_argument("--valid-size", type=int, default=16, help="validation examples for the trainer's loss")
    ap.add_argument("--cutoff-len", type=int, default=0, help="token cut-off for real runs (0: FinetuneConfig default)")
    ap.add_argument("--bf16", action="store_true", help="real runs: bf16 autocast in training on CPU too")
    ap.add_argument("--noise", type=float, default=0.01, help="synthetic runner: evaluation noise")
    ap.add_argument("--space", type=Path, default=None, help="search-space TOML/YAML override")
    ap.add_argument("--trials", type=int, default=30, help="configurations per pool (besides the default recipe)")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pick-test-limit", type=int, default=0,
                    help="test products for each strategy's pick and the default recipe (0: all 500, the only size "
                         "at which a 2-point F1 difference is detectable; -1: only the trials' own --eval-limit test)")
    ap.add_argument("--live", nargs="*", choices=tuple(LIVE), default=[],
                    help="also run these TPE-driven strategies live (they cannot be replayed over the pool): early_bo "
                         "(early BO as leantune tune runs it) and full_tpe (every trial to the end, early BO's compute "
                         "as budget); cells under WORK/live, a seed's on shard seed %% N")
    ap.add_argument("--reorders", type=int, default=200, help="random reorderings of each pool to replay over")
    ap.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the agreement intervals")
    ap.add_argument("--work", type=Path, default=None, help="cells folder (default: a temporary folder)")
    ap.add_argument("--shard", default="0/1", help="I/N: train only trials with index %% N == I (run N processes)")
    ap.add_argument("--report-only", action="store_true", help="render from the recorded cells; train nothing")
    ap.add_argument("--name", default="", help="result stem under benchmarks/results/tuning-real/ (default: the runner)")
    ap.add_argument("--machine", default="Machine: 2 shared CPU cores, one thread per process.",
                    help="the machine and its load, printed beside the wall times")
    args = ap.parse_args(argv)
    shard = parse_shard(args.shard)
    if args.trials < args.top_k:
        raise ParameterError("trials", args.trials, f"must be at least --top-k ({args.top_k})")
    quiet_optuna()
    command = " ".join(["python3 benchmarks/bench_tuning_real.py", *(argv if argv is not None else sys.argv[1:])])
    runner, space = bench_tuning.make_runner(args), load_space(args.space)
    if hasattr(runner, "preflight") and not args.report_only:
        runner.preflight()  # a cut-off that drops the answers is refused before any training
    root = (args.work or Path(tempfile.mkdtemp(prefix="bench-tuning-real-"))).resolve()
    settings_file = root / "settings.json"
    if settings_file.is_file():
        refuse_other_settings(read_json(settings_file), settings_of(args), "benchmark cells", root, "use another --work folder")
    else:
        write_json(settings_file, settings_of(args))
    pools, missing = {}, {}
    try:
        for seed in args.seeds:
            pool = fill_pool(runner, space, args, seed, root, shard)
            if all(r is not None for r in pool):
                pools[str(seed)] = pool
            else:
                missing[str(seed)] = sum(r is not None for r in pool)
        per_seed = {s: analyse_seed(pool, args, int(s), runner.metric) for s, pool in pools.items()}
        test_picks(runner, per_seed, args, root, shard)
        add_live(per_seed, run_live(runner, space, args, root, shard))
        add_at_live_budget(per_seed, pools, args)
        test_picks(runner, per_seed, args, root, shard)  # the picks of those replays not tested yet
        summary = summarise(per_seed, root, runner.metric, args.runner, args.objective) if per_seed else {}
    finally:
        if args.work is None:  # the per-unit rows are read by now
            shutil.rmtree(root, ignore_errors=True)
    stem = args.name or args.runner
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    plots = plot_all(pools, per_seed, args, runner.metric, stem) if per_seed else []
    md = render(per_seed, summary, args, command, missing, plots)
    write_json(OUT_DIR / f"{stem}.json", {"command": command, "settings": settings_of(args), "summary": summary,
                                          "per_seed": per_seed, "missing": missing})
    with atomic_path(OUT_DIR / f"{stem}.md") as tmp:
        tmp.write_text(md)
    print(md)
    print(f"reproduce: {command}")
    return {"per_seed": per_seed, "summary": summary, "missing": missing}


if __name__ == "__main__":
    try:
        main()
    except LeantuneError as exc:  # bad settings or a --work folder made otherwise: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
