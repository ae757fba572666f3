"""The real-training HPO study (benchmarks/bench_tuning_real.py): recorded curves, resumable cells,
rank agreement by fraction, and replays that reproduce what a live run would have done."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_tuning_real as real  # noqa: E402
from leantune.tuning import SyntheticRunner, load_space  # noqa: E402


def _pool(runner, tmp_path, n=12, seed=0):
    pool = real.draw_pool(load_space(None), n, seed)
    return pool, [real.record_trial(runner, p, tmp_path / f"t{i:03d}", tmp_path, baseline=i == 0) for i, p in enumerate(pool)]


def test_pool_starts_with_the_default_recipe_and_is_seeded():
    space = load_space(None)
    a, b, c = real.draw_pool(space, 6, 0), real.draw_pool(space, 6, 0), real.draw_pool(space, 6, 1)
    assert a == b and a != c and len(a) == 7
    assert all(a[0][k] == v for k, v in space.baseline_params().items())


def test_a_trial_records_every_fraction_and_resumes_where_it_stopped(tmp_path, monkeypatch):
    runner = SyntheticRunner(train_size=64)
    params = real.draw_pool(load_space(None), 3, 0)[2]
    whole = real.record_trial(runner, params, tmp_path / "whole", tmp_path, baseline=False)
    assert [p["fraction"] for p in whole["points"]] == list(real.FRACTIONS)
    steps = [p["steps"] for p in whole["points"]]
    assert steps == sorted(steps) and steps[-1] == whole["points"][-1]["total_steps"]
    assert whole["test_score"] is not None or whole["points"][-1]["reason"]

    calls = []
    original = real.safe_run

    def crash_after_two(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(a[3])
        return original(*a, **k)

    monkeypatch.setattr(real, "safe_run", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        real.record_trial(runner, params, tmp_path / "cut", tmp_path, baseline=False)
    monkeypatch.setattr(real, "safe_run", original)
    resumed = real.record_trial(runner, params, tmp_path / "cut", tmp_path, baseline=False)
    assert [p["score"] for p in resumed["points"]] == [p["score"] for p in whole["points"]]
    assert [p["steps"] for p in resumed["points"]] == steps  # no step trained twice

    with pytest.raises(Exception, match="other hyperparameters"):
        real.record_trial(runner, {**params, "lr": 0.5}, tmp_path / "cut", tmp_path, baseline=False)


def test_agreement_by_fraction_and_where_the_ranking_holds():
    def rec(scores, fail=False):
        return {"points": [{"fraction": f, "score": s, "steps": 1, "reason": "diverged" if fail and f == 1.0 else None}
                           for f, s in zip(real.FRACTIONS, scores)]}

    # Ranks scrambled at 10%, right from 20% on; one failed trial is left out of the usable ones.
    pool = [rec([(7 * i) % 10 / 10, i / 10, i / 10, i / 10, i / 10]) for i in range(10)] + [rec([1, 1, 1, 1, 0], fail=True)]
    rows = real.agreement_by_fraction(pool, k=5, n_boot=200)
    assert [r["n"] for r in rows] == [10] * 4
    assert rows[1]["spearman"] == pytest.approx(1.0) and rows[0]["spearman"] < 0.8
    assert real.stable_from(rows, k=5) == {"spearman": 0.2, "topk": 0.2}
    low, high = rows[0]["spearman_ci"]
    assert low <= rows[0]["spearman"] <= high


def test_replays_match_live_runs_on_the_same_pool(tmp_path):
    """Each replay over the recorded curves picks what a live run with the same trial order picks,
    and counts the same compute: it only ever reads a score the live run would have seen."""
    import optuna

    runner = SyntheticRunner(train_size=64, noise=0.02)
    params, pool = _pool(runner, tmp_path / "rec", n=14)
    order = list(range(len(pool)))
    early = real.replay_early(pool, order, top_k=3)
    budget = early["compute"]
    for name in ("sha", "hyperband", "median"):
        replay = real.replay_pruner(pool, order, name, budget)
        # Live: the same pruner, the runner trained rung by rung in fresh folders.
        study = optuna.create_study(study_name=name, direction="maximize", pruner=real._pruner(name))
        state = {"compute": 0, "finished": []}

        def objective(trial):
            i = trial.number
            out = tmp_path / f"live-{name}" / str(i)
            for f in real.RUNGS:
                res = runner.run(params[i], out, f)
                if real.failure_reason(res, final=False) is not None or res.status != "paused":
                    break
                trial.report(res.score, step=int(round(100 * f)))
                if trial.should_prune():
                    state["compute"] += res.steps
                    raise optuna.TrialPruned()
            res = runner.run(params[i], out, None)
            state["compute"] += res.steps
            state["finished"].append(i)
            return 0.0 if real.failure_reason(res) else res.score

        study.optimize(objective, n_trials=len(order), callbacks=[lambda s, _t: s.stop() if state["compute"] >= budget else None])
        assert replay["compute"] == state["compute"], name
        assert replay["pick"] == real._pick(pool, state["finished"]), name
        assert replay["trials"] == len(study.trials)

    # Random search stops once the budget is spent; with no budget it trains everything ("all").
    rnd = real.replay_random(pool, order, budget)
    assert rnd["compute"] >= budget and rnd["compute"] - real.steps_at(pool[rnd["trials"] - 1], 1.0) < budget
    every = real.replay_random(pool, order, None)
    assert every["trials"] == len(pool) and every["compute"] == sum(real.steps_at(r, 1.0) for r in pool)
    assert every["pick"] == real._pick(pool, order)
    # Early selection: every trial to 20%, then the top-k and the default recipe to the end.
    cont = sum(real.steps_at(r, 1.0) - real.steps_at(r, real.EARLY) for r in pool)
    assert early["compute"] < sum(real.steps_at(r, real.EARLY) for r in pool) + cont
    assert early["continued"] >= 3


def test_end_to_end_with_shards_report_only_and_a_refused_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(real, "OUT_DIR", tmp_path / "results")
    common = ["--runner", "synthetic", "--train-size", "64", "--trials", "8", "--top-k", "3", "--seeds", "0", "1",
              "--reorders", "5", "--n-boot", "50", "--work", str(tmp_path / "work"), "--name", "t"]
    first = real.main([*common, "--shard", "0/2"])
    assert set(first["missing"]) == {"0", "1"} and first["per_seed"] == {}  # half of each pool recorded
    assert (tmp_path / "work" / "s0" / "t000" / "record.json").is_file()
    assert not (tmp_path / "work" / "s0" / "t001").exists()
    second = real.main([*common, "--shard", "1/2"])
    assert second["missing"] == {} and set(second["per_seed"]) == {"0", "1"}
    again = real.main([*common, "--report-only"])
    assert again["summary"] == second["summary"]
    md = (tmp_path / "results" / "t.md").read_text()
    assert "Do early ranks predict final ones" in md and "| sha |" in md and "t-agreement.png" in md
    assert (tmp_path / "results" / "t-s1-lr_vs_alpha.png").is_file()
    s = second["summary"]["strategies"]
    assert s["all"]["share"][0] == pytest.approx(1.0) and s["early"]["share"][0] < 1
    assert not any(str(tmp_path) in line for line in md.splitlines() if not line.startswith("Command:"))
    with pytest.raises(Exception, match="train_size"):
        real.main([*common[:3], "128", *common[4:]])
    with pytest.raises(Exception, match="shard"):
        real.main([*common, "--shard", "2/2"])


def test_cells_never_hold_nan(tmp_path):
    """A diverged synthetic trial keeps its non-finite loss as a string: the record stays valid JSON."""
    import json

    runner = SyntheticRunner(train_size=64)
    rec = real.record_trial(runner, {"lr": 0.01, "alpha": 128, "r": 8, "dropout": 0.0, "epochs": 2, "batch_size": 8,
                                     "warmup_ratio": 0.0}, tmp_path / "d", tmp_path, baseline=False)
    assert real.failed(rec)
    text = (tmp_path / "d" / "record.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the record"))
    assert not any(isinstance(p["score"], float) and math.isnan(p["score"]) for p in rec["points"])


class _WithLargerTest(SyntheticRunner):
    """The synthetic runner plus a fake larger test set: per-unit rows whose accuracy is the trial's
    synthetic test score, so the picks' comparison with the default recipe can run."""

    def evaluate_test(self, out_dir, limit, folder):
        from leantune.evaluation.units import attribute_unit_rows, write_per_unit
        from leantune.io import read_json, write_json

        state = read_json(Path(out_dir) / "synthetic_state.json")
        score = self.run(state["params"], Path(out_dir), None, test=True).test_score
        right = round(score * limit)
        rows = attribute_unit_rows([{"product_id": f"p{i}", "attribute": "a", "outcome": "VC" if i < right else "VW",
                                     "correct": i < right, "gold": "x"} for i in range(limit)])
        write_per_unit(folder, rows)
        write_json(Path(folder) / "metrics.json", {"accuracy": right / limit})
        self.calls.append(Path(out_dir).parent.name)
        return right / limit


def test_the_picks_are_scored_on_a_larger_test_set_by_their_shards(tmp_path):
    import argparse

    runner = _WithLargerTest(train_size=64, metric="accuracy")
    runner.calls = []
    args = argparse.Namespace(top_k=3, reorders=3, n_boot=50, pick_test_limit=40, objective="metric", report_only=False)
    per_seed = {}
    for seed in (0, 1):
        pool = [real.record_trial(runner, p, tmp_path / f"s{seed}" / f"t{i:03d}", tmp_path, baseline=i == 0)
                for i, p in enumerate(real.draw_pool(load_space(None), 8, seed))]
        per_seed[str(seed)] = real.analyse_seed(pool, args, seed)
    real.test_picks(runner, per_seed, args, tmp_path, (1, 2))
    assert runner.calls and all(int(name[1:]) % 2 == 1 for name in runner.calls)  # only this shard's trials
    real.test_picks(runner, per_seed, args, tmp_path, (0, 2))
    wanted = {(s, i) for s, r in per_seed.items() for i in {0, *(x["pick"] for x in r["strategies"].values())}}
    assert len(runner.calls) == len(wanted)  # each pick and default once, none twice
    for r in per_seed.values():
        assert r["baseline"]["big"] and all(s["pick_big"] for s in r["strategies"].values())
    out = real.summarise(per_seed, tmp_path, "accuracy", "finetune", "metric")
    assert out["units_on"] == "larger" and set(out["vs_default_units"]) == set(real.STRATEGIES)
    early = out["strategies"]["early"]
    assert early["big_vs_default"]["mean"] == pytest.approx(out["vs_default_units"]["early"]["diff"], abs=1e-9)
    # Against "all" on the same units: a strategy with "all"'s pick in every seed is listed, not tested.
    assert "all" not in out["vs_all_units"] and set(out["vs_all_units"]) | set(out["same_as_all"]) == set(real.STRATEGIES) - {"all"}
    for name in out["same_as_all"]:
        assert all(r["strategies"][name]["pick"] == r["strategies"]["all"]["pick"] for r in per_seed.values())
    for name, u in out["vs_all_units"].items():
        gaps = [r["strategies"][name]["pick_big"]["score"] - r["strategies"]["all"]["pick_big"]["score"] for r in per_seed.values()]
        assert u["diff"] == pytest.approx(sum(gaps) / len(gaps), abs=1e-9)
        # The seeds are blocks: the units + seeds interval pairs the two picks of each seed.
        assert u["per_seed"] == pytest.approx(dict(zip(per_seed, gaps)), abs=1e-9)
        assert u["pair_low"] <= u["diff"] <= u["pair_high"] and u["pair_mde"] > 0
    # A seed whose picks are still being tested on the larger set is left out of the per-unit tables
    # (named), rather than sending every seed back to the trials' own small test set.
    per_seed["1"]["strategies"]["sha"]["pick_big"] = None
    part = real.summarise(per_seed, tmp_path, "accuracy", "finetune", "metric")
    assert part["units_on"] == "larger" and part["units_seeds"] == ["0"] and part["units_left_out"] == ["1"]
    assert all(u["n_seeds"] == 1 and u["pair_low"] is None for u in part["vs_default_units"].values())  # one seed: no spread
    early0 = per_seed["0"]["strategies"]["early"]["pick_big"]["score"] - per_seed["0"]["baseline"]["big"]["score"]
    assert part["vs_default_units"]["early"]["diff"] == pytest.approx(early0, abs=1e-9)


def test_a_pick_without_its_run_folder_is_trained_again_and_checked_against_its_record(tmp_path):
    """Only records travel between machines: a pick whose run folder is gone is trained again before
    its larger test, and a retrained model that does not reproduce the recorded score is flagged."""
    import argparse
    import shutil

    from leantune.io import read_json, write_json

    runner = _WithLargerTest(train_size=64, metric="accuracy")
    runner.calls = []
    args = argparse.Namespace(top_k=3, reorders=3, n_boot=50, pick_test_limit=40, objective="metric", report_only=False,
                              name="t", runner="synthetic", trials=6, eval_limit=16, machine="m",
                              train_size=64, noise=0.01)
    pool = [real.record_trial(runner, p, tmp_path / "s0" / f"t{i:03d}", tmp_path, baseline=i == 0)
            for i, p in enumerate(real.draw_pool(load_space(None), 6, 0))]
    per_seed = {"0": real.analyse_seed(pool, args, 0)}
    picks = sorted({0, *(s["pick"] for s in per_seed["0"]["strategies"].values())})
    for i in picks:
        shutil.rmtree(tmp_path / "s0" / f"t{i:03d}" / "run")
    # the default recipe's record is altered, so its retrained model cannot match it
    rec = read_json(tmp_path / "s0" / "t000" / "record.json")
    rec["points"][-1]["score"] += 0.25
    write_json(tmp_path / "s0" / "t000" / "record.json", rec)

    real.test_picks(runner, per_seed, args, tmp_path, (0, 1))
    again = {i: read_json(tmp_path / "s0" / f"t{i:03d}" / "retrained.json") for i in picks}
    assert all(again[i]["same"] for i in picks if i != 0) and not again[0]["same"]
    assert per_seed["0"]["baseline"]["big"]["retrained"]["same"] is False
    summary = real.summarise(per_seed, tmp_path, "accuracy", "finetune", "metric")
    text = real.render(per_seed, summary, args, "cmd", {}, [])
    assert "Trained again" in text and "t000" in text and "not the recorded model" in text
    calls = len(runner.calls)
    real.test_picks(runner, per_seed, args, tmp_path, (0, 1))  # all scored: nothing trained or evaluated again
    assert len(runner.calls) == calls


def test_a_failed_default_recipe_is_compared_at_its_measured_test_score():
    """0 at the end is a failure for the search, but the default recipe's test score was measured:
    pick - default uses it (None only when no test score exists, as after a crash)."""
    rec = {"test_score": None, "points": [{"fraction": 1.0, "score": 0.0, "metrics": {"f1": 0.0, "test_f1": 0.02}}]}
    assert real.measured_test(rec, "f1") == 0.02
    assert real.measured_test(rec, None) is None and real.measured_test(rec, "accuracy") is None
    assert real.measured_test({**rec, "test_score": 0.5}, "f1") == 0.5


def test_live_tpe_rows_run_beside_the_pool_by_shard_and_join_the_report(tmp_path, monkeypatch):
    """--live runs early BO and full TPE (TPE proposals, not replayable) as bench_tuning cells under
    WORK/live, a seed's cells on shard seed % N; they join the tables once the seed's pool is complete."""
    monkeypatch.setattr(real, "OUT_DIR", tmp_path / "results")
    work = tmp_path / "work"
    common = ["--runner", "synthetic", "--train-size", "64", "--trials", "8", "--top-k", "3", "--seeds", "0", "1",
              "--reorders", "5", "--n-boot", "50", "--work", str(work), "--name", "t", "--live", "early_bo", "full_tpe"]
    first = real.main([*common, "--shard", "0/2"])
    assert first["per_seed"] == {}  # no pool is complete yet
    cells = work / "live" / "cells"
    assert (cells / "s0-early_bo.json").is_file() and (cells / "s0-full_tpe.json").is_file()
    assert not (cells / "s1-early_bo.json").exists()  # seed 1 is the other shard's
    second = real.main([*common, "--shard", "1/2"])
    live = {s: {n: r for n, r in by["strategies"].items() if r.get("live")} for s, by in second["per_seed"].items()}
    assert all(set(by) == {"early_bo (live)", "full_tpe (live)"} for by in live.values())
    assert all(by["early_bo (live)"]["trials"] == 9 for by in live.values())  # the default recipe + 8, as in the pool
    for by in live.values():  # equal compute: full TPE stops once it has spent early BO's steps
        assert by["full_tpe (live)"]["compute"] >= by["early_bo (live)"]["compute"]
        assert by["early_bo (live)"]["pick_params"] is not None
    s = second["summary"]["strategies"]
    assert s["early_bo (live)"]["seeds"] == ["0", "1"] and s["early_bo (live)"]["vs_all"] is not None
    md = (tmp_path / "results" / "t.md").read_text()
    assert "| early_bo (live) |" in md and "| full_tpe (live) |" in md and "ran live" in md
    assert real.main([*common, "--report-only"])["summary"] == second["summary"]
    # The replayed rows are what they were without --live.
    plain = real.main([*common[:-3], "--report-only"])
    assert plain["summary"]["strategies"]["early"] == s["early"] and "early_bo (live)" not in plain["summary"]["strategies"]


def test_live_picks_are_scored_on_the_larger_test_set_and_retrained_when_their_folder_is_gone(tmp_path):
    import argparse
    import shutil

    runner = _WithLargerTest(train_size=64, metric="accuracy")
    runner.calls = []
    args = argparse.Namespace(live=["early_bo", "full_tpe"], seeds=[0], report_only=False, pick_test_limit=40,
                              objective="metric", runner="synthetic", trials=6, top_k=3, space=None, noise=0.01,
                              train_size=64)
    live = real.run_live(runner, load_space(None), args, tmp_path, (0, 1))
    assert len(runner.calls) == 2
    picks = live["0"]
    assert all(r["pick_big"]["rows"].startswith("live/s0/") for r in picks.values())
    # Only the records travel: the early-BO pick's run folder is gone, its larger test not run yet.
    run = tmp_path / picks["early_bo"]["best_dir"]
    shutil.rmtree(run)
    shutil.rmtree(tmp_path / picks["early_bo"]["pick_big"]["rows"])
    again = real.run_live(runner, load_space(None), args, tmp_path, (0, 1))
    assert len(runner.calls) == 3  # only that pick evaluated again, after training it again
    assert again["0"]["early_bo"]["pick_big"]["retrained"]["same"] is True
    assert again["0"]["full_tpe"]["pick_big"] == picks["full_tpe"]["pick_big"]


def test_live_runs_answered_from_the_pool_give_what_training_again_gives(tmp_path):
    """TPE's start-up proposals are the pool's first configurations: the pool-backed runner answers
    them from the records, and the live study ends exactly where one that trains everything ends."""
    import argparse

    from leantune.io import read_json

    import bench_tuning

    runner = SyntheticRunner(train_size=64, noise=0.02)
    space = load_space(None)
    folders = [tmp_path / "s0" / f"t{i:03d}" for i in range(13)]
    pool = [real.record_trial(runner, p, f, tmp_path, baseline=i == 0) for i, (f, p) in enumerate(zip(folders, real.draw_pool(space, 12, 0)))]
    args = real.live_args(argparse.Namespace(trials=12, top_k=3, runner="synthetic", space=None, noise=0.02, train_size=64), tmp_path)
    for strategy in ("early_bo", "full_tpe"):
        pooled = real.PoolRunner(runner, pool, folders)
        a = bench_tuning.run_cell(pooled, space, args, 0, tmp_path / "a", strategy, 150)
        b = bench_tuning.run_cell(runner, space, args, 0, tmp_path / "b", strategy, 150)
        assert pooled.reused >= 10, strategy  # the default recipe and TPE's random start-up
        for key in ("compute", "tokens", "best_valid", "best_test", "best_params", "trials", "best_trial"):
            assert a[key] == b[key], (strategy, key)
    # A failed pool trial is failed again, with its recorded reason.
    bad = next(i for i, r in enumerate(pool) if real.failed(r))
    res = real.PoolRunner(runner, pool, folders).run(pool[bad]["params"], tmp_path / "x", None, test=True)
    assert real.failure_reason(res, final=True) == real.point(pool[bad], 1.0)["reason"]
    assert read_json(folders[bad] / "record.json")["params"] == pool[bad]["params"]
    assert (tmp_path / "x" / "pool_trial.txt").read_text().strip() == f"s0/t{bad:03d}"


def test_early_bo_meets_the_replays_at_its_own_compute_and_each_pick_on_the_same_units(tmp_path):
    """Live early BO spends what its TPE proposals cost, more than early selection over the pool, so
    random search and the pruners are replayed again with that budget; the report then sets early
    BO's pick against every other pick, paired on the larger test set's units."""
    import argparse

    runner = _WithLargerTest(train_size=64, metric="accuracy")
    runner.calls = []
    args = argparse.Namespace(top_k=3, reorders=3, n_boot=50, pick_test_limit=40, objective="metric", report_only=False,
                              live=["early_bo", "full_tpe"], seeds=[0, 1], runner="synthetic", trials=10, space=None,
                              noise=0.01, train_size=64)
    pools, per_seed = {}, {}
    for seed in (0, 1):
        pools[str(seed)] = [real.record_trial(runner, p, tmp_path / f"s{seed}" / f"t{i:03d}", tmp_path, baseline=i == 0)
                            for i, p in enumerate(real.draw_pool(load_space(None), 10, seed))]
        per_seed[str(seed)] = real.analyse_seed(pools[str(seed)], args, seed)
    real.test_picks(runner, per_seed, args, tmp_path, (0, 1))
    real.add_live(per_seed, real.run_live(runner, load_space(None), args, tmp_path, (0, 1)))
    real.add_at_live_budget(per_seed, pools, args)
    real.test_picks(runner, per_seed, args, tmp_path, (0, 1))
    names = real.strategy_names(per_seed)
    at_live = [n + real.AT_LIVE_SUFFIX for n in real.AT_LIVE]
    assert names[-len(at_live):] == at_live
    for seed, r in per_seed.items():
        budget = r["strategies"]["early_bo (live)"]["compute"]
        pool = pools[seed]
        for name in at_live:
            x = r["strategies"][name]
            assert x["budget"] == budget and x["pick_big"] is not None
            # Spent the budget, or used the whole pool first (then marked).
            assert x["compute"] >= budget or (x["exhausted"] and x["trials"] == len(pool))
        # Random search at that budget trains the drawn order until it is spent.
        assert r["strategies"]["random" + real.AT_LIVE_SUFFIX]["pick"] == real.replay_random(pool, list(range(len(pool))), budget)["pick"]
    out = real.summarise(per_seed, tmp_path, "accuracy", "finetune", "metric")
    others = set(names) - {"early_bo (live)"}
    assert out["bo_vs_units"] and out["bo_same_as"]  # here some picks differ from early BO's, some are the same
    assert set(out["bo_same_as"]) | {k.split(" − ", 1)[1] for k in out["bo_vs_units"]} == others
    bo = {s: r["strategies"]["early_bo (live)"]["pick_big"] for s, r in per_seed.items()}
    for key, u in out["bo_vs_units"].items():
        other = key.split(" − ", 1)[1]
        gaps = [bo[s]["score"] - r["strategies"][other]["pick_big"]["score"] for s, r in per_seed.items()]
        assert u["diff"] == pytest.approx(sum(gaps) / len(gaps), abs=1e-9)  # positive: early BO's pick is better
    for other in out["bo_same_as"]:
        assert all(bo[s]["rows"] == r["strategies"][other]["pick_big"]["rows"] for s, r in per_seed.items())
    md = real.render(per_seed, out, argparse.Namespace(**vars(args), name="t", eval_limit=16, machine="m"), "cmd", {}, [])
    assert "Early BO (live) against each other strategy" in md and "| random @ live BO budget |" in md
    row = next(line for line in md.splitlines() if line.startswith(f"| {next(iter(out['bo_vs_units']))} |"))
    u = next(iter(out["bo_vs_units"].values()))
    assert f"| {100 * u['per_seed']['0']:+.1f} / {100 * u['per_seed']['1']:+.1f} |" in row  # Δ per seed, in seed order
    assert f"[{100 * u['pair_low']:+.2f}, {100 * u['pair_high']:+.2f}] | {100 * u['pair_mde']:.2f} |" in row
    # More seeds, the same spread of Δ_s: the planned MDE falls with the seed count.
    at = list(u["pair_mde_at"].values())
    assert list(u["pair_mde_at"]) == ["5", "10", "20"] and at[0] > at[1] > at[2] and u["pair_mde"] > at[0]
    assert "| MDE, 5 seeds | MDE, 10 seeds | MDE, 20 seeds |" in md
